"""One suite for every Storage backend: a local directory served over real HTTP, and a real S3 server
(SeaweedFS, which checks SigV4 signatures and presigned-URL expiry). Download URLs are fetched with httpx and
no Authorization header. The last part takes the URLs of a run's files as the API hands them out with
DATAEXPORT_STORAGE=s3, and checks that SeaweedFS itself refuses tampered, swapped and expired ones."""

import gzip
import hashlib
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import text

from dataexport.config import Settings
from dataexport.demo.generate import generate
from dataexport.engine.worker import Worker
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
from dataexport.warehouse.embedded import EmbeddedWarehouse
from examples import create, example_once, two_closed_days
from support import S3Server

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


def make_s3(server: S3Server, bucket: str = "dataexport-test", **credentials) -> S3Storage:
    return S3Storage(
        bucket,
        prefix="root",
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key_id=credentials.get("access_key_id", server.access_key_id),
        secret_access_key=credentials.get("secret_access_key", server.secret_access_key),
    )


# Not named `backend`: that is conftest's metadata backend (SQLite/PostgreSQL), which the API tests below use.
@pytest.fixture(params=["local", "s3"])
def storage_backend(request):
    if request.param == "local":
        storage, base_url = request.getfixturevalue("local_backend")
    else:
        storage, base_url = make_s3(request.getfixturevalue("s3_server")), "http://unused.example"
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


def test_backends_implement_the_protocol(storage_backend):
    assert isinstance(storage_backend[1], Storage)


def test_publish_then_download_without_auth(storage_backend, tmp_path, run_prefix):
    _, storage, base_url = storage_backend
    path, data = a_file(tmp_path)
    key = run_prefix + "part-00000.csv.gz"
    assert storage.publish(path, key) == len(data)
    assert storage.exists(key) and storage.size(key) == len(data)
    url = storage.download_url(key, expires_at=in_one_hour(), base_url=base_url)
    assert url.startswith("http://")
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == data
    assert "authorization" not in {k.lower() for k in response.request.headers}


def test_publish_replaces_whole_content(storage_backend, tmp_path, run_prefix):
    _, storage, base_url = storage_backend
    key = run_prefix + "part-00000.jsonl.gz"
    storage.publish(a_file(tmp_path, 5000)[0], key)
    path, data = a_file(tmp_path, 777)
    storage.publish(path, key)
    assert storage.size(key) == 777
    assert httpx.get(storage.download_url(key, expires_at=in_one_hour(), base_url=base_url)).content == data


def test_delete_is_idempotent(storage_backend, tmp_path, run_prefix):
    _, storage, _ = storage_backend
    key = run_prefix + "part-00000.csv.gz"
    storage.publish(a_file(tmp_path, 10)[0], key)
    storage.delete(key)
    storage.delete(key)
    assert not storage.exists(key)
    with pytest.raises(NotFound):
        storage.size(key)


def test_delete_prefix_is_a_string_prefix(storage_backend, tmp_path, run_prefix):
    _, storage, _ = storage_backend
    doomed = [run_prefix + "1/part-00000.csv.gz", run_prefix + "1/part-00001.csv.gz", run_prefix + "1x/p.gz"]
    kept = [run_prefix + "2/part-00000.csv.gz"]
    for key in doomed + kept:
        storage.publish(a_file(tmp_path, 10)[0], key)
    assert storage.delete_prefix(run_prefix + "1") == 3
    assert not any(storage.exists(k) for k in doomed)
    assert all(storage.exists(k) for k in kept)
    assert storage.delete_prefix(run_prefix + "nothing/") == 0


@pytest.mark.parametrize("key", TRAVERSAL_KEYS)
def test_unsafe_keys_are_refused_by_every_operation(storage_backend, tmp_path, key):
    _, storage, base_url = storage_backend
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


def test_s3_presigned_lifetime_is_the_remaining_time_clamped_to_seven_days():
    # Signing is local (no request): no server is needed to read the lifetime a URL carries.
    storage = make_s3(S3Server("http://127.0.0.1:9", "key", "secret"))
    now = datetime(2030, 1, 1, tzinfo=UTC)
    storage.clock = lambda: now
    expires = lambda url: int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])  # noqa: E731
    assert expires(storage.download_url("a/b.gz", expires_at=now + timedelta(hours=2), base_url="")) == 7200
    far = storage.download_url("a/b.gz", expires_at=now + timedelta(days=30), base_url="")
    assert expires(far) == MAX_URL_TTL_SECONDS


def test_s3_creates_missing_bucket(s3_server, tmp_path):
    bucket = f"fresh-{uuid.uuid4().hex[:12]}"
    storage = make_s3(s3_server, bucket=bucket)
    assert bucket not in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    path, data = a_file(tmp_path, 50)
    assert storage.publish(path, "k/part-00000.csv.gz") == 50
    assert storage.size("k/part-00000.csv.gz") == 50
    assert bucket in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]


