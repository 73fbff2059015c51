"""The web console's operators, their project memberships and their signed-in sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from dataexport.metadata.models import ConsoleSession, Operator, OperatorProject, Project


def create_operator(session: Session, *, email: str, password_hash: str, role: str, now: datetime) -> Operator:
    operator = Operator(email=email, password_hash=password_hash, role=role, created_at=now)
    session.add(operator)
    session.flush()
    return operator


def operator_by_email(session: Session, email: str) -> Operator | None:
    return session.scalars(select(Operator).where(Operator.email == email)).first()


def list_operators(session: Session) -> list[Operator]:
    return list(session.scalars(select(Operator).order_by(Operator.id)))


def add_member(session: Session, operator_id: int, project_id: int) -> None:
    if session.get(OperatorProject, (operator_id, project_id)) is None:
        session.add(OperatorProject(operator_id=operator_id, project_id=project_id))
        session.flush()


def remove_member(session: Session, operator_id: int, project_id: int) -> None:
    session.execute(
        delete(OperatorProject).where(
            OperatorProject.operator_id == operator_id, OperatorProject.project_id == project_id
        )
    )


def member_project_ids(session: Session, operator_id: int) -> list[int]:
    stmt = select(OperatorProject.project_id).where(OperatorProject.operator_id == operator_id)
    return sorted(session.scalars(stmt))


def member_projects(session: Session, operator_id: int) -> list[Project]:
    stmt = (
        select(Project)
        .join(OperatorProject, OperatorProject.project_id == Project.id)
        .where(OperatorProject.operator_id == operator_id)
        .order_by(Project.id)
    )
    return list(session.scalars(stmt))


def member_project(session: Session, operator_id: int, project_id: int) -> Project | None:
    """The project if the operator is one of its members, else None (whether or not it exists)."""
    if session.get(OperatorProject, (operator_id, project_id)) is None:
        return None
    return session.get(Project, project_id)


def open_session(session: Session, *, token_hash: str, operator_id: int, now: datetime, expires_at: datetime) -> None:
    session.add(ConsoleSession(token_hash=token_hash, operator_id=operator_id, created_at=now, expires_at=expires_at))
    session.flush()


def session_operator(session: Session, token_hash: str, now: datetime) -> Operator | None:
    """The operator signed in with this session, if it exists and has not expired."""
    stmt = (
        select(Operator)
        .join(ConsoleSession, ConsoleSession.operator_id == Operator.id)
        .where(ConsoleSession.token_hash == token_hash, ConsoleSession.expires_at > now)
    )
    return session.scalars(stmt).first()


def close_session(session: Session, token_hash: str) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash))


def close_sessions_of(session: Session, operator_id: int) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.operator_id == operator_id))


def prune_sessions(session: Session, now: datetime) -> int:
    result = session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)
