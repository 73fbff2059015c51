"""Background loops: the scheduler and workers, in their own processes or inside `serve`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import structlog
from sqlalchemy.orm import Session, sessionmaker

from dataexport.config import Settings
from dataexport.engine import scheduler
from dataexport.engine.maintenance import run_maintenance
from dataexport.engine.worker import Clock, Worker
from dataexport.warehouse.backend import Warehouse, open_warehouse

log = structlog.get_logger()


MAINTENANCE_EVERY_SECONDS = 600


class SchedulerLoop:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        storage,
        clock: Clock,
        interval: float | None = None,
        warehouse: Warehouse | None = None,
    ) -> None:
        self.sessions, self.settings, self.storage, self.clock = sessions, settings, storage, clock
        self._warehouse = warehouse
        self.interval = interval if interval is not None else max(1.0, settings.poll_interval_seconds)
        self.stopping = threading.Event()
        self._last_maintenance: float | None = None

    def run_forever(self) -> None:
        log.info("scheduler.started")
        while not self.stopping.is_set():
            now = self.clock()
            try:
                scheduler.tick(self.sessions, self.settings, self.storage, now)
            except Exception:  # the DB may be restarting: keep going, the next tick catches up
                log.exception("scheduler.tick_failed")
            if self._last_maintenance is None or now.timestamp() - self._last_maintenance >= MAINTENANCE_EVERY_SECONDS:
                self._last_maintenance = now.timestamp()
                try:
                    if self._warehouse is None:
                        self._warehouse = open_warehouse(self.settings)
                    run_maintenance(self.sessions, self._warehouse, now)
                except Exception:
                    log.exception("warehouse.maintenance_failed")
            self.stopping.wait(self.interval)
        log.info("scheduler.stopped")


@dataclass
class Background:
    """The loops `serve` runs in-process, started and stopped with the app."""

    loops: list = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for loop in self.loops:
            thread = threading.Thread(target=loop.run_forever, daemon=True, name=type(loop).__name__)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = 30) -> None:
        for loop in self.loops:
            loop.stopping.set()
        for thread in self.threads:
            thread.join(timeout)


def background_for(
    settings: Settings, sessions, storage, clock: Clock, warehouse: Warehouse | None = None
) -> Background:
    """The loops share the process's warehouse when given one (serve's), else each opens its own on first use."""
    loops: list = []
    if settings.run_scheduler:
        loops.append(SchedulerLoop(sessions, settings, storage, clock, warehouse=warehouse))
    if settings.run_worker:
        loops.append(Worker(sessions, settings, storage, clock, warehouse=warehouse))
    return Background(loops)
