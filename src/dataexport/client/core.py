"""What the sync and async clients share: settings, the token they hold, and the reading of each answer into
one decision (use it, renew the token, wait and retry, or fail). Only the I/O differs between the two."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx

from dataexport import __version__
from dataexport.client.errors import ApiError, AuthFailed, ClientError
from dataexport.client.models import IngestResult, Token
from dataexport.client.policy import RETRY_STATUSES, RetryPolicy, parse_retry_after, renewal_due

T = TypeVar("T")

USER_AGENT = f"dataexport-client/{__version__}"
# 429s that clear by themselves, retried even without a Retry-After (HTTP_429: no envelope, e.g. a gateway's).
TRANSIENT_429 = frozenset({"TOO_MANY_CONCURRENT_REQUESTS", "TOO_MANY_REQUESTS", "HTTP_429"})
DEFAULT_SCOPE = "data-export"


@dataclass(frozen=True)
class ClientSettings:
    """How to reach the API. `server` is where the token is asked for (`{server}/v1/oauth/token`); later calls go
    to the token answer's `endpoint`, as the vendor documents."""

    server: str
    client_id: str | None = None
    client_secret: str | None = None
    project_id: int | None = None
    scope: str = DEFAULT_SCOPE
    timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Renew a token this many seconds before it expires (at most half its life).
    token_margin: float = 60.0

    def token_body(self) -> dict[str, str | int]:
        """The token request, as JSON like the vendor's own examples (dataexport also takes it form-encoded)."""
        if not self.client_id or not self.client_secret:
            raise ClientError("client_id and client_secret are needed to get a token")
        body: dict[str, str | int] = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "scope": self.scope,
        }
        if self.project_id is not None:
            body["project_id"] = self.project_id
        return body

    @property
    def token_url(self) -> str:
        return self.server.rstrip("/") + "/v1/oauth/token"


@dataclass
class HeldToken:
    token: Token
    fetched_at: float  # monotonic seconds

    def due(self, now: float, margin: float) -> bool:
        return renewal_due(fetched_at=self.fetched_at, expires_in=self.token.expires_in, now=now, margin=margin)

    def base_url(self, settings: ClientSettings) -> str:
        return (self.token.endpoint or settings.server).rstrip("/")


@dataclass(frozen=True)
class Use(Generic[T]):
    value: T


@dataclass(frozen=True)
class Renew:
    """The token expired on the server's clock: get another and send again."""


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class Fail:
    error: ClientError


Decision = Use[Any] | Renew | Wait | Fail


def body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text


def retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))


def decide_api(response: httpx.Response, *, attempt: int, renewed: bool, policy: RetryPolicy) -> Decision:
    """What to do with an answer of a `/v1` endpoint (the envelope's payload is read by the caller's Call)."""
    status = response.status_code
    if 200 <= status < 300:
        return Use(body_of(response))
    body = body_of(response)
    error = ApiError.from_answer(status, body, retry_after=retry_after(response))
    if status == 401 and error.error_code == "JWT_EXPIRED" and not renewed:
        return Renew()
    if status == 429 and error.retry_after is None and error.error_code not in TRANSIENT_429:
        return Fail(error)  # a quota (TOO_MANY_ACTIVE_JOBS): waiting does not lift it
    if status in RETRY_STATUSES and policy.should_retry(attempt):
        return Wait(policy.delay(attempt, error.retry_after))
    return Fail(error)


def decide_token(response: httpx.Response, *, attempt: int, policy: RetryPolicy) -> Decision:
    status = response.status_code
    body = body_of(response)
    if status == 200:
        return Use(Token.model_validate(body))
    if status in RETRY_STATUSES and policy.should_retry(attempt):
        return Wait(policy.delay(attempt, retry_after(response)))
    if isinstance(body, dict) and "error" in body:
        return Fail(AuthFailed(status, str(body["error"]), str(body.get("error_description", ""))))
    return Fail(ApiError.from_answer(status, body))


def transport_failure(error: httpx.TransportError, *, attempt: int, idempotent: bool, policy: RetryPolicy) -> Decision:
    """A broken connection: sent again only when the request is safe to repeat."""
    if idempotent and policy.should_retry(attempt):
        return Wait(policy.delay(attempt, None))
    return Fail(ClientError(f"the API did not answer: {error!r}"))


def decide_signed(response: httpx.Response, *, attempt: int, policy: RetryPolicy) -> Decision:
    """An answer of a signed URL (a manifest): the response itself when it is 200; no token to renew."""
    if response.status_code == 200:
        return Use(response)
    return decide_api(response, attempt=attempt, renewed=True, policy=policy)


@dataclass(frozen=True)
class IngestRequest:
    """`POST /ingest/v1/pageviews` with the project's ingest key (no token). A batch sent again with the same hits
    is stored once, so it is safe to repeat after a broken connection."""

    url: str
    headers: dict[str, str]
    content: bytes

    @classmethod
    def of(cls, settings: ClientSettings, hits: Any, ingest_key: str, idempotency_key: str | None) -> IngestRequest:
        headers = {"Authorization": f"Bearer {ingest_key}", "Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return cls(settings.server.rstrip("/") + "/ingest/v1/pageviews", headers, request_json(list(hits)))

    @staticmethod
    def read(body: Any) -> IngestResult:
        return IngestResult.model_validate(body.get("payload") if isinstance(body, dict) else None)


def request_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
