"""`dataexport demo`: a demo project with realistic traffic, credentials, segments and a curl walkthrough."""

from __future__ import annotations

import os
import secrets
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time

from rich.console import Console

from dataexport import admin
from dataexport.config import Settings
from dataexport.console import accounts
from dataexport.demo.generate import generate
from dataexport.domain.jobspec import parse_job_spec
from dataexport.engine import lifecycle
from dataexport.metadata.db import make_engine, make_sessionmaker, migrate, transaction
from dataexport.warehouse.backend import open_warehouse

# The demo's daily job, made as if on the first day of traffic: the scheduler catches up with one run per closed
# day, so `dataexport pull` has runs to deliver as soon as the server has run them.
DEMO_DAILY_JOB = {
    "name": "Daily sessions",
    "format": "CSV",
    "scope": "sessions",
    "deviceLabel": "all",
    "frequency": {"value": "daily"},
    "fields": [
        {"fieldName": "session_id"},
        {"fieldName": "user_id"},
        {"fieldName": "session_date"},
        {"fieldName": "session_time"},
        {"fieldName": "device_id"},
        {"fieldName": "country_code"},
        {"fieldName": "city"},
        {"fieldName": "session_number_of_views"},
        {"fieldName": "session_duration_msec"},
        {"fieldName": "session_number_of_transactions"},
        {"fieldName": "custom_var", "customVarPosition": 2},
    ],
}

# The console's demo sign-in: an admin of the demo project, with a password drawn anew for each demo.
DEMO_OPERATOR = "demo@example.com"

DEMO_SEGMENTS = {
    "France": {"field": "country_code", "op": "eq", "value": "FR"},
    "Engaged mobile visitors": {
        "all": [
            {"field": "device_id", "op": "in", "value": [2, 4]},
            {"field": "session_number_of_views", "op": "gte", "value": 3},
        ]
    },
    "Buyers": {"field": "session_number_of_transactions", "op": "gte", "value": 1},
}


def seed_demo(
    settings: Settings, *, days: int, sessions_per_day: int, seed: int, console: Console, shop_url: str | None = None
) -> dict:
    """Create the demo project (its tag collecting from `shop_url`, the demo shop's origin), seed its traffic, and
    print the walkthrough."""
    now = datetime.now(UTC)
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    with transaction(make_sessionmaker(engine)) as session:
        project = admin.create_project(session, name="Demo shop", now=now)
        client = admin.create_client(session, now=now, project_id=project.project.id, name="demo")
        segments = {
            name: admin.create_segment(session, project_id=project.project.id, name=name, filter=f, now=now).id
            for name, f in DEMO_SEGMENTS.items()
        }
        if shop_url:
            admin.allow_origin(session, project.project.id, shop_url)
        # The first day of the generated traffic (the project's time zone is UTC), so every run finds data.
        began = datetime.combine(now.date() - timedelta(days=days - 1), dt_time.min, tzinfo=UTC)
        daily = lifecycle.create_job(
            session,
            project=project.project,
            actor_id=client.client.id,
            spec=parse_job_spec(DEMO_DAILY_JOB, now=began, retention_days=project.project.retention_days),
            settings=settings,
            now=began,
        )
        password = secrets.token_urlsafe(12)
        accounts.create_operator(
            session, email=DEMO_OPERATOR, password=password, role="admin", project_ids=[project.project.id], now=now
        )
        out = {
            "console_email": DEMO_OPERATOR,
            "console_password": password,
            "tag_id": project.project.tag_id,
            "shop_url": shop_url,
            "session_timeout_minutes": settings.session_timeout_minutes,
            "project_id": project.project.id,
            "ingest_key": project.ingest_key,
            "client_id": client.client.client_id,
            "client_secret": client.secret,
            "segments": segments,
            "daily_job_id": daily.id,
        }
    engine.dispose()

    started = time.perf_counter()
    with (
        console.status(f"Generating {days} days of demo traffic ({sessions_per_day} sessions a day)..."),
        closing(open_warehouse(settings)) as warehouse,
    ):
        summary = generate(
            warehouse,
            out["project_id"],
            days=days,
            sessions_per_day=sessions_per_day,
            seed=seed,
            now=now,
            workers=os.cpu_count() or 1,
        )
    elapsed = time.perf_counter() - started
    base = settings.served_url
    _print_walkthrough(console, base, out, summary, elapsed, now)
    return out


