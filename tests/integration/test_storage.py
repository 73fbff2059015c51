"""One suite for every Storage backend: a local directory served over real HTTP, and a real S3-protocol
server (moto's standalone server). Download URLs are fetched with httpx and no Authorization header."""

import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from dataexport.config import Settings
from dataexport.errors import NotFound, StorageError, ValidationFailed
from dataexport.storage import (
    MAX_URL_TTL_SECONDS,
    LocalStorage,
    S3Storage,
    Storage,
    build_storage,
    file_response,
    sign,
    signed_file_response,
)
from dataexport.storage.http import READ_AT_ONCE

TRAVERSAL_KEYS = ["../x", "%2e%2e/x", "/etc/passwd", "a/../../b", "a\\..\\b", "a/\x00b"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def file_app(storage: LocalStorage) -> FastAPI:
    """The thin route the API uses, built on signed_file_response."""
    app = FastAPI()

    @app.get("/files/{key:path}")
    def download(key: str, request: Request):
        status, headers, body = signed_file_response(
            storage,
            key,
            request.query_params.get("expires"),
            request.query_params.get("sig"),
            request.headers.get("range"),
            datetime.now(UTC),
        )
        if isinstance(body, bytes):
            return Response(body, status_code=status, headers=headers)
        return StreamingResponse(body, status_code=status, headers=headers)

    return app


@pytest.fixture(scope="session")
def local_backend(tmp_path_factory):
    storage = LocalStorage(tmp_path_factory.mktemp("files"), b"local-test-secret")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(file_app(storage), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield storage, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


def make_s3(endpoint: str, bucket: str = "dataexport-test") -> S3Storage:
    return S3Storage(
        bucket,
        prefix="root",
        endpoint_url=endpoint,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
    )


@pytest.fixture(params=["local", "s3"])
def backend(request):
    if request.param == "local":
        storage, base_url = request.getfixturevalue("local_backend")
    else:
        storage, base_url = make_s3(request.getfixturevalue("s3_endpoint")), "http://unused.example"
    return request.param, storage, base_url


@pytest.fixture
def run_prefix() -> str:
    return f"exports/1/{uuid.uuid4().hex}/"


def a_file(tmp_path: Path, size: int = 100_000) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / f"src-{uuid.uuid4().hex}.gz"
    path.write_bytes(data)
    return path, data


def in_one_hour() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def test_backends_implement_the_protocol(backend):
    assert isinstance(backend[1], Storage)


def test_publish_then_download_without_auth(backend, tmp_path, run_prefix):
    _, storage, base_url = backend
    path, data = a_file(tmp_path)
    key = run_prefix + "part-00000.csv.gz"
    assert storage.publish(path, key) == len(data)
    assert storage.exists(key) and storage.size(key) == len(data)
    url = storage.download_url(key, expires_at=in_one_hour(), base_url=base_url)
    assert url.startswith("http://")
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == data
    assert "authorization" not in {k.lower() for k in response.request.headers}


def test_publish_replaces_whole_content(backend, tmp_path, run_prefix):
    _, storage, base_url = backend
    key = run_prefix + "part-00000.jsonl.gz"
    storage.publish(a_file(tmp_path, 5000)[0], key)
    path, data = a_file(tmp_path, 777)
    storage.publish(path, key)
    assert storage.size(key) == 777
    assert httpx.get(storage.download_url(key, expires_at=in_one_hour(), base_url=base_url)).content == data


def test_delete_is_idempotent(backend, tmp_path, run_prefix):
    _, storage, _ = backend
    key = run_prefix + "part-00000.csv.gz"
    storage.publish(a_file(tmp_path, 10)[0], key)
    storage.delete(key)
    storage.delete(key)
    assert not storage.exists(key)
    with pytest.raises(NotFound):
        storage.size(key)


def test_delete_prefix_is_a_string_prefix(backend, tmp_path, run_prefix):
    _, storage, _ = backend
    doomed = [run_prefix + "1/part-00000.csv.gz", run_prefix + "1/part-00001.csv.gz", run_prefix + "1x/p.gz"]
    kept = [run_prefix + "2/part-00000.csv.gz"]
    for key in doomed + kept:
        storage.publish(a_file(tmp_path, 10)[0], key)
    assert storage.delete_prefix(run_prefix + "1") == 3
    assert not any(storage.exists(k) for k in doomed)
    assert all(storage.exists(k) for k in kept)
    assert storage.delete_prefix(run_prefix + "nothing/") == 0


@pytest.mark.parametrize("key", TRAVERSAL_KEYS)
def test_unsafe_keys_are_refused_by_every_operation(backend, tmp_path, key):
    _, storage, base_url = backend
    path, _ = a_file(tmp_path, 10)
    for call in (
        lambda: storage.publish(path, key),
        lambda: storage.exists(key),
        lambda: storage.size(key),
        lambda: storage.delete(key),
        lambda: storage.download_url(key, expires_at=in_one_hour(), base_url=base_url),
    ):
        with pytest.raises(ValidationFailed) as info:
            call()
        assert info.value.errors[0].field == "key"


def test_s3_presigned_lifetime_is_the_remaining_time_clamped_to_seven_days(s3_endpoint):
    storage = make_s3(s3_endpoint)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    storage.clock = lambda: now
    expires = lambda url: int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])  # noqa: E731
    assert expires(storage.download_url("a/b.gz", expires_at=now + timedelta(hours=2), base_url="")) == 7200
    far = storage.download_url("a/b.gz", expires_at=now + timedelta(days=30), base_url="")
    assert expires(far) == MAX_URL_TTL_SECONDS


