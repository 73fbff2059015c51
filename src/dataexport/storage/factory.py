"""Build the configured Storage backend from Settings."""

from __future__ import annotations

import hashlib
import hmac

from dataexport.config import Settings
from dataexport.errors import validation_error
from dataexport.storage.base import Storage
from dataexport.storage.local import LocalStorage


def url_signing_key(master_secret: bytes | str) -> bytes:
    """A key for download URLs derived from the server secret, so URL signatures and tokens never share a key."""
    raw = master_secret.encode() if isinstance(master_secret, str) else master_secret
    return hmac.new(raw, b"dataexport/file-url-signing/v1", hashlib.sha256).digest()


def build_storage(settings: Settings, *, secret: bytes | str | None = None) -> Storage:
    """`secret` is the server's master secret (default `settings.jwt_secret`); local storage signs URLs with a
    key derived from it."""
    kind = settings.storage.lower()
    if kind == "local":
        master = secret if secret is not None else settings.jwt_secret
        if not master:
            raise ValueError("local storage needs a secret to sign download URLs (jwt_secret or secret=)")
        return LocalStorage(settings.resolved_files_dir, url_signing_key(master))
    if kind == "s3":
        from dataexport.storage.s3 import S3Storage  # boto3 is heavy: only the processes that use it load it

        return S3Storage(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )
    raise validation_error("storage", "must be `local` or `s3`")
