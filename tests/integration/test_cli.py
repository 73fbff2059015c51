"""The operator CLI, in-process with Typer's runner, against a real SQLite data dir."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dataexport.cli import app

runner = CliRunner()


def call(tmp_path, *args):
    result = runner.invoke(app, [*args, "--data-dir", str(tmp_path)])
    return result.exit_code, result.output


def test_projects_clients_segments_and_load(tmp_path):
    code, out = call(tmp_path, "projects", "create", "--name", "Shop", "--timezone", "Europe/Paris", "--json")
    assert code == 0, out
    project = json.loads(out)
    assert project["timezone"] == "Europe/Paris" and project["ingest_key"].startswith("ik_")

    code, out = call(tmp_path, "clients", "create", "--project", str(project["project_id"]), "--json")
    client = json.loads(out)
    assert code == 0 and len(client["client_secret"]) >= 32 and client["project_id"] == project["project_id"]
    code, out = call(tmp_path, "clients", "create", "--account", str(project["account_id"]), "--json")
    assert code == 0 and json.loads(out)["project_id"] is None

    code, out = call(
        tmp_path,
        "segments",
        "create",
        "--project",
        str(project["project_id"]),
        "--name",
        "FR",
        "--filter",
        '{"field": "country_code", "op": "eq", "value": "FR"}',
        "--json",
    )
    assert code == 0 and json.loads(out)["segment_id"] == 1
    code, out = call(
        tmp_path,
        "segments",
        "create",
        "--project",
        str(project["project_id"]),
        "--name",
        "bad",
        "--filter",
        '{"field": "shoe_size", "op": "eq", "value": 42}',
    )
    assert code == 2 and "filter" in out and "Traceback" not in out

    hits = tmp_path / "hits.jsonl"
    good = {
        "user_id_unhashed": "u1",
        "session_number": 1,
        "view_number": 1,
        "session_time": "2026-11-27T10:00:00Z",
        "view_time": "2026-11-27T10:00:01Z",
        "device_id": 1,
        "url": "https://a.example/",
    }
    hits.write_text(json.dumps(good) + "\n" + json.dumps({**good, "view_number": 0}) + "\n")
    code, out = call(tmp_path, "load", "--project", str(project["project_id"]), str(hits), "--json")
    summary = json.loads(out)
    assert code == 0 and summary["rows_stored"] == 1 and summary["rows_rejected"] == 1
    assert summary["reasons"][0]["field"] == "view_number"


def test_bad_input_is_one_clear_line(tmp_path):
    code, out = call(tmp_path, "projects", "create", "--name", "X", "--timezone", "Mars/Olympus")
    assert code == 2 and "timezone" in out and "Traceback" not in out
    code, out = call(tmp_path, "clients", "create", "--project", "42")
    assert code == 2 and "not found" in out


def test_projects_show_their_tag_and_manage_origins_and_tag_ids(tmp_path):
    code, out = call(tmp_path, "projects", "create", "--name", "Shop", "--json")
    project = json.loads(out)
    tag_id = project["tag_id"]
    assert code == 0 and len(tag_id) == 16
    assert f"http://127.0.0.1:8000/tag/{tag_id}.js" in project["tag_snippet"]
    assert "window._uxa = window._uxa || [];" in project["tag_snippet"]
    pid = str(project["project_id"])

    code, out = call(tmp_path, "projects", "allow-origin", "--project", pid, "--origin", "Shop.Example.com/", "--json")
    assert code == 0 and json.loads(out)["allowed_origins"] == ["https://shop.example.com"]
    code, out = call(tmp_path, "projects", "allow-origin", "--project", pid, "--origin", "ftp://x")
    assert code == 2 and "origin" in out and "Traceback" not in out
    code, out = call(tmp_path, "projects", "list")
    assert code == 0 and tag_id in out and "https://shop.example.com" in out and f"/tag/{tag_id}.js" in out

    code, out = call(tmp_path, "projects", "rotate-tag-id", "--project", pid, "--json")
    rotated = json.loads(out)
    assert code == 0 and rotated["tag_id"] != tag_id and rotated["tag_id"] in rotated["tag_snippet"]
    code, out = call(tmp_path, "projects", "disallow-origin", "--project", pid, "--origin", "https://shop.example.com")
    assert code == 0 and "none" in out
    code, out = call(tmp_path, "projects", "list", "--json")
    (listed,) = json.loads(out)["projects"]
    assert listed["tag_id"] == rotated["tag_id"] and listed["allowed_origins"] == []
    code, out = call(tmp_path, "projects", "rotate-tag-id", "--project", "99")
    assert code == 2 and "not found" in out