def test_s3_creates_missing_bucket(s3_endpoint, tmp_path):
    storage = make_s3(s3_endpoint, bucket=f"fresh-{uuid.uuid4().hex[:12]}")
    path, data = a_file(tmp_path, 50)
    assert storage.publish(path, "k/part-00000.csv.gz") == 50
    assert storage.size("k/part-00000.csv.gz") == 50


def test_s3_unreachable_endpoint_is_a_storage_error(tmp_path):
    storage = make_s3(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError):
        storage.publish(a_file(tmp_path, 10)[0], "k/part-00000.csv.gz")
    with pytest.raises(StorageError):
        storage.exists("k/part-00000.csv.gz")


def test_local_unwritable_root_is_a_storage_error(tmp_path):
    blocker = tmp_path / "root"
    blocker.write_text("a file where the storage root should be")  # fails even for root, unlike chmod
    storage = LocalStorage(blocker, b"s")
    with pytest.raises(StorageError):
        storage.publish(a_file(tmp_path, 10)[0], "k/part-00000.csv.gz")


# --- local signed URLs over real HTTP ---


def test_local_url_expired_is_gone(local_backend, tmp_path, run_prefix):
    storage, base_url = local_backend
    key = run_prefix + "part-00000.csv.gz"
    storage.publish(a_file(tmp_path, 10)[0], key)
    # URLs carry whole seconds: 3 s leaves at least 2 s for the first download even on a busy machine.
    expires_at = datetime.now(UTC) + timedelta(seconds=3)
    url = storage.download_url(key, expires_at=expires_at, base_url=base_url)
    assert httpx.get(url).status_code == 200
    time.sleep(max(0.0, expires_at.timestamp() - time.time()) + 0.2)
    assert httpx.get(url).status_code == 410


def test_local_tampered_urls_are_forbidden(local_backend, tmp_path, run_prefix):
    storage, base_url = local_backend
    key, other = run_prefix + "part-00000.csv.gz", run_prefix + "part-00001.csv.gz"
    storage.publish(a_file(tmp_path, 10)[0], key)
    storage.publish(a_file(tmp_path, 10)[0], other)
    url = storage.download_url(key, expires_at=in_one_hour(), base_url=base_url)
    query = parse_qs(urlsplit(url).query)
    expires, sig = query["expires"][0], query["sig"][0]
    tampered = [
        url.replace("part-00000", "part-00001"),
        url.replace(f"sig={sig}", f"sig={sig[:-1]}{'0' if sig[-1] != '0' else '1'}"),
        url.replace(f"expires={expires}", f"expires={int(expires) + 86400}"),
        url.split("?")[0],
        url.split("&sig=")[0],
    ]
    for bad in tampered:
        assert httpx.get(bad).status_code == 403, bad