def _print_walkthrough(console: Console, base: str, out: dict, summary, elapsed: float, now: datetime) -> None:
    start = (now - timedelta(days=2)).strftime("%Y-%m-%dT00:00:00.000Z")
    end = (now - timedelta(days=1)).strftime("%Y-%m-%dT23:59:59.999Z")
    console.print(
        f"[bold green]Demo ready[/]: {summary.pageviews:,} pageviews in {summary.sessions:,} sessions of "
        f"{summary.users:,} users ({summary.first_day} .. {summary.last_day}), generated in {elapsed:.1f} s",
        highlight=False,
    )
    console.print(
        f"base URL       {base}\nproject_id     {out['project_id']}\nclient_id      {out['client_id']}\n"
        f"client_secret  {out['client_secret']}\ningest key     {out['ingest_key']}\n"
        f"segments       {out['segments']}",
        highlight=False,
    )
    console.print(
        f"\n[bold]Console[/]: {base}/console  sign in as {out['console_email']} / {out['console_password']}",
        highlight=False,
        soft_wrap=True,  # one line, so the password is copied whole
    )
    body = (
        '{"name":"Two days of views","format":"CSV","scope":"views","deviceLabel":"all",'
        f'"frequency":{{"value":"once","dateRange":{{"from":"{start}","to":"{end}"}}}},'
        '"fields":[{"fieldName":"session_id"},{"fieldName":"view_number"},{"fieldName":"url"},'
        '{"fieldName":"custom_var","customVarPosition":2},{"fieldName":"dynamic_var","dynamicVarKey":"AB Test"}]}'
    )
    console.print("\n[bold]Try it[/] (in another terminal, once the server below is up):", highlight=False)
    console.print(
        f"TOKEN=$(curl -s {base}/v1/oauth/token -H 'Content-Type: application/json' -d "
        f'\'{{"client_id":"{out["client_id"]}","client_secret":"{out["client_secret"]}",'
        f'"grant_type":"client_credentials","scope":"data-export"}}\' | python3 -c '
        "'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n"
        f"JOB=$(curl -s {base}/v1/exports -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
        f"-d '{body}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"payload\"][\"jobId\"])')\n"
        f'curl -s "{base}/v1/exports/$JOB/runs?limit=1&order=DESC" -H "Authorization: Bearer $TOKEN"\n'
        f'curl -s {base}/v1/exports/$JOB/runs/RUN_ID -H "Authorization: Bearer $TOKEN"   # RUN_ID: the jobRunId above; '
        "files[].url: download, gunzip\n"
        f"curl -s '{base}/v1/exportable-fields?scope=views' -H \"Authorization: Bearer $TOKEN\"\n"
        f"open {base}/docs for the OpenAPI page",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"\n[bold]Pull[/] the demo's daily job (one run per day of traffic, run by the server below) into DuckDB:\n"
        f"DATAEXPORT_CLIENT_ID={out['client_id']} DATAEXPORT_CLIENT_SECRET={out['client_secret']} "
        f".venv/bin/dataexport pull --server {base} --job {out['daily_job_id']} --to demo.duckdb",
        highlight=False,
        soft_wrap=True,
    )
    if out.get("shop_url"):
        _print_shop_walkthrough(console, base, out, now)


def _print_shop_walkthrough(console: Console, base: str, out: dict, now: datetime) -> None:
    """How to collect a session of one's own with the tag, then export it."""
    day = now.strftime("%Y-%m-%d")
    body = (
        '{"name":"My visit","format":"JSONL","scope":"views","deviceLabel":"all",'
        f'"frequency":{{"value":"once","dateRange":{{"from":"{day}T00:00:00.000Z","to":"\'"$TO"\'"}}}},'
        '"fields":[{"fieldName":"user_id_unhashed"},{"fieldName":"session_number"},{"fieldName":"view_number"},'
        '{"fieldName":"url"},{"fieldName":"scroll_rate"},{"fieldName":"any_js_error_ind"},'
        '{"fieldName":"custom_var","customVarPosition":1},{"fieldName":"dynamic_var","dynamicVarKey":"product_price"}]}'
    )
    console.print(
        f"\n[bold]Collect your own visit[/]: open the demo shop at {out['shop_url']} and click around (add to cart, "
        "check out, the App and Deals pages, the broken page). Its pages load the tag from "
        f"{base}/tag/{out['tag_id']}.js; the footer shows your visit as <user id>.<session number>. "
        "A page's view is sent when you leave it. Then export what arrived until now and look for your user id "
        f"(the demo runs such a job {out['session_timeout_minutes']} minute(s) after its range ends, the time a "
        "session is given to end):",
        highlight=False,
    )
    console.print(
        "TO=$(date -u +%Y-%m-%dT%H:%M:%S.000Z)\n"
        f"JOB=$(curl -s {base}/v1/exports -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
        f"-d '{body}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"payload\"][\"jobId\"])')\n"
        f'curl -s "{base}/v1/exports/$JOB/runs?limit=1&order=DESC" -H "Authorization: Bearer $TOKEN"'
        "   # once SUCCESS: GET .../runs/<jobRunId> lists files[].url",
        highlight=False,
        soft_wrap=True,
    )
