"""Accounts, projects and OAuth clients."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.orm import Session

from dataexport.metadata.models import Account, OAuthClient, Project


def create_account(session: Session, name: str, now: datetime) -> Account:
    account = Account(name=name, created_at=now)
    session.add(account)
    session.flush()
    return account


def get_account(session: Session, account_id: int) -> Account | None:
    return session.get(Account, account_id)


def create_project(
    session: Session,
    *,
    account_id: int,
    name: str,
    timezone: str,
    retention_days: int,
    ingest_key_hash: str | None,
    now: datetime,
    tag_id: str | None = None,
) -> Project:
    project = Project(
        tag_id=tag_id,
        allowed_origins=[],
        account_id=account_id,
        name=name,
        timezone=timezone,
        retention_days=retention_days,
        ingest_key_hash=ingest_key_hash,
        created_at=now,
    )
    session.add(project)
    session.flush()
    return project


def get_project(session: Session, project_id: int) -> Project | None:
    return session.get(Project, project_id)


def list_projects(session: Session, account_id: int | None = None) -> list[Project]:
    stmt = select(Project).order_by(Project.id)
    if account_id is not None:
        stmt = stmt.where(Project.account_id == account_id)
    return list(session.scalars(stmt))


_projects = Project.__table__
# Run once per ingest request: a Core statement built once (see repositories.jobs).
_PROJECT_ID_BY_KEY_HASH = select(_projects.c.id).where(_projects.c.ingest_key_hash == bindparam("key_hash"))


def project_id_by_ingest_key_hash(conn: Connection, key_hash: str) -> int | None:
    return conn.execute(_PROJECT_ID_BY_KEY_HASH, {"key_hash": key_hash}).scalar()


_PROJECT_BY_TAG_ID = select(_projects.c.id, _projects.c.retention_days, _projects.c.allowed_origins).where(
    _projects.c.tag_id == bindparam("tag_id")
)


def project_by_tag_id(conn: Connection, tag_id: str):
    """(id, retention_days, allowed_origins) of the project whose tracking tag this is, or None."""
    return conn.execute(_PROJECT_BY_TAG_ID, {"tag_id": tag_id}).first()


def count_clients(session: Session, *, account_id: int | None = None, project_id: int | None = None) -> int:
    """Live (unrevoked) clients of a project, or the account-level ones of an account."""
    stmt = select(func.count()).select_from(OAuthClient).where(OAuthClient.revoked_at.is_(None))
    if project_id is not None:
        stmt = stmt.where(OAuthClient.project_id == project_id)
    else:
        stmt = stmt.where(OAuthClient.account_id == account_id, OAuthClient.project_id.is_(None))
    return session.scalar(stmt) or 0


def create_client(
    session: Session,
    *,
    client_id: str,
    secret_hash: str,
    account_id: int,
    project_id: int | None,
    name: str,
    now: datetime,
) -> OAuthClient:
    client = OAuthClient(
        client_id=client_id,
        secret_hash=secret_hash,
        account_id=account_id,
        project_id=project_id,
        name=name,
        created_at=now,
    )
    session.add(client)
    session.flush()
    return client


def client_by_client_id(session: Session, client_id: str) -> OAuthClient | None:
    return session.scalars(select(OAuthClient).where(OAuthClient.client_id == client_id)).first()


def list_clients(
    session: Session, *, account_id: int | None = None, project_id: int | None = None
) -> list[OAuthClient]:
    """Clients, revoked ones included, oldest first: of a project, of an account (project- and account-level
    alike), or all."""
    stmt = select(OAuthClient).order_by(OAuthClient.id)
    if project_id is not None:
        stmt = stmt.where(OAuthClient.project_id == project_id)
    if account_id is not None:
        stmt = stmt.where(OAuthClient.account_id == account_id)
    return list(session.scalars(stmt))


_clients = OAuthClient.__table__
# Run once a second by each API process (api.deps): a range scan of the revoked_at index.
_REVOKED_SINCE = select(_clients.c.id).where(_clients.c.revoked_at >= bindparam("since"))


def revoked_client_pks(conn: Connection, since: datetime) -> list[int]:
    """Pks of the clients revoked at or after `since`."""
    return list(conn.execute(_REVOKED_SINCE, {"since": since}).scalars())
