"""Operator actions behind the CLI (projects, clients, segments). Take a session; commit nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from dataexport.collect import origins
from dataexport.domain.json_depth import MAX_JSON_DEPTH, json_too_deep
from dataexport.domain.schedule import validate_time_zone
from dataexport.domain.segment_filter import parse_segment_filter
from dataexport.errors import Conflict, NotFound, validation_error
from dataexport.metadata.models import OAuthClient, Project, Segment
from dataexport.metadata.repositories import segments as segments_repo
from dataexport.metadata.repositories import tenants
from dataexport.security import secrets

MAX_CLIENTS = 10


@dataclass(frozen=True)
class NewProject:
    project: Project
    ingest_key: str


@dataclass(frozen=True)
class NewClient:
    client: OAuthClient
    secret: str


def create_project(
    session: Session,
    *,
    name: str,
    now: datetime,
    timezone: str = "UTC",
    retention_days: int = 395,
    account_id: int | None = None,
) -> NewProject:
    if not name.strip():
        raise validation_error("name", "must not be empty")
    if not 1 <= retention_days <= 3650:
        raise validation_error("retention_days", "must be between 1 and 3650")
    validate_time_zone(timezone, "timezone")
    if account_id is None:
        account_id = tenants.create_account(session, name, now).id
    elif tenants.get_account(session, account_id) is None:
        raise NotFound(f"Account {account_id} not found.")
    key = secrets.new_ingest_key()
    project = tenants.create_project(
        session,
        account_id=account_id,
        name=name,
        timezone=timezone,
        retention_days=retention_days,
        ingest_key_hash=secrets.hash_ingest_key(key),
        now=now,
        tag_id=secrets.new_tag_id(),
    )
    return NewProject(project, key)


def _project(session: Session, project_id: int) -> Project:
    project = tenants.get_project(session, project_id)
    if project is None:
        raise NotFound(f"Project {project_id} not found.")
    return project


def rotate_tag_id(session: Session, project_id: int) -> str:
    """A new tracking tag id; pages still loading the old one stop being collected at once."""
    project = _project(session, project_id)
    project.tag_id = secrets.new_tag_id()
    return project.tag_id


def allow_origin(session: Session, project_id: int, origin: str) -> list[str]:
    project = _project(session, project_id)
    project.allowed_origins = origins.with_origin(list(project.allowed_origins or []), origin)
    return project.allowed_origins


def disallow_origin(session: Session, project_id: int, origin: str) -> list[str]:
    project = _project(session, project_id)
    project.allowed_origins = origins.without_origin(list(project.allowed_origins or []), origin)
    return project.allowed_origins


def rotate_ingest_key(session: Session, project_id: int) -> str:
    project = _project(session, project_id)
    key = secrets.new_ingest_key()
    project.ingest_key_hash = secrets.hash_ingest_key(key)
    return key


def create_client(
    session: Session,
    *,
    now: datetime,
    project_id: int | None = None,
    account_id: int | None = None,
    name: str = "",
) -> NewClient:
    """A project-level client (project_id) or an account-level client (account_id); at most 10 live (unrevoked)
    ones of each."""
    if (project_id is None) == (account_id is None):
        raise validation_error("project", "give exactly one of project or account")
    if project_id is not None:
        project = tenants.get_project(session, project_id)
        if project is None:
            raise NotFound(f"Project {project_id} not found.")
        account_id = project.account_id
        count = tenants.count_clients(session, project_id=project_id)
    else:
        if tenants.get_account(session, account_id) is None:
            raise NotFound(f"Account {account_id} not found.")
        count = tenants.count_clients(session, account_id=account_id)
    if count >= MAX_CLIENTS:
        raise Conflict(
            f"At most {MAX_CLIENTS} credentials are allowed per project and per account; revoke one "
            "(`dataexport clients revoke`) to make room.",
            error_code="TOO_MANY_CLIENTS",
        )
    secret = secrets.new_secret()
    client = tenants.create_client(
        session,
        client_id=secrets.new_client_id(),
        secret_hash=secrets.hash_secret(secret),
        account_id=account_id,
        project_id=project_id,
        name=name,
        now=now,
    )
    return NewClient(client, secret)


def list_clients(
    session: Session, *, project_id: int | None = None, account_id: int | None = None
) -> list[OAuthClient]:
    """The clients of a project or of an account (with its projects' clients), or all; revoked ones included."""
    if project_id is not None and account_id is not None:
        raise validation_error("project", "give at most one of project or account")
    if project_id is not None and tenants.get_project(session, project_id) is None:
        raise NotFound(f"Project {project_id} not found.")
    if account_id is not None and tenants.get_account(session, account_id) is None:
        raise NotFound(f"Account {account_id} not found.")
    return tenants.list_clients(session, project_id=project_id, account_id=account_id)


def revoke_client(session: Session, client_id: str, *, now: datetime) -> OAuthClient:
    """Revoke a client: it gets no more tokens, its unexpired tokens stop working, and it no longer counts
    against the cap of MAX_CLIENTS. Revoking a revoked client changes nothing (its first revocation stands)."""
    client = tenants.client_by_client_id(session, client_id)
    if client is None:
        raise NotFound(f"Client {client_id} not found.")
    if client.revoked_at is None:
        client.revoked_at = now
        session.flush()
    return client


def segment_filter_from_text(text: str) -> object:
    """A segment filter typed as JSON text (the CLI's --filter, the console's editor), before its own validation."""
    # Measured before parsing: Python's parser recurses, and a deep enough text would exhaust the stack.
    if json_too_deep(text.encode("utf-8", "surrogatepass")):
        raise validation_error("filter", f"must nest arrays and objects at most {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise validation_error(
            "filter", f"must be valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None


def create_segment(session: Session, *, project_id: int, name: str, filter: object, now: datetime) -> Segment:
    if tenants.get_project(session, project_id) is None:
        raise NotFound(f"Project {project_id} not found.")
    if not name.strip() or len(name) > 255:
        raise validation_error("name", "must be 1 to 255 characters")
    parse_segment_filter(filter)  # validates; the raw JSON is stored as given
    return segments_repo.create_segment(session, project_id=project_id, name=name, filter=filter, now=now)
