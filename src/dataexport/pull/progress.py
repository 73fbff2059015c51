"""Rich progress of a pull, one bar at a time: the bytes of the run being downloaded, then the share of its load."""

from __future__ import annotations

from types import TracebackType

from rich import filesize
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from dataexport.client.models import SuccessfulRun
from dataexport.pull.runner import Delivered, Expired


def _window(run: SuccessfulRun) -> str:
    return f"{run.from_:%Y-%m-%d %H:%M}"


class RichReporter:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._bytes = 0
        self._total = 0

    def __enter__(self) -> RichReporter:
        self.bars.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.bars.stop()

    def _replace(self, description: str, total: float, detail: str) -> None:
        if self._task is not None:
            self.bars.remove_task(self._task)
        self._task = self.bars.add_task(description, total=total, detail=detail)

    def run_started(self, run: SuccessfulRun, parts: int, total_bytes: int) -> None:
        self._bytes, self._total = 0, total_bytes
        self._replace(f"run {run.jobRunId} {_window(run)}: downloading {parts} part(s)", total_bytes, "")

    def downloaded(self, advance: int) -> None:
        if self._task is not None:
            self._bytes += advance
            detail = f"{filesize.decimal(self._bytes)} / {filesize.decimal(self._total)}"
            self.bars.update(self._task, completed=self._bytes, detail=detail)

    def load_started(self, run: SuccessfulRun, rows: int | None) -> None:
        self._replace(f"run {run.jobRunId} {_window(run)}: loading", 1.0, f"{rows:,} rows" if rows is not None else "")

    def loading(self, share: float) -> None:
        if self._task is not None:
            self.bars.update(self._task, completed=share)

    def run_finished(self, done: Delivered) -> None:
        if self._task is not None:
            self.bars.remove_task(self._task)
            self._task = None
        self.console.print(
            f"[green]delivered[/] run {done.run_id} ({done.window_from:%Y-%m-%d %H:%M}"
            f" .. {done.window_to:%Y-%m-%d %H:%M}): {done.rows:,} rows, {done.parts} part(s),"
            f" {done.bytes:,} bytes, checked by {done.checked_by}, {done.seconds:.1f} s",
            highlight=False,
        )

    def run_expired(self, expired: Expired) -> None:
        pass  # the summary at the end names every expired run, with what to do about it
