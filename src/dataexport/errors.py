"""One root error. Each subclass names its errorCode, HTTP status and whether a worker may retry it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class DataExportError(Exception):
    status = 500
    error_code = "INTERNAL_ERROR"
    retryable = False

    def __init__(self, message: str, errors: list[FieldError] | None = None, error_code: str | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors or []
        if error_code:
            self.error_code = error_code


class ValidationFailed(DataExportError):
    status = 400
    error_code = "VALIDATION_ERROR"


class AuthError(DataExportError):
    status = 401
    error_code = "UNAUTHORIZED"


class TokenExpired(AuthError):
    error_code = "JWT_EXPIRED"

    def __init__(self) -> None:
        super().__init__("Auth token is expired.")


class Forbidden(DataExportError):
    status = 403
    error_code = "FORBIDDEN"


class NotFound(DataExportError):
    status = 404
    error_code = "NOT_FOUND"


class Conflict(DataExportError):
    status = 409
    error_code = "CONFLICT"


class TooManyRequests(DataExportError):
    status = 429
    error_code = "TOO_MANY_CONCURRENT_REQUESTS"

    def __init__(self, message: str = "Too many concurrent requests for this project.", retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class PayloadTooLarge(DataExportError):
    status = 413
    error_code = "PAYLOAD_TOO_LARGE"


class RequestTimeout(DataExportError):
    status = 408
    error_code = "REQUEST_TIMEOUT"


class TooManyActiveJobs(DataExportError):
    status = 429
    error_code = "TOO_MANY_ACTIVE_JOBS"


class Gone(DataExportError):
    status = 410
    error_code = "GONE"


class StorageError(DataExportError):
    """A storage backend failed; the run attempt is retried."""

    error_code = "STORAGE_ERROR"
    retryable = True


class ExtractionError(DataExportError):
    """Reading the window failed in a way that may pass (a file swapped by compaction, an I/O hiccup)."""

    error_code = "EXTRACTION_ERROR"
    retryable = True


class PermanentExtractionError(ExtractionError):
    """Reading the window failed in a way that the same data and settings will repeat: not retried."""

    retryable = False


class ExtractionOutOfMemory(PermanentExtractionError):
    error_code = "OUT_OF_MEMORY"


def validation_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"Invalid value for {field}: {message}.", [FieldError(field, message)])
