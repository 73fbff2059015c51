"""A worker: claims runnable runs with a lease, extracts, publishes parts and a manifest, records the files.

A run's parts are published under a prefix of their own attempt (`.../a{attempt}/`), and the run's file rows
are written in the same transaction that checks we still hold the lease; so a worker that lost its lease
(it was presumed dead) can never overwrite or list files of the attempt that won.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy.orm import Session, sessionmaker

from dataexport.config import Settings
from dataexport.domain.enums import DEVICE_IDS_BY_LABEL, DeviceLabel, Format, JobState, RunState, Scope
from dataexport.domain.fieldspec import FieldSpec
from dataexport.domain.schedule import Window
from dataexport.domain.segment_filter import parse_segment_filter
from dataexport.domain.timeparse import format_instant as iso
from dataexport.engine import retry
from dataexport.engine.extract import extract, output_for
from dataexport.metadata.db import transaction
from dataexport.metadata.models import ExportJob, JobRun, RunFile
from dataexport.metadata.repositories import segments as segments_repo
from dataexport.metadata.repositories import tenants, work
from dataexport.query.export_read import ExportRequest
from dataexport.warehouse.backend import Warehouse, open_warehouse
from dataexport.writers import PartInfo, part_file_name

log = structlog.get_logger()

Clock = Callable[[], datetime]


class LeaseLost(Exception):
    """Another worker took the run (our lease had expired): stop without touching it."""


class Cancelled(Exception):
    """The worker is shutting down: the run is handed back."""


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    state: str
    rows: int = 0
    parts: int = 0


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def run_prefix(run: JobRun, attempt: int) -> str:
    return f"exports/{run.project_id}/{run.job_id}/{run.id}/a{attempt}"


class Worker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        storage,
        clock: Clock,
        worker_id: str | None = None,
        threads: int = 2,
        warehouse: Warehouse | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.storage = storage
        self.clock = clock
        self.worker_id = worker_id or new_worker_id()
        self.threads = threads
        self.stopping = threading.Event()
        self._warehouse = warehouse
        self._warehouse_lock = threading.Lock()

    @property
    def warehouse(self) -> Warehouse:
        """The one given, else one opened on first use and kept: a lake's connection is costly to set up."""
        with self._warehouse_lock:
            if self._warehouse is None:
                self._warehouse = open_warehouse(self.settings)
            return self._warehouse

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    # ------------------------------------------------------------------ claiming
    def claim(self) -> int | None:
        with transaction(self.sessions) as session:
            now = self.clock()
            for run_id in work.claim_candidates(session, now):
                if work.try_claim(session, run_id, worker_id=self.worker_id, now=now, lease=self.lease):
                    run = session.get(JobRun, run_id)
                    job = session.get(ExportJob, run.job_id)
                    job.last_run_time = now
                    work.set_job_state_for_once(session, job.id, JobState.COMPUTING)
                    self._give_up_if_exhausted(session, run, now)
                    if run.state == RunState.RUNNING.value:
                        return run_id
        return None

    def _give_up_if_exhausted(self, session: Session, run: JobRun, now: datetime) -> None:
        # A run re-taken after its lease expired counts that lost attempt: give up past the limit.
        if run.attempts > self.settings.max_attempts:
            self._finish_failure(session, run, now, run.error or "the worker running it stopped answering")

    def run_once(self) -> RunOutcome | None:
        """Claim and execute one run, if any is due. Returns what happened."""
        run_id = self.claim()
        return None if run_id is None else self.execute(run_id)

    def run_forever(self, idle_seconds: float | None = None) -> None:
        idle = idle_seconds if idle_seconds is not None else self.settings.poll_interval_seconds
        log.info("worker.started", worker_id=self.worker_id)
        while not self.stopping.is_set():
            try:
                outcome = self.run_once()
            except Exception:  # the DB may be restarting: keep the loop alive, retry after a pause
                log.exception("worker.loop_error", worker_id=self.worker_id)
                outcome = None
            if outcome is None:
                self.stopping.wait(idle)
        log.info("worker.stopped", worker_id=self.worker_id)

    # ------------------------------------------------------------------ executing
    def execute(self, run_id: int) -> RunOutcome:
        request, fmt, run_snapshot, attempt = self._load(run_id)
        work_root = Path(self.settings.data_dir) / "work"
        for stale in work_root.glob(f"run-{run_id}-a*"):  # left by a worker that died on this run
            shutil.rmtree(stale, ignore_errors=True)
        work_dir = work_root / f"run-{run_id}-a{attempt}-{self.worker_id}"
        heartbeat = _Heartbeat(self, run_id)
        heartbeat.start()
        recording = False
        try:
            parts = extract(
                request,
                fmt=fmt,
                warehouse=self.warehouse,
                work_dir=work_dir,
                part_max_bytes=self.settings.part_max_bytes,
                gzip_level=self.settings.gzip_level,
                threads=self.threads,
                memory_limit=self.settings.duckdb_memory_limit,
                rows_per_slice=self.settings.export_slice_rows,
                on_progress=heartbeat.set_progress,
            )
            heartbeat.check()
            keys = self._publish(run_snapshot, attempt, request, fmt, parts)
            heartbeat.stop()
            recording = True
            outcome = self._record_success(run_id, attempt, parts, keys)
            # Attempts of workers that died left parts nobody lists; the winner clears them.
            for earlier in range(1, attempt):
                self._discard_attempt(run_snapshot, earlier)
        except LeaseLost:
            log.warning("export.run.lease_lost", run_id=run_id, worker_id=self.worker_id)
            self._discard_attempt(run_snapshot, attempt)
            return RunOutcome(run_id, "LEASE_LOST")
        except Cancelled:
            # Discard while the lease is still ours: the attempt number is reused by the next claim.
            self._discard_attempt(run_snapshot, attempt)
            self._hand_back(run_id)
            return RunOutcome(run_id, "HANDED_BACK")
        except Exception as exc:
            heartbeat.stop()
            # A SUCCESS commit that seemed to fail may have committed (the connection broke before its
            # answer): its files may be listed, so keep them. If it did not commit, they are an unlisted
            # orphan prefix, like a killed attempt's, and the retry publishes under the next attempt's.
            if recording:
                log.warning("export.run.outcome_unknown", run_id=run_id, attempt=attempt, error=_describe(exc))
            else:
                self._discard_attempt(run_snapshot, attempt)
            return self._record_failure(run_id, exc)
        finally:
            heartbeat.stop()
            shutil.rmtree(work_dir, ignore_errors=True)
        return outcome

    def _load(self, run_id: int) -> tuple[ExportRequest, Format, JobRun, int]:
        with transaction(self.sessions) as session:
            run = session.get(JobRun, run_id)
            job = session.get(ExportJob, run.job_id)
            project = tenants.get_project(session, run.project_id)
            segment_filter = None
            if job.segment_id is not None:
                segment = segments_repo.get_segment(session, job.project_id, job.segment_id)
                segment_filter = parse_segment_filter(segment.filter) if segment else None
            fmt = Format(job.format)
            request = ExportRequest(
                project_id=job.project_id,
                scope=Scope(job.scope),
                fields=[FieldSpec.from_json(f) for f in job.fields],
                window_start=run.window_start,
                window_end=run.window_end,
                timezone=project.timezone,
                device_ids=DEVICE_IDS_BY_LABEL[DeviceLabel(job.device_label)],
                segment_filter=segment_filter,
                output=output_for(fmt),
                ordered=self.settings.sort_exports,
            )
            session.expunge(run)
            return request, fmt, run, run.attempts

    def _publish(
        self, run: JobRun, attempt: int, request: ExportRequest, fmt: Format, parts: list[PartInfo]
    ) -> list[str]:
        prefix = run_prefix(run, attempt)
        keys = []
        for part in parts:
            if self.stopping.is_set():
                raise Cancelled()
            key = f"{prefix}/{part_file_name(part.part_id, fmt)}"
            self.storage.publish(part.path, key)
            keys.append(key)
        manifest = {
            "jobId": run.job_id,
            "jobRunId": run.id,
            "attempt": attempt,
            # `to` inclusive to the millisecond, as the API shows windows.
            "from": iso(run.window_start),
            "to": iso(Window(run.window_start, run.window_end).last_ms),
            "format": fmt.value,
            "scope": request.scope.value,
            "fields": [f.to_json() for f in request.fields],
            "totalRows": sum(p.rows for p in parts),
            "parts": [
                {"partId": p.part_id, "key": k, "rows": p.rows, "fileSize": p.size, "sha256": p.sha256}
                for p, k in zip(parts, keys, strict=True)
            ],
        }
        manifest_path = parts[0].path.parent / "manifest.json"
        manifest_path.write_text(json.dumps(manifest, indent=2))
        self.storage.publish(manifest_path, f"{prefix}/manifest.json")
        return keys

    def _record_success(self, run_id: int, attempt: int, parts: list[PartInfo], keys: list[str]) -> RunOutcome:
        with transaction(self.sessions) as session:
            now = self.clock()
            run = work.lock_own_run(session, run_id, self.worker_id)
            if run is None or run.attempts != attempt:
                raise LeaseLost()
            expires = now + timedelta(days=self.settings.file_ttl_days)
            for part, key in zip(parts, keys, strict=True):
                session.add(
                    RunFile(
                        run_id=run.id,
                        part_id=part.part_id,
                        key=key,
                        size=part.size,
                        rows=part.rows,
                        sha256=part.sha256,
                        expiration_date=expires,
                        deleted=False,
                    )
                )
            run.rows = sum(p.rows for p in parts)
            run.manifest_key = f"{run_prefix(run, attempt)}/manifest.json"
            run.state = RunState.SUCCESS.value
            run.completion_rate = 100.0
            run.ended_at = now
            run.error = None
            run.lease_owner = None
            run.lease_expires_at = None
            work.set_job_state_for_once(session, run.job_id, JobState.COMPLETED)
        log.info(
            "export.run.finished",
            run_id=run_id,
            rows=run.rows,
            parts=len(parts),
            bytes=sum(p.size for p in parts),
            attempt=attempt,
            worker_id=self.worker_id,
        )
        return RunOutcome(run_id, RunState.SUCCESS.value, run.rows, len(parts))

    def _record_failure(self, run_id: int, exc: Exception) -> RunOutcome:
        message = _describe(exc)
        with transaction(self.sessions) as session:
            now = self.clock()
            run = work.lock_own_run(session, run_id, self.worker_id)
            if run is None:
                return RunOutcome(run_id, "LEASE_LOST")
            decision = retry.decide(
                exc,
                attempts=run.attempts,
                max_attempts=self.settings.max_attempts,
                base_backoff=timedelta(seconds=self.settings.retry_backoff_seconds),
                now=now,
            )
            run.error = message
            if decision.retry:
                run.state = RunState.RUNNABLE.value
                run.runnable_at = decision.next_attempt_at
                run.lease_owner = None
                run.lease_expires_at = None
                log.warning("export.run.retry", run_id=run_id, attempt=run.attempts, error=message)
                return RunOutcome(run_id, RunState.RUNNABLE.value)
            self._finish_failure(session, run, now, message)
        log.error("export.run.failed", run_id=run_id, error=message)
        return RunOutcome(run_id, RunState.FAILURE.value)

    def _finish_failure(self, session: Session, run: JobRun, now: datetime, message: str) -> None:
        run.state = RunState.FAILURE.value
        run.error = message
        run.ended_at = now
        run.lease_owner = None
        run.lease_expires_at = None
        work.set_job_state_for_once(session, run.job_id, JobState.COMPLETED)

    def _hand_back(self, run_id: int) -> None:
        """On shutdown the run goes back to RUNNABLE at once, and this attempt does not count."""
        with transaction(self.sessions) as session:
            run = work.lock_own_run(session, run_id, self.worker_id)
            if run is not None:
                run.state = RunState.RUNNABLE.value
                run.runnable_at = self.clock()
                run.attempts -= 1
                run.lease_owner = None
                run.lease_expires_at = None
                work.set_job_state_for_once(session, run.job_id, JobState.ACTIVE)
        log.info("export.run.handed_back", run_id=run_id, worker_id=self.worker_id)

    def _discard_attempt(self, run: JobRun, attempt: int) -> None:
        try:
            self.storage.delete_prefix(run_prefix(run, attempt) + "/")
        except Exception:  # best effort: an orphan prefix is never listed, and expiry does not depend on it
            log.warning("export.run.discard_failed", run_id=run.id, attempt=attempt)


def _describe(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:2000]


class _Heartbeat:
    """Renews the lease while the run works and reports progress; flags a lost lease or a shutdown."""

    def __init__(self, worker: Worker, run_id: int) -> None:
        self.worker = worker
        self.run_id = run_id
        self.progress = 0.0
        self.lost = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name=f"lease-{run_id}")

    def start(self) -> None:
        self.thread.start()

    def set_progress(self, rate: float) -> None:
        self.progress = rate
        self.check()

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost()
        if self.worker.stopping.is_set():
            raise Cancelled()

    def stop(self) -> None:
        self.done.set()

    def _loop(self) -> None:
        interval = max(0.2, self.worker.settings.lease_seconds / 3)
        while not self.done.wait(interval):
            try:
                with transaction(self.worker.sessions) as session:
                    held = work.renew_lease(
                        session,
                        self.run_id,
                        worker_id=self.worker.worker_id,
                        now=self.worker.clock(),
                        lease=self.worker.lease,
                        completion_rate=self.progress,
                    )
            except Exception:  # a DB hiccup: try again at the next beat; the lease has slack
                log.warning("export.run.heartbeat_failed", run_id=self.run_id)
                continue
            if not held:
                self.lost.set()
                return
