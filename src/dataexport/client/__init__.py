"""A typed Python client of the Data Export API, for dataexport and for the vendor's own API.

It needs only httpx and pydantic: `dataexport.client` imports nothing of the server.

    from dataexport.client import Client

    with Client("https://api.example.com", client_id, client_secret) as api:
        job_id = api.create_export({...})
        for run in api.iter_runs(job_id, state="SUCCESS"):
            ...
"""

from dataexport.client.aio import AsyncClient
from dataexport.client.core import ClientSettings
from dataexport.client.errors import ApiError, AuthFailed, ClientError, DownloadFailed, FieldError, FileExpired
from dataexport.client.models import (
    CustomVar,
    DynamicVarKey,
    ExportableField,
    IngestResult,
    Job,
    JobField,
    Manifest,
    ManifestPart,
    Run,
    RunDetail,
    RunFile,
    Segment,
    SuccessfulRun,
    Token,
)
from dataexport.client.policy import RetryPolicy
from dataexport.client.sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "AuthFailed",
    "Client",
    "ClientError",
    "CustomVar",
    "DownloadFailed",
    "DynamicVarKey",
    "ExportableField",
    "FieldError",
    "FileExpired",
    "IngestResult",
    "Job",
    "JobField",
    "Manifest",
    "ManifestPart",
    "RetryPolicy",
    "Run",
    "RunDetail",
    "RunFile",
    "Segment",
    "ClientSettings",
    "SuccessfulRun",
    "Token",
]
