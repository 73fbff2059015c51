"""`dataexport pull`: deliver a job's successful runs that the destination does not hold yet, in window order.

For each run: its details (fresh signed URLs) and manifest, every part downloaded into the work folder and
checked (the manifest's SHA-256, or a whole gzip stream when there is no manifest), then loaded and recorded
as one step by the destination. A run whose files expired before they were fetched cannot be delivered: it is
reported, and the pull ends non-zero unless told to skip such runs.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from dataexport.client import Client, FileExpired
from dataexport.client.models import Job, Manifest, RunDetail, SuccessfulRun
from dataexport.pull.columns import Column, catalog_types, job_columns, named_as_in_file
from dataexport.pull.deliveries import Delivery, runs_to_deliver
from dataexport.pull.destinations import Destination, DestinationError, Parts


class PullError(Exception):
    """The pull cannot go on (an unknown job, a destination that does not fit)."""


@dataclass(frozen=True)
class Delivered:
    run_id: int
    window_from: datetime
    window_to: datetime
    rows: int
    parts: int
    bytes: int
    checked_by: str  # "sha256" (the manifest) or "gzip"
    seconds: float


@dataclass(frozen=True)
class Expired:
    run_id: int
    window_from: datetime
    window_to: datetime
    reason: str


@dataclass
class PullSummary:
    job_id: int
    destination: str
    delivered: list[Delivered] = field(default_factory=list)
    expired: list[Expired] = field(default_factory=list)
    already_delivered: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.delivered)

    def as_json(self) -> dict[str, object]:
        return {
            "jobId": self.job_id,
            "destination": self.destination,
            "runsDelivered": len(self.delivered),
            "runsAlreadyDelivered": self.already_delivered,
            "rows": self.rows,
            "bytes": sum(d.bytes for d in self.delivered),
            "seconds": round(self.seconds, 3),
            "runs": [
                {
                    "jobRunId": d.run_id,
                    "from": d.window_from.isoformat(),
                    "to": d.window_to.isoformat(),
                    "rows": d.rows,
                    "parts": d.parts,
                    "bytes": d.bytes,
                    "checkedBy": d.checked_by,
                    "seconds": round(d.seconds, 3),
                }
                for d in self.delivered
            ],
            "expired": [
                {
                    "jobRunId": e.run_id,
                    "from": e.window_from.isoformat(),
                    "to": e.window_to.isoformat(),
                    "reason": e.reason,
                }
                for e in self.expired
            ],
        }


class Reporter(Protocol):
    """What the pull tells its user as it goes (Rich bars in a terminal, nothing for --json)."""

    def run_started(self, run: SuccessfulRun, parts: int, total_bytes: int) -> None: ...

    def downloaded(self, advance: int) -> None: ...

    def load_started(self, run: SuccessfulRun, rows: int | None) -> None: ...

    def loading(self, share: float) -> None: ...

    def run_finished(self, done: Delivered) -> None: ...

    def run_expired(self, expired: Expired) -> None: ...


class Silent:
    def run_started(self, run: SuccessfulRun, parts: int, total_bytes: int) -> None:
        pass

    def downloaded(self, advance: int) -> None:
        pass

    def load_started(self, run: SuccessfulRun, rows: int | None) -> None:
        pass

    def loading(self, share: float) -> None:
        pass

    def run_finished(self, done: Delivered) -> None:
        pass

    def run_expired(self, expired: Expired) -> None:
        pass


def part_suffix(fmt: str) -> str:
    return ".csv.gz" if fmt.upper() == "CSV" else ".jsonl.gz"


def file_header(path: Path, fmt: str) -> list[str] | None:
    """The column names a part starts with: its CSV header, or the keys of its first JSON line (None when the
    JSONL part is empty)."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as text:
        first = text.readline()
    if fmt.upper() == "CSV":
        return next(csv.reader([first]), [])
    if not first.strip():
        return None
    record = json.loads(first)
    return list(record) if isinstance(record, dict) else None


