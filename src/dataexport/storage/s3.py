"""S3-compatible object storage (AWS, MinIO, SeaweedFS); downloads are presigned GET URLs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

import boto3
import boto3.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dataexport.errors import NotFound, StorageError
from dataexport.storage.base import MAX_URL_TTL_SECONDS
from dataexport.storage.keys import validate_key, validate_prefix

if TYPE_CHECKING:  # types-boto3-s3 is a development dependency: its names exist for the type checker only
    from types_boto3_s3.literals import BucketLocationConstraintType
    from types_boto3_s3.type_defs import CreateBucketRequestTypeDef, HeadObjectOutputTypeDef, ObjectIdentifierTypeDef

_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_FORBIDDEN = {"403", "Forbidden", "AccessDenied"}
# Parts are up to a few hundred MB: multipart above 64 MB, uploaded 4 chunks at a time.
_TRANSFER = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=4)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _backend(action: str) -> Iterator[None]:
    """Any failure of the object store is a retryable StorageError, never a raw boto exception."""
    try:
        yield
    except (BotoCoreError, ClientError, boto3.exceptions.Boto3Error, OSError) as exc:
        raise StorageError(f"{action} failed: {exc}") from exc


class S3Storage:
    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_prefix(self.prefix, "s3_prefix")
        self.region = region
        self.clock = clock
        config = Config(
            signature_version="s3v4",
            # A custom endpoint (MinIO, SeaweedFS) is usually a bare host or IP: address buckets by path there.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        )
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    def object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    # --- Storage interface ---
    def publish(self, local_path: Path, key: str) -> int:
        object_key = self.object_key(key)
        local_path = Path(local_path)
        with _backend(f"Publishing {key}"):
            size = local_path.stat().st_size
            self._ensure_bucket()
            # A PUT (or a completed multipart upload) becomes visible all at once: atomic by itself.
            self.client.upload_file(str(local_path), self.bucket, object_key, Config=_TRANSFER)
        return size

    def put_bytes(self, key: str, data: bytes) -> int:
        """One PUT of bytes already in memory (the lake's fresh files), into an existing bucket."""
        object_key = self.object_key(key)
        with _backend(f"Writing {key}"):
            self.client.put_object(Bucket=self.bucket, Key=object_key, Body=data)
        return len(data)

    def delete(self, key: str) -> None:
        object_key = self.object_key(key)
        with _backend(f"Deleting {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=object_key)

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        deleted = 0
        with _backend(f"Deleting prefix {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                objects: list[ObjectIdentifierTypeDef] = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if objects:  # a listing page holds at most 1000 keys, the delete_objects limit
                    reply = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
                    if reply.get("Errors"):
                        raise StorageError(f"Deleting prefix {prefix} failed for {len(reply['Errors'])} objects")
                    deleted += len(objects)
        return deleted

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except NotFound:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def download_url(self, key: str, *, expires_at: datetime, base_url: str) -> str:
        """Presigned GET (`base_url` is not used: the object store serves the bytes itself). The lifetime is
        clamped to 1 s .. 7 days, the range S3 accepts."""
        object_key = self.object_key(key)
        ttl = int((expires_at - self.clock()).total_seconds())
        ttl = min(max(ttl, 1), MAX_URL_TTL_SECONDS)
        with _backend(f"Signing {key}"):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": object_key}, ExpiresIn=ttl
            )

    # --- internals ---
    def _head(self, key: str) -> HeadObjectOutputTypeDef:
        object_key = self.object_key(key)
        try:
            with _backend(f"Reading {key}"):
                return self.client.head_object(Bucket=self.bucket, Key=object_key)
        except StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _error_code(cause) in _MISSING:
                raise NotFound(f"No such file: {key}") from cause
            raise

    def _ensure_bucket(self) -> None:
        """Create the bucket when missing (dev setups on MinIO/SeaweedFS); checked once per process."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _error_code(exc) in _FORBIDDEN:
                    # A HEAD answer has no body, so a 403 cannot say why (wrong secret, unknown key, or a
                    # key allowed to PUT but not to list). Let the upload try: it fails with the store's
                    # own reason (SignatureDoesNotMatch, InvalidAccessKeyId, AccessDenied) if it must. The
                    # same credentials would get the same 403 again: no need to ask on every publish.
                    self._bucket_ready = True
                    return
                if _error_code(exc) not in _MISSING:
                    raise
                request: CreateBucketRequestTypeDef = {"Bucket": self.bucket}
                if self.region != "us-east-1":
                    # The stubs list AWS's own regions; an S3-compatible store takes whatever name it is set up with.
                    location = cast("BucketLocationConstraintType", self.region)
                    request["CreateBucketConfiguration"] = {"LocationConstraint": location}
                try:
                    self.client.create_bucket(**request)
                except ClientError as create_exc:  # another process created it meanwhile
                    if _error_code(create_exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise
            self._bucket_ready = True
