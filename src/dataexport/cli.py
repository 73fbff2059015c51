"""`dataexport`: the operator's command line. Settings come from DATAEXPORT_* variables and flags."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console

from dataexport.config import Settings
from dataexport.errors import DataExportError

# What this file imports above: a bulk-load worker process re-imports the CLI (the parent's main script) when it
# starts, and finds these loaded (`load` has them imported once, in the server that forks the workers).
_TOP_IMPORTS = ("typer", "rich.console", "dataexport.config", "dataexport.errors")

app = typer.Typer(help="dataexport: self-hosted Data Export API.", no_args_is_help=True, add_completion=False)
projects_app = typer.Typer(help="Projects (tenants of the API).", no_args_is_help=True)
clients_app = typer.Typer(help="OAuth client credentials.", no_args_is_help=True)
segments_app = typer.Typer(help="Segments: saved filters on sessions.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
app.add_typer(clients_app, name="clients")
app.add_typer(segments_app, name="segments")
warehouse_app = typer.Typer(help="The warehouse of pageviews.", no_args_is_help=True)
app.add_typer(warehouse_app, name="warehouse")
users_app = typer.Typer(help="Operator accounts of the web console (/console).", no_args_is_help=True)
app.add_typer(users_app, name="users")

console = Console()
JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON, for scripts.")
DATA_DIR_OPT = typer.Option(None, "--data-dir", help="Data directory (default: DATAEXPORT_DATA_DIR or ./var)")


def _settings(data_dir: Path | None = None, **overrides) -> Settings:
    settings = Settings()
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    _check_lake_settings(settings)
    return settings


def _check_lake_settings(settings: Settings) -> None:
    """Lake settings that describe no lake end the command with one line naming the setting, before any process
    starts (a worker would otherwise fail only at its first run)."""
    if settings.warehouse != "ducklake":
        return
    from dataexport.warehouse.ducklake import DuckLakeSpec, LakeSettingsError

    try:
        DuckLakeSpec.from_settings(settings)
    except LakeSettingsError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _sessions(settings: Settings):
    from dataexport.metadata.db import make_engine, make_sessionmaker, migrate

    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    return make_sessionmaker(engine)


def _now() -> datetime:
    return datetime.now(UTC)


def _emit(as_json: bool, data: dict, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(data))
    else:
        for line in lines:
            console.print(line, highlight=False)


def _run(fn):
    """Domain errors become one clear line and exit code 2, never a traceback."""
    try:
        return fn()
    except DataExportError as exc:
        detail = "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
        console.print(f"[red]error:[/red] {exc.message}" + (f" ({detail})" if detail else ""), highlight=False)
        raise typer.Exit(2) from None


@projects_app.command("create")
def projects_create(
    name: str = typer.Option(..., "--name"),
    timezone: str = typer.Option("UTC", "--timezone", help="IANA time zone of the project's schedules"),
    retention_days: int = typer.Option(395, "--retention-days"),
    account: int | None = typer.Option(None, "--account", help="Add the project to an existing account"),
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Create a project (and its account, unless --account). Prints the ingest key once."""
    from dataexport import admin
    from dataexport.metadata.db import transaction

    def work():
        with transaction(_sessions(_settings(data_dir))) as session:
            new = admin.create_project(
                session,
                name=name,
                now=_now(),
                timezone=timezone,
                retention_days=retention_days,
                account_id=account,
            )
            return {
                "project_id": new.project.id,
                "account_id": new.project.account_id,
                "name": name,
                "timezone": timezone,
                "retention_days": retention_days,
                "ingest_key": new.ingest_key,
                "tag_id": new.project.tag_id,
            }

    settings = _settings(data_dir)
    out = _run(work)
    out["tag_snippet"] = _tag_snippet(settings, out["tag_id"])
    _emit(
        as_json,
        out,
        [
            f"project_id={out['project_id']} account_id={out['account_id']}",
            f"ingest_key={out['ingest_key']}  (shown once: store it now)",
            f"tag_id={out['tag_id']}  (public); paste into every page, then allow the site's origin with",
            f"  dataexport projects allow-origin --project {out['project_id']} --origin https://your.site",
            out["tag_snippet"],
        ],
    )