@dataclass
class Pull:
    api: Client
    destination: Destination
    job_id: int
    work_dir: Path
    since: datetime | None = None
    reporter: Reporter = field(default_factory=Silent)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def run(self) -> PullSummary:
        started = time.perf_counter()
        summary = PullSummary(self.job_id, self.destination.label)
        job = self.api.get_export(self.job_id)
        project_id = self.api.token().project_id or (job.projectIds[0] if job.projectIds else 0)
        columns = self._columns(job)
        successful = [r for r in self.api.iter_successful_runs() if r.jobId == self.job_id]
        delivered = self.destination.delivered(project_id, self.job_id)
        todo = runs_to_deliver(successful, job_id=self.job_id, delivered=delivered, since=self.since)
        summary.already_delivered = sum(
            1 for r in successful if r.jobRunId in delivered and (self.since is None or r.from_ >= self.since)
        )
        for run in todo:
            try:
                summary.delivered.append(self._deliver(project_id, job, columns, run))
            except FileExpired as expired:
                gone = Expired(run.jobRunId, run.from_, run.to, str(expired))
                summary.expired.append(gone)
                self.reporter.run_expired(gone)
        summary.seconds = time.perf_counter() - started
        return summary

    def _columns(self, job: Job) -> list[Column]:
        if not job.fields:
            raise PullError(f"job {job.jobId} lists no fields")
        catalog = self.api.exportable_fields(job.scope or "sessions")
        return job_columns(job.fields, catalog_types(catalog), self.destination.dialect)

    def _deliver(self, project_id: int, job: Job, columns: list[Column], run: SuccessfulRun) -> Delivered:
        started = time.perf_counter()
        detail = self.api.get_run(self.job_id, run.jobRunId)
        fmt = (run.format or job.format).upper()
        fmt = "CSV" if fmt == "CSV" else "JSONL"
        if not detail.files:
            raise FileExpired(f"run {run.jobRunId} lists no files any more: they expired before they were fetched")
        manifest = self.api.manifest(detail)
        folder = self.work_dir / f"job-{self.job_id}" / f"run-{run.jobRunId}"
        folder.mkdir(parents=True, exist_ok=True)
        paths, size = self._download(detail, manifest, folder, run, fmt)
        manifest_path = None
        if manifest is not None:
            manifest_path = folder / "manifest.json"
            manifest_path.write_text(manifest.model_dump_json(by_alias=True, indent=1))
        parts = Parts(
            paths=paths,
            format=fmt,
            columns=self._as_in_files(columns, paths, fmt),
            expected_rows=manifest.totalRows if manifest else None,
            manifest=manifest_path,
        )
        self.reporter.load_started(run, parts.expected_rows)
        delivery = Delivery(
            project_id=project_id,
            job_id=self.job_id,
            run_id=run.jobRunId,
            window_from=run.from_,
            window_to=run.to,
            parts=len(paths),
            delivered_at=self.clock(),
        )
        rows = self.destination.deliver(delivery, parts, self.reporter.loading)
        shutil.rmtree(folder, ignore_errors=True)
        done = Delivered(
            run.jobRunId,
            run.from_,
            run.to,
            rows,
            len(paths),
            size,
            "sha256" if manifest else "gzip",
            time.perf_counter() - started,
        )
        self.reporter.run_finished(done)
        return done

    def _download(
        self, detail: RunDetail, manifest: Manifest | None, folder: Path, run: SuccessfulRun, fmt: str
    ) -> tuple[list[Path], int]:
        files = sorted(detail.files, key=lambda f: f.partId)
        if manifest is not None and {p.partId for p in manifest.parts} != {f.partId for f in files}:
            raise DestinationError(f"run {run.jobRunId}: its files and its manifest list other parts")
        total = sum(f.fileSize or 0 for f in files)
        self.reporter.run_started(run, len(files), total)
        paths = []
        for file in files:
            target = folder / f"part-{file.partId:05d}{part_suffix(fmt)}"
            listed = manifest.part(file.partId) if manifest else None
            if target.exists():
                # Fetched and checked by a pull that stopped before loading: its bytes are kept.
                self.reporter.downloaded(target.stat().st_size)
            else:
                self.api.download(
                    file, target, sha256=listed.sha256 if listed else None, on_bytes=self.reporter.downloaded
                )
            paths.append(target)
        return paths, sum(p.stat().st_size for p in paths)

    @staticmethod
    def _as_in_files(columns: list[Column], paths: list[Path], fmt: str) -> list[Column]:
        named = None
        for path in paths:
            header = file_header(path, fmt)
            if header is None:
                continue
            try:
                this = named_as_in_file(columns, header)
            except ValueError as error:
                raise DestinationError(f"{path.name}: {error}") from None
            if named is not None and this != named:
                raise DestinationError(f"{path.name}: its columns differ from the run's first part")
            named = this
        return named or columns
