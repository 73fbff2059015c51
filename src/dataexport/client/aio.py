"""The asynchronous client: the same calls and rules as `Client`, over `httpx.AsyncClient`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
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
from dataexport.client.errors import ClientError
from dataexport.client.paging import PAGE, fresh

T = TypeVar("T")


class AsyncClient:
    """`Client` for asyncio code: one token shared by every task, renewed on `JWT_EXPIRED`, 429s retried.

    async with AsyncClient(server, client_id, client_secret) as api:
        async for job in api.iter_exports(state="active"):
            ...
    """

    def __init__(
        self,
        server: str,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        project_id: int | None = None,
        settings: ClientSettings | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or ClientSettings(
            server=server, client_id=client_id, client_secret=client_secret, project_id=project_id
        )
        self._owns_http = http is None
        self.http = http or httpx.AsyncClient(timeout=self.settings.timeout, headers={"User-Agent": USER_AGENT})
        self._sleep = sleep
        self._clock = clock
        self._held: HeldToken | None = None
        self._token_lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def token(self) -> models.Token:
        return (await self._token()).token

    async def _token(self, *, stale: HeldToken | None = None) -> HeldToken:
        async with self._token_lock:
            held = self._held
            if held is not None and held is not stale and not held.due(self._clock(), self.settings.token_margin):
                return held
            self._held = HeldToken(await self._fetch_token(), self._clock())
            return self._held

    async def _fetch_token(self) -> models.Token:
        token: models.Token = await self._exchange(
            lambda: self.http.post(self.settings.token_url, json=self.settings.token_body()),
            lambda response, attempt: decide_token(response, attempt=attempt, policy=self.settings.retry),
            idempotent=True,
        )
        return token

    async def _exchange(
        self,
        request: Callable[[], Awaitable[httpx.Response]],
        decide: Callable[[httpx.Response, int], Decision],
        *,
        idempotent: bool,
        renew: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        """Send `request` until `decide` accepts or refuses its answer, waiting between tries as it says."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await request()
            except httpx.TransportError as broken:
                decision = transport_failure(broken, attempt=attempt, idempotent=idempotent, policy=self.settings.retry)
            else:
                decision = decide(response, attempt)
            match decision:
                case Use(value):
                    return value
                case Renew() if renew is not None:
                    await renew()
                case Wait(seconds):
                    await self._sleep(seconds)
                case Fail(error):
                    raise error
                case _:
                    raise ClientError(f"unexpected decision {decision!r}")

    async def send(self, call: Call[T]) -> T:
        """Send one call (retried as its answers allow) and read its payload."""
        held = await self._token()
        renewed = False
        content = None if call.json is None else request_json(call.json)

        def request() -> Awaitable[httpx.Response]:
            headers = {"Authorization": f"Bearer {held.token.access_token}"}
            if content is not None:
                headers["Content-Type"] = "application/json"
            url = held.base_url(self.settings) + call.path
            return self.http.request(call.method, url, params=dict(call.params), headers=headers, content=content)

        async def renew() -> None:
            nonlocal held, renewed
            held, renewed = await self._token(stale=held), True

        body = await self._exchange(
            request,
            lambda response, attempt: decide_api(
                response, attempt=attempt, renewed=renewed, policy=self.settings.retry
            ),
            idempotent=call.idempotent,
            renew=renew,
        )
        return call.read(body)

    async def _pages(self, call_for_page: Callable[[int], Call[list[T]]], key: Callable[[T], Any]) -> AsyncIterator[T]:
        seen: set[Any] = set()
        page = 1
        while True:
            items = await self.send(call_for_page(page))
            for item in fresh(items, key, seen):
                yield item
            if len(items) < PAGE:
                return
            page += 1

    async def create_export(self, spec: Mapping[str, Any]) -> int:
        return (await self.send(calls.create_export(spec))).jobId

    async def list_exports(
        self, *, page: int = 1, limit: int = 25, order: str | None = None, **filters: str
    ) -> list[models.Job]:
        return await self.send(calls.list_exports(page=page, limit=limit, order=order, **filters))

    def iter_exports(self, *, order: str = "ASC", **filters: str) -> AsyncIterator[models.Job]:
        return self._pages(lambda p: calls.list_exports(page=p, limit=PAGE, order=order, **filters), lambda j: j.jobId)

    async def get_export(self, job_id: int) -> models.Job:
        return await self.send(calls.get_export(job_id))

    async def list_successful_runs(
        self, *, page: int = 1, limit: int = 25, order: str | None = None
    ) -> list[models.SuccessfulRun]:
        return await self.send(calls.list_successful_runs(page=page, limit=limit, order=order))

    def iter_successful_runs(self, *, order: str = "ASC") -> AsyncIterator[models.SuccessfulRun]:
        return self._pages(lambda p: calls.list_successful_runs(page=p, limit=PAGE, order=order), lambda r: r.jobRunId)

    async def list_runs(
        self, job_id: int, *, page: int = 1, limit: int = 25, order: str | None = None, state: str | None = None
    ) -> list[models.Run]:
        return await self.send(calls.list_runs(job_id, page=page, limit=limit, order=order, state=state))

    def iter_runs(self, job_id: int, *, order: str = "ASC", state: str | None = None) -> AsyncIterator[models.Run]:
        return self._pages(
            lambda p: calls.list_runs(job_id, page=p, limit=PAGE, order=order, state=state), lambda r: r.jobRunId
        )

    async def get_run(self, job_id: int, run_id: int) -> models.RunDetail:
        return await self.send(calls.get_run(job_id, run_id))

    async def exportable_fields(self, scope: str) -> list[models.ExportableField]:
        return await self.send(calls.exportable_fields(scope))

    async def custom_vars(self) -> list[models.CustomVar]:
        return await self.send(calls.custom_vars())

    async def dynamic_var_keys(
        self, start: datetime | str | None = None, end: datetime | str | None = None
    ) -> list[models.DynamicVarKey]:
        return await self.send(calls.dynamic_var_keys(start, end))

    async def segments(self, ids: Sequence[int] | None = None) -> list[models.Segment]:
        return await self.send(calls.segments(ids))

    async def delete_export(self, job_id: int) -> models.Job:
        return await self.send(calls.delete_export(job_id))

    async def suspend_export(self, job_id: int) -> models.Job:
        return await self.send(calls.suspend_export(job_id))

    async def resume_export(self, job_id: int) -> models.Job:
        return await self.send(calls.resume_export(job_id))

    async def manifest(self, run: models.RunDetail) -> models.Manifest | None:
        """The run's manifest (each part's rows, size and SHA-256), or None when the server offers none."""
        url = run.manifestUrl
        if not url:
            return None
        answer: httpx.Response = await self._exchange(
            lambda: self.http.get(url),
            lambda response, attempt: decide_signed(response, attempt=attempt, policy=self.settings.retry),
            idempotent=True,
        )
        return models.Manifest.model_validate_json(answer.content)

    async def ingest_pageviews(
        self, hits: Sequence[Mapping[str, Any]], *, ingest_key: str, idempotency_key: str | None = None
    ) -> models.IngestResult:
        request = IngestRequest.of(self.settings, hits, ingest_key, idempotency_key)
        answer = await self._exchange(
            lambda: self.http.post(request.url, content=request.content, headers=request.headers),
            lambda response, attempt: decide_api(response, attempt=attempt, renewed=True, policy=self.settings.retry),
            idempotent=True,
        )
        return IngestRequest.read(answer)
