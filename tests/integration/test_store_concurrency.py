"""Many processes opening, appending to and closing PageviewStores on one warehouse at once (as `dataexport demo`'s
workers and a bulk load's do): no process may crash on another's staging directory coming or going, and every
batch is stored exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import duckdb

from dataexport.warehouse.embedded.store import PageviewStore
from dataexport.warehouse.schema import PARTITION_ROOT

SRC = str(Path(__file__).resolve().parents[2] / "src")
PROCESSES, ROUNDS, VIEWS = 5, 50, 4

# One writer: each round opens a store (its recovery lists every other writer's staging directory), appends a batch
# without a key and a keyed one (sent twice: the second must be a duplicate), closes it (its staging directory is
# deleted), and every third round closes a second store opened meanwhile, so opens and closes interleave across
# processes as much as they can.
WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from dataexport.ingest.hits import validate_hits
    from dataexport.warehouse.embedded.store import PageviewStore

    root, name, rounds, views = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def rows(user):
        hits = [{"user_id_unhashed": user, "session_number": 1, "view_number": v, "device_id": 1, "url": "https://x/",
                 "session_time": f"2026-03-0{1 + v % 2}T10:00:00Z", "view_time": f"2026-03-0{1 + v % 2}T10:00:0{v}Z"}
                for v in range(1, views + 1)]
        return validate_hits(hits).rows

    for r in range(rounds):
        other = PageviewStore(root) if r % 3 == 0 else None
        with PageviewStore(root) as store:
            assert not store.append(1, rows(f"{name}-{r}")).duplicate
            keyed = rows(f"{name}-{r}-keyed")
            assert not store.append(1, keyed, batch_key=f"{name}-{r}").duplicate
            assert store.append(1, keyed, batch_key=f"{name}-{r}").duplicate
        if other is not None:
            other.close()
    print("done", flush=True)
""")


def test_concurrent_stores_never_crash_and_store_every_batch_once(tmp_path):
    PageviewStore(tmp_path).close()
    env = dict(os.environ, PYTHONPATH=SRC)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), f"p{i}", str(ROUNDS), str(VIEWS)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    failures = [err for p, (_, err) in zip(procs, results, strict=True) if p.returncode != 0]
    assert failures == [], "\n".join(failures)
    assert all(out.strip() == "done" for out, _ in results)

    files = sorted(str(p) for p in (tmp_path / PARTITION_ROOT).glob("*/*/*.parquet"))
    users = duckdb.connect().sql(f"SELECT user_id_unhashed FROM read_parquet({files!r})").fetchall()
    per_user = Counter(u for (u,) in users)
    expected = {f"p{i}-{r}{suffix}" for i in range(PROCESSES) for r in range(ROUNDS) for suffix in ("", "-keyed")}
    assert set(per_user) == expected, "a batch is missing"
    assert set(per_user.values()) == {VIEWS}, "a batch is stored twice or in part"
    # Every writer's staging directory went with it: nothing is left for a recovery to find.
    assert list((tmp_path / "_store" / "staging").iterdir()) == []
