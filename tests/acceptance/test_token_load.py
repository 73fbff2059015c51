"""Token load check: many short-lived client processes, each asking one token, never meet a 429, even while
someone hammers the same client_id with wrong secrets.

A real `dataexport serve --processes 2` subprocess; each client is its own OS process (a bare `python -I -S -c`
with http.client, so 200 interpreters start fast), as a CLI that takes one token per command is. The attacker
connects from 127.0.0.2, the clients from 127.0.0.1 (Linux routes all of 127.0.0.0/8 to loopback).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from processes import Service, answers, cli_json, service_env, wait_until
from support import free_port

pytestmark = pytest.mark.acceptance

CLIENT_PROCESSES = 200
AT_ONCE = 8
ATTACKER = "127.0.0.2"
ATTACK_CONNECTIONS = 4  # several connections, so the guesses reach both API processes

# One client process: a token (form body, as curl or a CLI sends it), then three calls with it. Prints the
# statuses as JSON.
CLIENT = r"""
import http.client, json, sys, urllib.parse
port, client_id, secret = sys.argv[1:4]
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
def call(method, path, body=None, headers={}):
    conn.request(method, path, body, headers)
    answer = conn.getresponse()
    return answer.status, answer.read()
form = urllib.parse.urlencode({"client_id": client_id, "client_secret": secret,
                               "grant_type": "client_credentials", "scope": "data-export"})
status, body = call("POST", "/v1/oauth/token", form, {"Content-Type": "application/x-www-form-urlencoded"})
statuses = [status]
if status == 200:
    auth = {"Authorization": "Bearer " + json.loads(body)["access_token"]}
    for path in ("/v1/exports", "/v1/exportable-fields?scope=sessions", "/v1/segments"):
        statuses.append(call("GET", path, None, auth)[0])
print(json.dumps(statuses))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("token-load")
    env = service_env({"DATAEXPORT_DATA_DIR": str(data_dir), "DATAEXPORT_LOG_JSON": "true"})
    project = cli_json(env, "projects", "create", "--name", "Load")
    client = cli_json(env, "clients", "create", "--project", str(project["project_id"]))
    port = free_port()
    api = Service(
        "api",
        ("serve", "--port", str(port), "--processes", "2", "--no-worker", "--no-scheduler"),
        env,
        data_dir,
        port=port,
    ).start()
    try:
        wait_until(lambda: answers(api.url), [api], "the API answers")
        yield api, client
    finally:
        api.stop()


def _one_client(port: int, client: dict) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", CLIENT, str(port), client["client_id"], client["client_secret"]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        return [f"exit {out.returncode}: {out.stderr[-500:]}"]
    return json.loads(out.stdout)


def _clients(api: Service, client: dict, count: int) -> tuple[list[list[int]], float]:
    started = time.monotonic()
    with ThreadPoolExecutor(AT_ONCE) as pool:
        results = list(pool.map(lambda _: _one_client(api.port, client), range(count)))
    return results, time.monotonic() - started


def _granted_ms(api: Service, skip: int) -> tuple[int, str]:
    """The server-side durations of the granted token requests logged after the first `skip` events."""
    events = api.events()
    durations = sorted(
        e["duration_ms"]
        for e in events[skip:]
        if e.get("event") == "http.request" and e.get("route") == "/v1/oauth/token" and e.get("status") == 200
    )
    figures = f"median {statistics.median(durations):.1f} ms, max {durations[-1]:.1f} ms" if durations else "none"
    return len(events), figures


def test_two_hundred_client_processes_each_asking_a_token_all_succeed(served):
    api, client = served
    results, seconds = _clients(api, client, CLIENT_PROCESSES)
    failed = [r for r in results if r != [200, 200, 200, 200]]
    assert not failed, (len(failed), failed[:5], api.tail())
    print(
        f"\n{CLIENT_PROCESSES} client processes ({AT_ONCE} at once), token + 3 calls each: {seconds:.1f} s; "
        f"tokens served in {_granted_ms(api, 0)[1]}"
    )


def test_the_clients_keep_working_while_their_client_id_is_attacked(served):
    api, client = served
    logged_before = len(api.events())
    stop = threading.Event()
    guesses: Counter[int] = Counter()

    def attack() -> None:
        transport = httpx.HTTPTransport(local_address=ATTACKER)
        with httpx.Client(base_url=api.url, timeout=30, transport=transport) as attacker:
            n = 0
            while not stop.is_set():
                n += 1
                answer = attacker.post(
                    "/v1/oauth/token",
                    data={
                        "client_id": client["client_id"],
                        "client_secret": f"guess-{n}",
                        "grant_type": "client_credentials",
                        "scope": "data-export",
                    },
                )
                guesses[answer.status_code] += 1

    attackers = [threading.Thread(target=attack, daemon=True) for _ in range(ATTACK_CONNECTIONS)]
    for thread in attackers:
        thread.start()
    try:
        time.sleep(1)  # the attacker is past its free failures before the clients start
        results, seconds = _clients(api, client, CLIENT_PROCESSES)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(timeout=30)
    failed = [r for r in results if r != [200, 200, 200, 200]]
    assert not failed, (len(failed), failed[:5], api.tail())
    assert set(guesses) == {401, 429}, guesses
    # Per API process: 5 free failures, at most one more per other argon2 turn taken with them, then one guess per
    # doubling wait: 8 waits (1 + 2 + ... + 128 s) outlast any run of this test.
    assert guesses[401] <= 2 * (5 + 2 + 8), guesses
    assert guesses[429] > 10 * guesses[401], guesses
    print(
        f"\nunder attack ({dict(guesses)}): {CLIENT_PROCESSES} client processes in {seconds:.1f} s; "
        f"tokens served in {_granted_ms(api, logged_before)[1]}"
    )
