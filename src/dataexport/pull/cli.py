"""The `dataexport pull` command: options in, a summary and an exit code out."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

from rich.console import Console

from dataexport.client import Client, ClientError
from dataexport.domain.timeparse import parse_instant
from dataexport.errors import ValidationFailed
from dataexport.pull.destinations import DestinationError, Kind, kind_of, open_destination
from dataexport.pull.progress import RichReporter
from dataexport.pull.runner import Pull, PullError, PullSummary, Reporter, Silent
from dataexport.warehouse.embedded.durable import try_lock

EXIT_FAILED = 2
EXIT_EXPIRED = 3


def default_work_dir(to: str) -> Path:
    """Beside the destination when it is on disk (so moving parts in is a rename); else in the user's cache."""
    kind = kind_of(to)
    if kind is Kind.POSTGRES:
        digest = hashlib.sha256(to.encode()).hexdigest()[:16]
        return Path.home() / ".cache" / "dataexport" / "pull" / digest
    target = Path(to)
    return target.with_name(target.name + ".pull") if kind is Kind.DUCKDB else target / ".dataexport-pull"


@contextmanager
def _only_pull_of(work: Path) -> Iterator[None]:
    """Hold the work folder's lock: a second pull of the same destination on this machine (cron overlapping a
    slow run) stops at once instead of downloading into the same files."""
    work.mkdir(parents=True, exist_ok=True)
    fd = try_lock(work / ".lock")
    if fd is None:
        raise PullError(f"another pull is delivering through {work}; try again when it is done")
    try:
        yield
    finally:
        os.close(fd)


def pull_command(
    *,
    job: int,
    to: str,
    since: str | None,
    server: str,
    client_id: str,
    client_secret: str,
    project_id: int | None,
    table: str | None,
    schema: str,
    parquet: bool,
    work_dir: Path | None,
    skip_expired: bool,
    as_json: bool,
    console: Console,
) -> int:
    try:
        # The API's own reading of instants: a date alone is 00:00 UTC, no offset means UTC.
        since_at = parse_instant(since, "--since") if since else None
    except ValidationFailed as error:
        console.print(f"[red]error:[/] {since!r}: {error.errors[0].field} {error.errors[0].message}", highlight=False)
        return EXIT_FAILED
    work = work_dir or default_work_dir(to)
    try:
        with ExitStack() as stack:
            stack.enter_context(_only_pull_of(work))
            api = stack.enter_context(Client(server, client_id, client_secret, project_id=project_id))
            destination = stack.enter_context(
                closing(open_destination(to, table=table, job_id=job, parquet=parquet, schema=schema))
            )
            reporter: Reporter = Silent() if as_json else stack.enter_context(RichReporter(console))
            summary = Pull(api, destination, job, work, since=since_at, reporter=reporter).run()
    except (ClientError, DestinationError, PullError) as error:
        if as_json:
            print(json.dumps({"error": str(error), "kind": type(error).__name__}))
        else:
            console.print(f"[red]error:[/] {error}", highlight=False)
        return EXIT_FAILED
    _report(summary, as_json, console)
    return EXIT_EXPIRED if summary.expired and not skip_expired else 0


def _report(summary: PullSummary, as_json: bool, console: Console) -> None:
    if as_json:
        print(json.dumps(summary.as_json()))
        return
    console.print(
        f"job {summary.job_id} -> {summary.destination}: {len(summary.delivered)} run(s) delivered, "
        f"{summary.rows:,} rows, {summary.already_delivered} already there, {summary.seconds:.1f} s",
        highlight=False,
    )
    for gone in summary.expired:
        console.print(
            f"[red]run {gone.run_id} ({gone.window_from:%Y-%m-%d %H:%M}) cannot be delivered:[/] {gone.reason}. "
            "Its files are deleted on the server; create a once job over that window to export it again.",
            highlight=False,
        )
