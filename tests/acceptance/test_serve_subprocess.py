"""Start `dataexport serve` as a subprocess and drive it over HTTP exactly as a client script would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from examples import example_daily, example_once
from processes import cli_json
from support import free_port

pytestmark = pytest.mark.acceptance


def _cli(data_dir: Path, *args: str) -> dict:
    return cli_json({**os.environ, "DATAEXPORT_DATA_DIR": str(data_dir)}, *args)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(params=[1, 2], ids=["1-process", "2-processes"])
def served(tmp_path, request):
    project = _cli(tmp_path, "projects", "create", "--name", "Acme", "--timezone", "Europe/Paris")
    client = _cli(tmp_path, "clients", "create", "--project", str(project["project_id"]))
    port = free_port()
    env = {**os.environ, "DATAEXPORT_DATA_DIR": str(tmp_path), "DATAEXPORT_LOG_JSON": "true"}
    log_path = tmp_path / "serve.log"
    log_file = log_path.open("wb")  # a file, not a pipe nobody reads: a chatty server must never block
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dataexport.cli",
            "serve",
            "--port",
            str(port),
            "--no-scheduler",
            "--no-worker",
            "--processes",
            str(request.param),
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start: " + log_path.read_text(errors="replace")[-2000:])
        time.sleep(0.2)
    family = [proc.pid, *_children(proc.pid)]
    if request.param > 1:  # uvicorn's supervisor, its API processes (and multiprocessing's resource tracker)
        assert len(family) >= 1 + request.param
    yield base, project, client, proc
    proc.terminate()
    proc.wait(timeout=30)
    log_file.close()
    # A stopped server leaves no process behind.
    wait_until = time.monotonic() + 10
    while any(_alive(p) for p in family) and time.monotonic() < wait_until:
        time.sleep(0.1)
    assert not [p for p in family if _alive(p)]


def test_a_client_script_flow(served):
    base, project, client, _ = served
    token = httpx.post(
        f"{base}/v1/oauth/token",
        data={
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "grant_type": "client_credentials",
            "scope": "data-export",
        },
    ).json()
    # Clients build every later URL from `endpoint`.
    endpoint = token["endpoint"]
    assert endpoint == base and token["project_id"] == project["project_id"]
    headers = {"Authorization": f"Bearer {token['access_token']}", "Content-Type": "application/json"}

    created = []
    for body in (example_daily(), example_once()):
        answer = httpx.post(f"{endpoint}/v1/exports", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        created.append(answer.json()["payload"]["jobId"])

    listed = httpx.request("GET", f"{endpoint}/v1/exports", headers=headers, content=b"{}").json()
    assert listed["success"] is True and [j["jobId"] for j in listed["payload"]] == sorted(created, reverse=True)
    daily = httpx.get(f"{endpoint}/v1/exports/{created[0]}", headers=headers).json()["payload"]
    # Europe/Paris days: the window starts at 23:00 or 22:00 UTC.
    assert daily["nextFrom"].endswith(("T23:00:00.000Z", "T22:00:00.000Z"))
    runs = httpx.get(f"{endpoint}/v1/exports/{created[1]}/runs?limit=1&order=DESC", headers=headers).json()
    assert runs["payload"][0]["state"] in {"RUNNABLE", "RUNNING", "SUCCESS"}
    fields = httpx.get(f"{endpoint}/v1/exportable-fields?scope=views", headers=headers).json()["payload"]
    assert any(f["name"] == "view_number" for f in fields)
    spec = httpx.get(f"{endpoint}/openapi.json").json()
    assert {"/v1/oauth/token", "/v1/exports", "/v1/exports/{jobId}/runs/{runId}"} <= set(spec["paths"])
    assert httpx.get(f"{endpoint}/docs").status_code == 200


def _api_processes(supervisor: int) -> list[int]:
    """The API processes of `serve --processes N` (spawned children; not multiprocessing's resource tracker)."""
    return [p for p in _children(supervisor) if _alive(p) and b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


@pytest.mark.parametrize("served", [2], ids=["2-processes"], indirect=True)  # one process has no supervisor
def test_a_killed_api_process_is_replaced_and_the_others_keep_answering(served):
    base, _, _, proc = served
    api = _api_processes(proc.pid)
    assert len(api) == 2
    os.kill(api[0], 9)
    deadline = time.monotonic() + 60
    while len(set(_api_processes(proc.pid)) - {api[0]}) < 2:
        assert time.monotonic() < deadline, "the killed API process was not replaced"
        time.sleep(0.2)
    # Connections that reached the killed process's socket as it died are refused; after that, every one works.
    time.sleep(1)
    assert all(httpx.get(f"{base}/readyz", timeout=10).status_code == 200 for _ in range(30))
    assert proc.poll() is None  # the supervisor itself carries on
