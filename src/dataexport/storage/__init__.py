"""Where export parts are stored and how clients download them (local directory or S3)."""

from typing import TYPE_CHECKING

from dataexport.storage.base import MAX_URL_TTL_SECONDS, Storage
from dataexport.storage.factory import build_storage, url_signing_key
from dataexport.storage.http import FileResponse, file_response, parse_range, signed_file_response
from dataexport.storage.keys import validate_key, validate_prefix
from dataexport.storage.local import LocalStorage
from dataexport.storage.signing import Verdict, sign, verify

if TYPE_CHECKING:  # the type checker sees S3Storage; at run time __getattr__ imports it on first use
    from dataexport.storage.s3 import S3Storage

__all__ = [
    "MAX_URL_TTL_SECONDS",
    "FileResponse",
    "LocalStorage",
    "S3Storage",
    "Storage",
    "Verdict",
    "build_storage",
    "file_response",
    "parse_range",
    "sign",
    "signed_file_response",
    "url_signing_key",
    "validate_key",
    "validate_prefix",
    "verify",
]


def __getattr__(name: str) -> object:
    # S3Storage on first use: boto3 costs tens of MB in every process that imports the package otherwise.
    if name == "S3Storage":
        from dataexport.storage.s3 import S3Storage

        return S3Storage
    raise AttributeError(name)