@pytest.mark.parametrize(
    ("credentials", "reason"),
    [
        ({"secret_access_key": "not-the-secret"}, "SignatureDoesNotMatch"),
        ({"access_key_id": "nobody"}, "InvalidAccessKeyId"),
    ],
)
def test_s3_wrong_credentials_fail_publish_with_the_servers_reason(s3_server, tmp_path, credentials, reason):
    # The bucket exists, so the storage's HEAD gets a bare 403: the error must still say why (the PUT's reason).
    storage = make_s3(s3_server, **credentials)
    with pytest.raises(StorageError, match=reason):
        storage.publish(a_file(tmp_path, 10)[0], "k/part-00000.csv.gz")
    fresh = make_s3(s3_server, bucket=f"fresh-{uuid.uuid4().hex[:12]}", **credentials)
    with pytest.raises(StorageError, match=reason):
        fresh.publish(a_file(tmp_path, 10)[0], "k/part-00000.csv.gz")


def test_s3_unreachable_endpoint_is_a_storage_error(tmp_path):
    storage = make_s3(S3Server(f"http://127.0.0.1:{free_port()}", "key", "secret"))
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


def test_build_storage_from_settings(tmp_path, s3_server):
    local = build_storage(Settings(data_dir=tmp_path, storage="local", jwt_secret="master"))
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "files"
    assert local.secret != b"master"  # a derived key, not the token key itself
    s3 = build_storage(
        Settings(
            storage="s3",
            s3_endpoint_url=s3_server.endpoint_url,
            s3_bucket="built-bucket",
            s3_access_key_id=s3_server.access_key_id,
            s3_secret_access_key=s3_server.secret_access_key,
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


# --- S3 presigned URLs as the API hands them out, refused by the S3 server itself ---

# The metadata database plays no part in these: SQLite only, not once per database backend.
ON_SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@dataclass
class S3Run:
    """A successful run whose parts the worker published to SeaweedFS, as the API lists them."""

    api: object
    http: httpx.Client
    tenant: object
    job_id: int
    run_id: int

    def detail(self) -> dict:
        answer = self.http.get(f"/v1/exports/{self.job_id}/runs/{self.run_id}", headers=self.tenant.headers)
        assert answer.status_code == 200, answer.text
        return answer.json()["payload"]


@pytest.fixture
def s3_app(api, s3_server, monkeypatch):
    """The API's storage built the way `serve` builds it, from DATAEXPORT_STORAGE=s3 and DATAEXPORT_S3_*
    pointing at SeaweedFS (a fresh bucket); returns the environment so a test can alter it."""
    env = s3_server.env(bucket=f"app-{uuid.uuid4().hex[:12]}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    original = api.context.storage
    api.context.storage = build_storage(Settings())
    assert isinstance(api.context.storage, S3Storage)
    yield env
    api.context.storage = original


def seed_and_create_job(api, http, tenant) -> int:
    with EmbeddedWarehouse(api.context.settings.resolved_warehouse_dir) as store:
        generate(store, tenant.project_id, days=3, sessions_per_day=40, seed=11, now=api.clock())
    body = example_once(day=two_closed_days(api.clock()))
    body["deviceLabel"] = "all"
    return create(http, tenant, body)


@pytest.fixture
def s3_run(api, http, tenant, s3_app) -> S3Run:
    job_id = seed_and_create_job(api, http, tenant)
    ctx = api.context
    outcome = Worker(ctx.sessions, ctx.settings, ctx.storage, ctx.clock).run_once()
    assert outcome is not None and outcome.state == "SUCCESS" and outcome.rows > 0
    return S3Run(api, http, tenant, job_id, outcome.run_id)


def with_query(url: str, **changes: str | None) -> str:
    """`url` with query parameters replaced (a value) or removed (None), the rest untouched."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def s3_error(answer: httpx.Response) -> str:
    """The S3 error code of an XML error answer (`<Code>...</Code>`)."""
    body = answer.text
    return body.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in body else ""


def url_end(url: str) -> datetime:
    """When a presigned URL stops working: its signing time plus its lifetime, as the server reads them."""
    query = parse_qs(urlsplit(url).query)
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed + timedelta(seconds=int(query["X-Amz-Expires"][0]))


@ON_SQLITE
def test_s3_run_url_downloads_the_part_and_serves_ranges(s3_run, s3_server):
    detail = s3_run.detail()
    part = detail["files"][0]
    assert part["url"].startswith(s3_server.endpoint_url + "/")
    whole = httpx.get(part["url"])  # no Authorization header: the signature is in the URL
    assert whole.status_code == 200, whole.text
    assert "authorization" not in {k.lower() for k in whole.request.headers}
    assert len(whole.content) == part["fileSize"] > 100
    manifest = httpx.get(detail["manifestUrl"]).json()
    assert hashlib.sha256(whole.content).hexdigest() == manifest["parts"][0]["sha256"]
    assert len(gzip.decompress(whole.content).splitlines()) > 1  # a header and rows
    ranged = httpx.get(part["url"], headers={"Range": "bytes=10-99"})
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes 10-99/{part['fileSize']}"
    assert ranged.content == whole.content[10:100]


@ON_SQLITE
def test_s3_tampered_run_urls_are_refused_by_the_server(s3_run):
    url = s3_run.detail()["files"][0]["url"]
    assert httpx.get(url).status_code == 200
    query = parse_qs(urlsplit(url).query)
    signature, expires = query["X-Amz-Signature"][0], int(query["X-Amz-Expires"][0])
    later = (url_end(url) - timedelta(seconds=expires) + timedelta(days=1)).strftime("%Y%m%dT%H%M%SZ")
    mis_signed = {
        "signature": with_query(url, **{"X-Amz-Signature": signature[:-1] + ("0" if signature[-1] != "0" else "1")}),
        "key": url.replace("/part-00000.", "/part-00001."),  # a path the URL was not signed for
        "attempt prefix": url.replace("/a1/", "/a2/"),
        # Any other lifetime: a 7-day URL cannot be extended (S3's limit, a 400), so shorten it.
        "expiry": with_query(url, **{"X-Amz-Expires": str(expires - 60)}),
        "signing time": with_query(url, **{"X-Amz-Date": later}),
    }
    for what, bad in mis_signed.items():
        answer = httpx.get(bad)
        assert (answer.status_code, s3_error(answer)) == (403, "SignatureDoesNotMatch"), what
    # Without its signature the presigned query is incomplete (a 400); with no query at all the request is
    # anonymous, and this server knows no anonymous identity.
    unsigned = httpx.get(with_query(url, **{"X-Amz-Signature": None}))
    assert (unsigned.status_code, s3_error(unsigned)) == (400, "MissingFields")
    anonymous = httpx.get(url.split("?")[0])
    assert (anonymous.status_code, s3_error(anonymous)) == (403, "AccessDenied")


@ON_SQLITE
def test_s3_url_of_one_object_does_not_open_another(s3_run):
    detail = s3_run.detail()
    part_url, manifest_url = detail["files"][0]["url"], detail["manifestUrl"]
    part_path, manifest_path = urlsplit(part_url).path, urlsplit(manifest_url).path
    assert httpx.get(part_url).status_code == 200 and httpx.get(manifest_url).status_code == 200
    # Each object exists, and each signature is valid for its own object: swapped, both are refused.
    swapped = [part_url.replace(part_path, manifest_path), manifest_url.replace(manifest_path, part_path)]
    for bad in swapped:
        answer = httpx.get(bad)
        assert (answer.status_code, s3_error(answer)) == (403, "SignatureDoesNotMatch"), bad


@ON_SQLITE
def test_s3_url_is_valid_for_exactly_its_lifetime(s3_run):
    # The file row expires in 5 s (instead of file_ttl_days), so the API signs the URL for what is left of that.
    expires_at = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
    with s3_run.api.context.engine.begin() as conn:
        conn.execute(
            text("UPDATE run_files SET expiration_date = :e WHERE run_id = :r"), {"e": expires_at, "r": s3_run.run_id}
        )
    part = s3_run.detail()["files"][0]
    assert datetime.fromisoformat(part["expirationDate"]) == expires_at
    url = part["url"]
    # The URL ends with its file: whole seconds, rounded down, never after (within the second it was signed in).
    assert timedelta(0) <= expires_at - url_end(url) <= timedelta(seconds=1)
    first, second = httpx.get(url), httpx.get(url)  # used twice within its lifetime: both served
    assert first.status_code == second.status_code == 200 and first.content == second.content
    # Past its end (the server counts whole seconds): refused by the server, for being expired.
    time.sleep(max(0.0, (url_end(url) - datetime.now(UTC)).total_seconds()) + 1.5)
    late = httpx.get(url)
    assert (late.status_code, s3_error(late)) == (403, "AccessDenied") and "expired" in late.text.lower()
    # Nor can it be revived by giving it a longer lifetime: the lifetime is signed.
    revived = httpx.get(with_query(url, **{"X-Amz-Expires": "3600"}))
    assert (revived.status_code, s3_error(revived)) == (403, "SignatureDoesNotMatch")


@ON_SQLITE
def test_s3_wrong_secret_fails_the_run_attempt_with_the_servers_reason(api, http, tenant, s3_app, monkeypatch):
    monkeypatch.setenv("DATAEXPORT_S3_SECRET_ACCESS_KEY", "not-the-secret")
    api.context.storage = build_storage(Settings())
    job_id = seed_and_create_job(api, http, tenant)
    ctx = api.context
    outcome = Worker(ctx.sessions, ctx.settings, ctx.storage, ctx.clock).run_once()
    assert outcome is not None and outcome.state == "RUNNABLE"  # a storage failure is retried
    answer = http.get(f"/v1/exports/{job_id}/runs/{outcome.run_id}", headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    run = answer.json()["payload"]
    assert run["state"] == "RUNNABLE" and run["files"] == []
    assert run["errorMessage"].startswith("StorageError: Publishing") and "SignatureDoesNotMatch" in run["errorMessage"]
