"""The synchronous client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from dataexport.client import calls, models
from dataexport.client.calls import Call
from dataexport.client.core import (
    USER_AGENT,
    ClientSettings,
    Decision,
    Fail,
    HeldToken,
    IngestRequest,
    Renew,
    Use,
    Wait,
    decide_api,
    decide_signed,
    decide_token,
    request_json,
    transport_failure,
)
from dataexport.client.download import Progress, download_part
from dataexport.client.errors import ClientError
from dataexport.client.paging import PAGE, fresh

T = TypeVar("T")


class Client:
    """A client of the Data Export API (dataexport's or the vendor's).

    One token is fetched, kept and shared by every call until shortly before it expires, and renewed when the
    server answers `JWT_EXPIRED`; 429 and gateway errors are retried after `Retry-After` (or a jittered backoff).
    Thread-safe: threads may share one client.

        with Client("https://api.example.com", client_id, client_secret) as api:
            for run in api.iter_successful_runs():
                detail = api.get_run(run.jobId, run.jobRunId)
    """

    def __init__(
        self,
        server: str,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        project_id: int | None = None,
        settings: ClientSettings | None = None,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or ClientSettings(
            server=server, client_id=client_id, client_secret=client_secret, project_id=project_id
        )
        self._owns_http = http is None
        self.http = http or httpx.Client(timeout=self.settings.timeout, headers={"User-Agent": USER_AGENT})
        self._sleep = sleep
        self._clock = clock
        self._held: HeldToken | None = None
        self._token_lock = threading.Lock()

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the token

    def token(self) -> models.Token:
        """The held token, fetched first or renewed when it is due."""
        return self._token().token

    def _token(self, *, stale: HeldToken | None = None) -> HeldToken:
        """The held token unless it is due (or is `stale`, refused by the server), else a new one."""
        with self._token_lock:
            held = self._held
            # A thread that waited for the lock may find the token another thread just renewed.
            if held is not None and held is not stale and not held.due(self._clock(), self.settings.token_margin):
                return held
            self._held = HeldToken(self._fetch_token(), self._clock())
            return self._held

    def _fetch_token(self) -> models.Token:
        token: models.Token = self._exchange(
            lambda: self.http.post(self.settings.token_url, json=self.settings.token_body()),
            lambda response, attempt: decide_token(response, attempt=attempt, policy=self.settings.retry),
            idempotent=True,
        )
        return token

    def _exchange(
        self,
        request: Callable[[], httpx.Response],
        decide: Callable[[httpx.Response, int], Decision],
        *,
        idempotent: bool,
        renew: Callable[[], None] | None = None,
    ) -> Any:
        """Send `request` until `decide` accepts or refuses its answer, waiting between tries as it says."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = request()
            except httpx.TransportError as broken:
                decision = transport_failure(broken, attempt=attempt, idempotent=idempotent, policy=self.settings.retry)
            else:
                decision = decide(response, attempt)
            match decision:
                case Use(value):
                    return value
                case Renew() if renew is not None:
                    renew()
                case Wait(seconds):
                    self._sleep(seconds)
                case Fail(error):
                    raise error
                case _:
                    raise ClientError(f"unexpected decision {decision!r}")

    # ------------------------------------------------------------------ sending

    def send(self, call: Call[T]) -> T:
        """Send one call (retried as its answers allow) and read its payload."""
        held = self._token()
        renewed = False
        content = None if call.json is None else request_json(call.json)

        def request() -> httpx.Response:
            headers = {"Authorization": f"Bearer {held.token.access_token}"}
            if content is not None:
                headers["Content-Type"] = "application/json"
            url = held.base_url(self.settings) + call.path
            return self.http.request(call.method, url, params=dict(call.params), headers=headers, content=content)

        def renew() -> None:
            nonlocal held, renewed
            held, renewed = self._token(stale=held), True

        body = self._exchange(
            request,
            lambda response, attempt: decide_api(
                response, attempt=attempt, renewed=renewed, policy=self.settings.retry
            ),
            idempotent=call.idempotent,
            renew=renew,
        )
        return call.read(body)

    def _pages(self, call_for_page: Callable[[int], Call[list[T]]], key: Callable[[T], Any]) -> Iterator[T]:
        seen: set[Any] = set()
        page = 1
        while True:
            items = self.send(call_for_page(page))
            yield from fresh(items, key, seen)
            if len(items) < PAGE:
                return
            page += 1

    # ------------------------------------------------------------------ the reference's endpoints

    def create_export(self, spec: Mapping[str, Any]) -> int:
        """`POST /v1/exports` with the vendor's body; the new job's id."""
        return self.send(calls.create_export(spec)).jobId

    def list_exports(
        self, *, page: int = 1, limit: int = 25, order: str | None = None, **filters: str
    ) -> list[models.Job]:
        return self.send(calls.list_exports(page=page, limit=limit, order=order, **filters))

    def iter_exports(self, *, order: str = "ASC", **filters: str) -> Iterator[models.Job]:
        """Every job (filters: format, frequency, scope, state), page after page."""
        return self._pages(lambda p: calls.list_exports(page=p, limit=PAGE, order=order, **filters), lambda j: j.jobId)

    def get_export(self, job_id: int) -> models.Job:
        return self.send(calls.get_export(job_id))

    def list_successful_runs(
        self, *, page: int = 1, limit: int = 25, order: str | None = None
    ) -> list[models.SuccessfulRun]:
        return self.send(calls.list_successful_runs(page=page, limit=limit, order=order))

    def iter_successful_runs(self, *, order: str = "ASC") -> Iterator[models.SuccessfulRun]:
        return self._pages(lambda p: calls.list_successful_runs(page=p, limit=PAGE, order=order), lambda r: r.jobRunId)

    def list_runs(
        self, job_id: int, *, page: int = 1, limit: int = 25, order: str | None = None, state: str | None = None
    ) -> list[models.Run]:
        return self.send(calls.list_runs(job_id, page=page, limit=limit, order=order, state=state))

    def iter_runs(self, job_id: int, *, order: str = "ASC", state: str | None = None) -> Iterator[models.Run]:
        return self._pages(
            lambda p: calls.list_runs(job_id, page=p, limit=PAGE, order=order, state=state), lambda r: r.jobRunId
        )

    def get_run(self, job_id: int, run_id: int) -> models.RunDetail:
        return self.send(calls.get_run(job_id, run_id))

    def exportable_fields(self, scope: str) -> list[models.ExportableField]:
        return self.send(calls.exportable_fields(scope))

    def custom_vars(self) -> list[models.CustomVar]:
        return self.send(calls.custom_vars())

    def dynamic_var_keys(
        self, start: datetime | str | None = None, end: datetime | str | None = None
    ) -> list[models.DynamicVarKey]:
        return self.send(calls.dynamic_var_keys(start, end))

    def segments(self, ids: Sequence[int] | None = None) -> list[models.Segment]:
        return self.send(calls.segments(ids))

    # ------------------------------------------------------------------ extensions of dataexport

    def delete_export(self, job_id: int) -> models.Job:
        return self.send(calls.delete_export(job_id))

    def suspend_export(self, job_id: int) -> models.Job:
        return self.send(calls.suspend_export(job_id))

    def resume_export(self, job_id: int) -> models.Job:
        return self.send(calls.resume_export(job_id))

    def manifest(self, run: models.RunDetail) -> models.Manifest | None:
        """The run's manifest (each part's rows, size and SHA-256), or None when the server offers none."""
        if not run.manifestUrl:
            return None
        response = self._signed_get(run.manifestUrl)
        return models.Manifest.model_validate_json(response.content)

    def ingest_pageviews(
        self, hits: Sequence[Mapping[str, Any]], *, ingest_key: str, idempotency_key: str | None = None
    ) -> models.IngestResult:
        """`POST /ingest/v1/pageviews` with the project's ingest key (no token); see `IngestRequest`."""
        request = IngestRequest.of(self.settings, hits, ingest_key, idempotency_key)
        answer = self._exchange(
            lambda: self.http.post(request.url, content=request.content, headers=request.headers),
            lambda response, attempt: decide_api(response, attempt=attempt, renewed=True, policy=self.settings.retry),
            idempotent=True,
        )
        return IngestRequest.read(answer)

    # ------------------------------------------------------------------ downloads (signed URLs, no token)

    def download(
        self,
        file: models.RunFile,
        destination: Path,
        *,
        sha256: str | None = None,
        on_bytes: Progress | None = None,
    ) -> Path:
        """Fetch one part to `destination`, streamed and resumed with `Range` after a broken connection (also
        across processes: the `.partial` file next to it is kept). With `sha256` (from the manifest) the bytes are
        checked against it, else the gzip stream is checked whole. Raises FileExpired or DownloadFailed."""
        return download_part(
            self.http, file, destination, sha256=sha256, on_bytes=on_bytes, retry=self.settings.retry, sleep=self._sleep
        )

    def _signed_get(self, url: str) -> httpx.Response:
        answer: httpx.Response = self._exchange(
            lambda: self.http.get(url),
            lambda response, attempt: decide_signed(response, attempt=attempt, policy=self.settings.retry),
            idempotent=True,
        )
        return answer
