"""What the client raises: one root, and the API's error envelope carried whole."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


class ClientError(Exception):
    """The root of every error of `dataexport.client`."""


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ApiError(ClientError):
    """An error answer of the API: `{"success": false, "errorCode", "errorMessage", "errors": [...]}`."""

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        errors: list[FieldError] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.error_code = error_code
        self.message = message
        self.errors = errors or []
        self.retry_after = retry_after
        detail = "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        super().__init__(f"HTTP {status} {error_code}: {message}" + (f" ({detail})" if detail else ""))

    @classmethod
    def from_answer(cls, status: int, body: Any, *, retry_after: float | None = None) -> ApiError:
        """The envelope's fields when the body is one; a readable error when it is not (a proxy's HTML page)."""
        if isinstance(body, dict) and ("errorCode" in body or "errorMessage" in body):
            listed = body.get("errors")
            raw_errors: list[Any] = listed if isinstance(listed, list) else []
            errors = [
                FieldError(str(e.get("field", "")), str(e.get("message", "")))
                for e in raw_errors
                if isinstance(e, dict)
            ]
            return cls(
                status,
                str(body.get("errorCode") or f"HTTP_{status}"),
                str(body.get("errorMessage") or ""),
                errors,
                retry_after=retry_after,
            )
        text = body if isinstance(body, str) else ""
        return cls(status, f"HTTP_{status}", text.strip()[:200] or "no error envelope", retry_after=retry_after)


class AuthFailed(ClientError):
    """The token endpoint refused: its OAuth shape `{"error", "error_description"}` (RFC 6749, 5.2)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        self.status = status
        self.error = error
        self.description = description
        super().__init__(f"HTTP {status} {error}: {description}")


class DownloadFailed(ClientError):
    """A part could not be fetched whole, or its bytes are not what the run says they are."""


class FileExpired(DownloadFailed):
    """A part's download link expired before it was fetched: the server has deleted the file."""

    def __init__(self, message: str, expired_at: datetime | None = None) -> None:
        self.expired_at = expired_at
        super().__init__(message)