@pytest.mark.parametrize(
    "raw_path",
    ["%2e%2e/%2e%2e/etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a/%2e%2e/%2e%2e/%2e%2e/etc/passwd"],
)
def test_local_traversal_is_refused_even_with_a_valid_signature(local_backend, raw_path):
    storage, base_url = local_backend
    decoded = raw_path.replace("%2e", ".").replace("%2F", "/")
    expires = int(in_one_hour().timestamp())
    sig = sign(storage.secret, decoded, expires)
    with httpx.Client() as client:
        request = client.build_request("GET", f"{base_url}/files/{raw_path}?expires={expires}&sig={sig}")
        response = client.send(request)
    assert response.status_code in (400, 403, 404)
    assert b"root:" not in response.content


def test_local_range_requests(local_backend, tmp_path, run_prefix):
    storage, base_url = local_backend
    key = run_prefix + "part-00000.csv.gz"
    path, data = a_file(tmp_path, 3_000_000)  # several read blocks
    storage.publish(path, key)
    url = storage.download_url(key, expires_at=in_one_hour(), base_url=base_url)
    partial = httpx.get(url, headers={"Range": "bytes=1000-2500000"})
    assert partial.status_code == 206
    assert partial.headers["content-range"] == f"bytes 1000-2500000/{len(data)}"
    assert partial.content == data[1000:2500001]
    tail = httpx.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    whole = httpx.get(url)
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "application/gzip"
    assert int(whole.headers["content-length"]) == len(data)
    past_end = httpx.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert past_end.status_code == 416 and past_end.headers["content-range"] == f"bytes */{len(data)}"


def test_local_missing_file_with_valid_signature_is_not_found(local_backend):
    storage, base_url = local_backend
    url = storage.download_url("exports/none/part-00000.csv.gz", expires_at=in_one_hour(), base_url=base_url)
    assert httpx.get(url).status_code == 404


def test_local_publish_leaves_no_temp_files(local_backend, tmp_path, run_prefix):
    storage, _ = local_backend
    key = run_prefix + "part-00000.csv.gz"
    storage.publish(a_file(tmp_path, 1000)[0], key)
    siblings = [p.name for p in storage.local_path(key).parent.iterdir()]
    assert siblings == ["part-00000.csv.gz"]


def test_build_storage_from_settings(tmp_path, s3_endpoint):
    local = build_storage(Settings(data_dir=tmp_path, storage="local", jwt_secret="master"))
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "files"
    assert local.secret != b"master"  # a derived key, not the token key itself
    s3 = build_storage(
        Settings(
            storage="s3",
            s3_endpoint_url=s3_endpoint,
            s3_bucket="built-bucket",
            s3_access_key_id="testing",
            s3_secret_access_key="testing",
        )
    )
    path, _ = a_file(tmp_path, 20)
    assert s3.publish(path, "k/p.gz") == 20 and s3.exists("k/p.gz")
    with pytest.raises(ValidationFailed):
        build_storage(Settings(storage="ftp", jwt_secret="m"))
    with pytest.raises(ValueError):
        build_storage(Settings(data_dir=tmp_path, storage="local", jwt_secret=None))


def test_local_small_answers_are_read_at_once_and_large_ones_streamed(local_backend, tmp_path, run_prefix):
    storage, _ = local_backend
    small_key, large_key = run_prefix + "small.csv.gz", run_prefix + "large.csv.gz"
    small_path, small = a_file(tmp_path, READ_AT_ONCE)
    large_path, large = a_file(tmp_path, READ_AT_ONCE + 1)
    storage.publish(small_path, small_key)
    storage.publish(large_path, large_key)
    answer = file_response(storage, small_key, None)
    assert answer.status == 200 and answer.body == small
    streamed = file_response(storage, large_key, None)
    assert not isinstance(streamed.body, bytes) and b"".join(streamed.body) == large
    ranged = file_response(storage, large_key, "bytes=10-")  # a range that is small enough: read at once
    assert ranged.status == 206 and ranged.body == large[10:]