def _tag_snippet(settings: Settings, tag_id: str | None) -> str:
    from dataexport.collect.tagscript import snippet

    return snippet(f"{settings.served_url}/tag/{tag_id}.js") if tag_id else ""


def _project_row(settings: Settings, project) -> dict:
    return {
        "project_id": project.id,
        "account_id": project.account_id,
        "name": project.name,
        "timezone": project.timezone,
        "retention_days": project.retention_days,
        "tag_id": project.tag_id,
        "allowed_origins": list(project.allowed_origins or []),
        "tag_snippet": _tag_snippet(settings, project.tag_id),
    }


@projects_app.command("list")
def projects_list(
    account: int | None = typer.Option(None, "--account", help="Only this account's projects"),
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """List projects with their tracking tag id, allowed origins and the snippet to paste into pages."""
    from dataexport.metadata.db import transaction
    from dataexport.metadata.repositories import tenants

    settings = _settings(data_dir)

    def work():
        with transaction(_sessions(settings)) as session:
            return [_project_row(settings, p) for p in tenants.list_projects(session, account)]

    rows = _run(work)
    if as_json:
        typer.echo(json.dumps({"projects": rows}))
        return
    for r in rows:
        origins = ", ".join(r["allowed_origins"]) or "none: collection is refused until one is allowed"
        console.print(
            f"[bold]project {r['project_id']}[/bold] {r['name']} (account {r['account_id']}, {r['timezone']}, "
            f"{r['retention_days']} days)",
            highlight=False,
        )
        console.print(f"  tag_id={r['tag_id']}  allowed origins: {origins}", highlight=False)
        console.print("  " + r["tag_snippet"].replace("\n", "\n  "), highlight=False, markup=False)


def _origins_command(project: int, origin: str, as_json: bool, data_dir: Path | None, allow: bool) -> None:
    from dataexport import admin
    from dataexport.metadata.db import transaction

    def work():
        with transaction(_sessions(_settings(data_dir))) as session:
            change = admin.allow_origin if allow else admin.disallow_origin
            return {"project_id": project, "allowed_origins": change(session, project, origin)}

    out = _run(work)
    _emit(as_json, out, [f"allowed origins: {', '.join(out['allowed_origins']) or 'none'}"])


ORIGIN_OPT = typer.Option(..., "--origin", help="scheme://host[:port] of the site's pages, e.g. https://shop.example")


@projects_app.command("allow-origin")
def projects_allow_origin(
    project: int = typer.Option(..., "--project"),
    origin: str = ORIGIN_OPT,
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Let pages of an origin send the project's tag beacons (CORS and the collection check)."""
    _origins_command(project, origin, as_json, data_dir, allow=True)


@projects_app.command("disallow-origin")
def projects_disallow_origin(
    project: int = typer.Option(..., "--project"),
    origin: str = ORIGIN_OPT,
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Stop taking beacons from pages of an origin (within seconds in every API process)."""
    _origins_command(project, origin, as_json, data_dir, allow=False)


@projects_app.command("rotate-tag-id")
def projects_rotate_tag_id(
    project: int = typer.Option(..., "--project"), as_json: bool = JSON_OPT, data_dir: Path | None = DATA_DIR_OPT
):
    """Give the project a new tag id; pages with the old snippet stop being collected within seconds."""
    from dataexport import admin
    from dataexport.metadata.db import transaction

    settings = _settings(data_dir)

    def work():
        with transaction(_sessions(settings)) as session:
            return {"project_id": project, "tag_id": admin.rotate_tag_id(session, project)}

    out = _run(work)
    out["tag_snippet"] = _tag_snippet(settings, out["tag_id"])
    _emit(as_json, out, [f"tag_id={out['tag_id']}", out["tag_snippet"]])


@projects_app.command("rotate-ingest-key")
def projects_rotate_ingest_key(
    project: int = typer.Option(..., "--project"), as_json: bool = JSON_OPT, data_dir: Path | None = DATA_DIR_OPT
):
    """Replace a project's ingest key; the old one stops working at once."""
    from dataexport import admin
    from dataexport.metadata.db import transaction

    def work():
        with transaction(_sessions(_settings(data_dir))) as session:
            return {"project_id": project, "ingest_key": admin.rotate_ingest_key(session, project)}

    out = _run(work)
    _emit(as_json, out, [f"ingest_key={out['ingest_key']}  (shown once)"])


@clients_app.command("create")
def clients_create(
    project: int | None = typer.Option(None, "--project", help="Project-level client"),
    account: int | None = typer.Option(None, "--account", help="Account-level client (all its projects)"),
    name: str = typer.Option("", "--name"),
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Create OAuth client credentials. The secret is printed once and only its hash is kept."""
    from dataexport import admin
    from dataexport.metadata.db import transaction

    def work():
        with transaction(_sessions(_settings(data_dir))) as session:
            new = admin.create_client(session, now=_now(), project_id=project, account_id=account, name=name)
            return {
                "client_id": new.client.client_id,
                "client_secret": new.secret,
                "project_id": new.client.project_id,
                "account_id": new.client.account_id,
            }

    out = _run(work)
    _emit(as_json, out, [f"client_id={out['client_id']}", f"client_secret={out['client_secret']}  (shown once)"])


def _client_row(client) -> dict:
    from dataexport.domain.timeparse import format_instant

    return {
        "client_id": client.client_id,
        "name": client.name,
        "project_id": client.project_id,
        "account_id": client.account_id,
        "created_at": format_instant(client.created_at),
        "revoked_at": format_instant(client.revoked_at),
    }


@clients_app.command("list")
def clients_list(
    project: int | None = typer.Option(None, "--project", help="Only this project's clients"),
    account: int | None = typer.Option(None, "--account", help="Only this account's clients (all its projects)"),
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """List OAuth clients (never their secrets), revoked ones included."""
    from rich import box
    from rich.table import Column, Table

    from dataexport import admin
    from dataexport.metadata.db import transaction

    def work():
        with transaction(_sessions(_settings(data_dir))) as session:
            return [_client_row(c) for c in admin.list_clients(session, project_id=project, account_id=account)]

    rows = _run(work)
    if as_json:
        typer.echo(json.dumps({"clients": rows}))
        return
    # Dates only, so a row fits 80 columns (--json has the instants); client_id whole: operators copy it.
    whole = {"no_wrap": True}
    table = Table(
        Column("client_id", **whole),
        Column("project", **whole),
        Column("account", **whole),
        "name",
        Column("created", **whole),
        Column("revoked", **whole),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for r in rows:
        table.add_row(
            r["client_id"],
            str(r["project_id"] or "all"),
            str(r["account_id"]),
            r["name"],
            r["created_at"][:10],
            (r["revoked_at"] or "")[:10],
        )
    console.print(table)


@clients_app.command("revoke")
def clients_revoke(
    client_id: str = typer.Argument(..., help="The client_id to revoke"),
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Revoke a client: no more tokens; its unexpired tokens stop working within about a second."""
    from dataexport import admin
    from dataexport.metadata.db import transaction

    def work():
        with transaction(_sessions(_settings(data_dir))) as session:
            return _client_row(admin.revoke_client(session, client_id, now=_now()))

    out = _run(work)
    _emit(as_json, out, [f"client_id={out['client_id']} revoked_at={out['revoked_at']}"])


@segments_app.command("create")
def segments_create(
    project: int = typer.Option(..., "--project"),
    name: str = typer.Option(..., "--name"),
    filter: str = typer.Option(
        ..., "--filter", help='JSON filter, e.g. {"field":"country_code","op":"eq","value":"FR"}'
    ),
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Create a segment (a saved filter on sessions)."""
    from dataexport import admin
    from dataexport.metadata.db import transaction

    def work():
        parsed = admin.segment_filter_from_text(filter)
        with transaction(_sessions(_settings(data_dir))) as session:
            segment = admin.create_segment(session, project_id=project, name=name, filter=parsed, now=_now())
            return {"segment_id": segment.id, "project_id": project, "name": name}

    out = _run(work)
    _emit(as_json, out, [f"segment_id={out['segment_id']}"])


def _password(from_stdin: bool) -> str:
    if from_stdin:
        import sys

        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def _operator_row(view) -> dict:
    return {"email": view.email, "role": view.role.value, "project_ids": view.project_ids}


def _operator_line(row: dict) -> str:
    projects = ", ".join(str(p) for p in row["project_ids"]) or "none"
    return f"{row['email']}  role={row['role']}  projects={projects}"


@users_app.command("create")
def users_create(
    email: str = typer.Option(..., "--email"),
    role: str = typer.Option(..., "--role", help="admin (changes its projects) or viewer (reads only)"),
    project: list[int] = typer.Option([], "--project", help="A project the account belongs to (repeatable)"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin"),
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Create a console account. Its password is hashed with argon2; it sees only the projects it belongs to."""
    from dataexport.console import accounts
    from dataexport.metadata.db import transaction

    password = _password(password_stdin)

    def work():
        with transaction(_sessions(_settings(data_dir))) as session:
            view = accounts.create_operator(
                session, email=email, password=password, role=role, project_ids=project, now=_now()
            )
            return _operator_row(view)

    out = _run(work)
    _emit(as_json, out, [_operator_line(out)])


def _membership_command(email: str, project: int, as_json: bool, data_dir: Path | None, *, add: bool) -> None:
    from dataexport.console import accounts
    from dataexport.metadata.db import transaction

    def work():
        with transaction(_sessions(_settings(data_dir))) as session:
            change = accounts.grant if add else accounts.revoke
            return _operator_row(change(session, email=email, project_id=project))

    out = _run(work)
    _emit(as_json, out, [_operator_line(out)])


@users_app.command("grant")
def users_grant(
    email: str = typer.Option(..., "--email"),
    project: int = typer.Option(..., "--project"),
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Make an account a member of a project."""
    _membership_command(email, project, as_json, data_dir, add=True)


@users_app.command("revoke")
def users_revoke(
    email: str = typer.Option(..., "--email"),
    project: int = typer.Option(..., "--project"),
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Take a project away from an account."""
    _membership_command(email, project, as_json, data_dir, add=False)


@users_app.command("set-password")
def users_set_password(
    email: str = typer.Option(..., "--email"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin"),
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Give an account a new password; its signed-in browsers are signed out."""
    from dataexport.console import accounts
    from dataexport.metadata.db import transaction

    password = _password(password_stdin)

    def work():
        with transaction(_sessions(_settings(data_dir))) as session:
            return _operator_row(accounts.set_password(session, email=email, password=password))

    out = _run(work)
    _emit(False, out, [_operator_line(out) + "  (password changed, sessions closed)"])


@users_app.command("list")
def users_list(as_json: bool = JSON_OPT, data_dir: Path | None = DATA_DIR_OPT):
    """Console accounts, with their roles and projects."""
    from dataexport.console import accounts
    from dataexport.metadata.db import transaction

    def work():
        with transaction(_sessions(_settings(data_dir))) as session:
            return [_operator_row(v) for v in accounts.list_operators(session)]

    rows = _run(work)
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        for row in rows:
            console.print(_operator_line(row), highlight=False)


@app.command()
def serve(
    host: str | None = typer.Option(None, "--host"),
    port: int | None = typer.Option(None, "--port"),
    scheduler: bool = typer.Option(True, "--scheduler/--no-scheduler", help="Run the scheduler in-process"),
    worker: bool = typer.Option(True, "--worker/--no-worker", help="Run a worker in-process"),
    processes: int | None = typer.Option(
        None, "--processes", min=1, max=64, help="API processes (default 1, or DATAEXPORT_API_PROCESSES)"
    ),
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Serve the API (and, by default, a scheduler and a worker in the same process)."""
    settings = _settings(data_dir, host=host, port=port, api_processes=processes)
    if settings.api_processes > 1 and settings.port == 0:
        raise typer.BadParameter("several processes need a fixed port: each binds the same one", param_hint="--port")
    settings = settings.model_copy(
        update={"run_scheduler": scheduler and settings.run_scheduler, "run_worker": worker and settings.run_worker}
    )
    _serve(settings)


def _serve(settings: Settings) -> None:
    import uvicorn

    from dataexport.api.app import prepare_shared_state, served_app
    from dataexport.logging import configure_logging
    from dataexport.serving import serve_processes, uvicorn_options

    options = uvicorn_options(settings)  # the same for one process and for each of several
    if settings.api_processes == 1:
        uvicorn.run(served_app(settings), **options)
        return
    configure_logging(settings.log_level, settings.log_json)  # the supervisor's own log lines
    # What must happen once is done here first: the schema migration and the generated JWT key.
    prepare_shared_state(settings)
    raise typer.Exit(serve_processes(settings, options))


@app.command()
def load(
    files: list[Path] = typer.Argument(..., help="JSONL, CSV or Parquet files of pageview hits"),
    project: int = typer.Option(..., "--project"),
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Bulk-load pageview hits, with the same validation as HTTP ingest; prints what was stored and rejected."""
    from dataexport.ingest.load_workers import start_worker_server

    start_worker_server(files, preload=_TOP_IMPORTS)  # it gets ready while this process imports and sets up
    from contextlib import closing

    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from dataexport.gc_tuning import settle_heap
    from dataexport.ingest.bulkload import load_files
    from dataexport.metadata.db import transaction
    from dataexport.metadata.repositories import tenants
    from dataexport.warehouse.backend import open_warehouse

    settings = _settings(data_dir)

    def work():
        from dataexport.ingest.hits_columnar import HitWindow

        settle_heap()
        with transaction(_sessions(settings)) as session:
            row = tenants.get_project(session, project)
            if row is None:
                from dataexport.errors import NotFound

                raise NotFound(f"Project {project} not found.")
            retention_days = row.retention_days
        # History is welcome, but not what the project's retention sweep would delete, nor the future.
        window = HitWindow.at(
            _now(), max_future_seconds=settings.ingest_max_future_seconds, retention_days=retention_days
        )
        columns = (
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with (
            Progress(*columns, console=console, disable=as_json) as bar,
            closing(open_warehouse(settings)) as warehouse,
        ):
            task = bar.add_task("loading", total=None)
            return load_files(
                warehouse,
                project,
                files,
                window=window,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )

    summary = _run(work)
    reasons = [{"field": f, "message": m, "count": n} for (f, m), n in summary.reasons.most_common()]
    out = {
        "rows_stored": summary.rows_stored,
        "rows_rejected": summary.rows_rejected,
        "rows_already_stored": summary.rows_already_stored,
        "reasons": reasons,
        "samples": [s.__dict__ for s in summary.samples],
    }
    lines = [
        f"stored {summary.rows_stored:,} rows, rejected {summary.rows_rejected:,}"
        + (f", {summary.rows_already_stored:,} already stored" if summary.rows_already_stored else "")
    ]
    lines += [f"  {r['count']:>8,}  {r['field']}: {r['message']}" for r in reasons[:20]]
    _emit(as_json, out, lines)


def _engine_parts(settings: Settings):
    # Not from the API's modules: a worker or scheduler process would carry FastAPI and its kin for nothing.
    from dataexport.clock import system_clock
    from dataexport.security.keys import resolve_jwt_key
    from dataexport.storage import build_storage

    return _sessions(settings), build_storage(settings, secret=resolve_jwt_key(settings)), system_clock


def _stop_on_signals(loop) -> None:
    import signal

    def handler(_signum, _frame):
        # Only set the flag: printing here could re-enter a write the interrupted thread was making
        # (a RuntimeError that killed workers on SIGTERM). The loop logs its own stop.
        loop.stopping.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@warehouse_app.command("migrate")
def warehouse_migrate(
    project: int = typer.Option(..., "--project"),
    source_dir: Path | None = typer.Option(
        None, "--from-dir", help="Embedded warehouse to copy from (default: DATAEXPORT_WAREHOUSE_DIR or the data dir's)"
    ),
    as_json: bool = JSON_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Copy a project's pageviews from an embedded warehouse into the configured one (DATAEXPORT_WAREHOUSE=ducklake);
    safe to run again: what was copied before is not copied twice."""
    from contextlib import closing

    from dataexport.errors import NotFound, validation_error
    from dataexport.metadata.db import transaction
    from dataexport.metadata.repositories import tenants
    from dataexport.warehouse.backend import open_warehouse
    from dataexport.warehouse.embedded import EmbeddedWarehouse
    from dataexport.warehouse.migrate import DayMigrated, migrate_project

    settings = _settings(data_dir)

    def work():
        if settings.warehouse == "embedded":
            raise validation_error(
                "DATAEXPORT_WAREHOUSE", "must name the target (ducklake): the source is the embedded --from-dir"
            )
        with transaction(_sessions(settings)) as session:
            if tenants.get_project(session, project) is None:
                raise NotFound(f"Project {project} not found.")

        def show(day: DayMigrated) -> None:
            if not as_json:
                console.print(f"  {day.day}  {day.rows:>10,} rows read, {day.stored:>10,} stored", highlight=False)

        source = EmbeddedWarehouse(source_dir or settings.resolved_warehouse_dir)
        with closing(source), closing(open_warehouse(settings)) as target:
            return migrate_project(source, target, project, on_day=show)

    summary = _run(work)
    out = {
        "project_id": project,
        "rows_read": summary.rows,
        "rows_stored": summary.stored,
        "days": [{"day": d.day.isoformat(), "rows_read": d.rows, "rows_stored": d.stored} for d in summary.days],
    }
    lines = [f"project {project}: {summary.rows:,} rows read over {len(summary.days)} days, {summary.stored:,} stored"]
    _emit(as_json, out, lines)


@app.command()
def worker(
    once: bool = typer.Option(False, "--once", help="Execute at most one run, then exit"),
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Run a worker: claims runnable runs with a lease and executes them (scale out by starting several)."""
    from dataexport.engine.worker import Worker
    from dataexport.gc_tuning import settle_heap
    from dataexport.logging import configure_logging

    settings = _settings(data_dir)
    configure_logging(settings.log_level, settings.log_json)
    sessions, storage, clock = _engine_parts(settings)
    loop = Worker(sessions, settings, storage, clock)
    settle_heap()
    if once:
        outcome = loop.run_once()
        typer.echo(json.dumps(None if outcome is None else outcome.__dict__))
        return
    _stop_on_signals(loop)
    loop.run_forever()


@app.command("scheduler")
def scheduler_cmd(data_dir: Path | None = DATA_DIR_OPT):
    """Run the scheduler loop alone (several may run at once: window runs are unique per job)."""
    from dataexport.engine.runtime import SchedulerLoop
    from dataexport.logging import configure_logging

    settings = _settings(data_dir)
    configure_logging(settings.log_level, settings.log_json)
    sessions, storage, clock = _engine_parts(settings)
    loop = SchedulerLoop(sessions, settings, storage, clock)
    _stop_on_signals(loop)
    loop.run_forever()


# What the demo gives a session to end before a range reaching the present is exported (instead of 30 minutes).
DEMO_SESSION_TIMEOUT_MINUTES = 1


@app.command()
def demo(
    days: int = typer.Option(7, "--days", help="Days of traffic to generate, up to the present hour"),
    sessions_per_day: int = typer.Option(2000, "--sessions-per-day"),
    seed: int = typer.Option(42, "--seed"),
    host: str | None = typer.Option(None, "--host"),
    port: int | None = typer.Option(None, "--port"),
    serve_after: bool = typer.Option(True, "--serve/--no-serve", help="Serve the API once seeded"),
    shop_port: int | None = typer.Option(None, "--shop-port", help="Port of the demo shop (default: the API's + 1)"),
    data_dir: Path | None = DATA_DIR_OPT,
):
    """Reset the data dir, seed a demo project with realistic traffic, print credentials, then serve the API and,
    on a second origin, a demo shop instrumented with the project's tag."""
    from dataexport.demo.seed import seed_demo

    # A visitor of the demo shop wants to see their visit exported soon: unless set, sessions are given one
    # minute to end (not 30) before a range that reaches the present is exported.
    timeout = None if "DATAEXPORT_SESSION_TIMEOUT_MINUTES" in os.environ else DEMO_SESSION_TIMEOUT_MINUTES
    settings = _settings(data_dir, host=host, port=port, session_timeout_minutes=timeout)
    shop_port = shop_port or settings.port + 1
    shop_url = f"http://{settings.local_host}:{shop_port}"
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    out = seed_demo(
        settings, days=days, sessions_per_day=sessions_per_day, seed=seed, console=console, shop_url=shop_url
    )
    if serve_after:
        _serve_shop(settings.host, shop_port, f"{settings.served_url}/tag/{out['tag_id']}.js")
        _serve(settings)


def _serve_shop(host: str, port: int, tag_src: str) -> None:
    """The demo shop in a thread of this process (uvicorn leaves signals to the main thread's server, the API's)."""
    import threading

    import uvicorn

    from dataexport.demo.shop import create_shop_app

    server = uvicorn.Server(uvicorn.Config(create_shop_app(tag_src), host=host, port=port, log_level="warning"))
    threading.Thread(target=server.run, name="demo-shop", daemon=True).start()


@app.command()
def pull(
    job: int = typer.Option(..., "--job", min=1, help="The export job whose runs to deliver"),
    to: str = typer.Option(
        ..., "--to", help="A directory, a DuckDB file (*.duckdb, *.ddb, *.db) or a postgresql:// URL"
    ),
    since: str | None = typer.Option(
        None, "--since", help="Only runs whose window starts at or after this date (ISO 8601; UTC unless it says)"
    ),
    server: str = typer.Option(
        "http://127.0.0.1:8000", "--server", envvar="DATAEXPORT_URL", help="Where to ask for a token"
    ),
    client_id: str = typer.Option(..., "--client-id", envvar="DATAEXPORT_CLIENT_ID"),
    client_secret: str = typer.Option(..., "--client-secret", envvar="DATAEXPORT_CLIENT_SECRET"),
    project_id: int | None = typer.Option(None, "--project-id", envvar="DATAEXPORT_PROJECT_ID"),
    table: str | None = typer.Option(None, "--table", help="DuckDB/PostgreSQL table (default job_<id>)"),
    schema: str = typer.Option("public", "--schema", help="PostgreSQL schema of the table"),
    parquet: bool = typer.Option(False, "--parquet", help="Directory: one typed Parquet file per run, not the parts"),
    work_dir: Path | None = typer.Option(
        None, "--work-dir", help="Where parts are downloaded (kept across an interrupted pull, to resume)"
    ),
    skip_expired: bool = typer.Option(
        False, "--skip-expired", help="Exit 0 even when runs could not be fetched because their files expired"
    ),
    as_json: bool = JSON_OPT,
):
    """Deliver the job's successful runs not delivered yet into DEST, in window order: download each part
    (resumed after a break), check it against the run's manifest (or its gzip stream), load it and record the
    run with its rows, so the next pull delivers only new runs. Exit 2 on an error, 3 when runs expired."""
    from dataexport.pull.cli import pull_command

    raise typer.Exit(
        pull_command(
            job=job,
            to=to,
            since=since,
            server=server,
            client_id=client_id,
            client_secret=client_secret,
            project_id=project_id,
            table=table,
            schema=schema,
            parquet=parquet,
            work_dir=work_dir,
            skip_expired=skip_expired,
            as_json=as_json,
            console=console,
        )
    )


if __name__ == "__main__":
    app()
