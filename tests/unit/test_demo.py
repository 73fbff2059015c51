"""The demo generator's data, in memory: deterministic, realistic, and valid by the ingest rules."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dataexport.demo.generate import draw_sessions
from dataexport.demo.views import build_views
from dataexport.ingest.bulkload import as_hit
from dataexport.ingest.hits import validate_hits

NOW = datetime(2026, 3, 18, 15, 45, tzinfo=UTC)  # a Wednesday afternoon


def all_views(seed: int, days: int = 7, per_day: int = 1500) -> pa.Table:
    sessions = draw_sessions(np.random.default_rng([seed, 1]), days, per_day, NOW)
    chosen = np.arange(len(sessions.start_ms))
    return build_views(np.random.default_rng([seed, 2]), sessions, chosen, int(NOW.timestamp() * 1000))


@pytest.fixture(scope="module")
def views() -> pa.Table:
    return all_views(seed=5)


@pytest.fixture(scope="module")
def firsts(views) -> list[dict]:
    """One row per session (its first view)."""
    return [
        r
        for r in views.select(
            ["session_id", "view_number", "device_id", "session_number", "session_time", "is_excludable"]
        ).to_pylist()
        if r["view_number"] == 1
    ]


def test_deterministic_for_a_seed():
    a, b, c = all_views(7, days=2, per_day=200), all_views(7, days=2, per_day=200), all_views(8, days=2, per_day=200)
    assert a.equals(b)
    assert not a.equals(c)


def test_device_shares_are_realistic(firsts):
    shares = Counter(r["device_id"] for r in firsts)
    total = len(firsts)
    expected = {1: 0.45, 2: 0.40, 3: 0.06, 4: 0.06, 5: 0.03}
    for device, share in expected.items():
        assert shares[device] / total == pytest.approx(share, abs=0.05), device


def test_returning_users_and_multi_page_sessions(views, firsts):
    returning = sum(r["session_number"] > 1 for r in firsts) / len(firsts)
    assert 0.15 < returning < 0.8
    per_session = views.num_rows / len(firsts)
    assert 2.5 < per_session < 6
    assert max(views.column("view_number").to_pylist()) >= 15


def test_daily_and_weekly_rhythm(firsts):
    hours = Counter(r["session_time"].hour for r in firsts)
    assert sum(hours[h] for h in (18, 19, 20)) > 4 * sum(hours[h] for h in (2, 3, 4))
    days = Counter(r["session_time"].date() for r in firsts)
    weekend = [n for d, n in days.items() if d.weekday() >= 5]
    weekdays = [n for d, n in days.items() if d.weekday() < 5 and d != NOW.date()]
    assert max(weekend) < min(weekdays)


def test_nothing_after_now_and_views_after_their_session_start(views):
    assert pc.max(views.column("view_time")).as_py() <= NOW
    assert pc.all(pc.greater_equal(views.column("view_time"), views.column("session_time"))).as_py()
    assert pc.min(views.column("session_time")).as_py().date() == datetime(2026, 3, 12).date()


def test_content_covers_the_features_exports_need(views):
    rows = (
        views.slice(0, 12000)
        .select(
            [
                "url",
                "custom_vars",
                "dynamic_vars",
                "transactions",
                "transaction_items",
                "add_to_cart_items",
                "errors",
                "rage_click_all_targets_ind",
                "is_excludable",
                "device_id",
                "app_events",
                "browser_name",
            ]
        )
        .to_pylist()
    )
    assert any("utm_source=" in r["url"] and "?" in r["url"] for r in rows)
    assert {c["position"] for r in rows for c in r["custom_vars"]} == {1, 2, 3}
    dyn = [d for r in rows for d in r["dynamic_vars"]]
    assert {d["key"] for d in dyn if d["string_value"] is not None} == {"AB Test", "Traffic Source"}
    assert {d["key"] for d in dyn if d["number_value"] is not None} == {"cart_value"}
    assert sum(bool(r["transactions"]) for r in rows) > 10
    assert all(i["id"] == r["transactions"][0]["id"] for r in rows for i in r["transaction_items"])
    assert any(r["add_to_cart_items"] for r in rows) and any(r["errors"] for r in rows)
    assert any(r["rage_click_all_targets_ind"] for r in rows) and any(r["is_excludable"] for r in rows)
    assert all(r["device_id"] in (4, 5) for r in rows if r["app_events"])
    assert all(r["app_events"] for r in rows if r["device_id"] in (4, 5))
    assert all(r["browser_name"] for r in rows if r["device_id"] in (1, 2, 3))


def test_every_generated_row_passes_the_ingest_rules(views):
    sample = views.slice(0, 3000).to_pylist()
    batch = validate_hits(as_hit({k: v for k, v in r.items() if v is not None}) for r in sample)
    assert batch.errors == []
    for stored, revalidated in zip(sample[:50], batch.rows[:50], strict=True):
        assert revalidated["user_id"] == stored["user_id"]
        assert revalidated["session_id"] == stored["session_id"]
