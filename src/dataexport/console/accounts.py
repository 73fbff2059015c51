"""Operator accounts of the web console (`dataexport users ...`). Take a session; commit nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.orm import Session

from dataexport.errors import Conflict, NotFound, validation_error
from dataexport.metadata.models import Operator
from dataexport.metadata.repositories import operators, tenants
from dataexport.security import secrets

# Long enough that the sign-in throttle, not luck, is what stands between a guesser and an account.
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; this bounds the work one attempt can ask for
MAX_EMAIL_LENGTH = 320


class Role(StrEnum):
    ADMIN = "admin"  # changes what its projects hold: credentials, jobs, segments
    VIEWER = "viewer"  # reads only


@dataclass(frozen=True)
class OperatorView:
    id: int
    email: str
    role: Role
    project_ids: list[int]


def normalize_email(raw: str) -> str:
    """The address as stored and looked up: trimmed, lower-cased (one account per mailbox, however typed)."""
    return raw.strip().lower()


def check_email(raw: str) -> str:
    email = normalize_email(raw)
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or len(email) > MAX_EMAIL_LENGTH or any(c.isspace() for c in email):
        raise validation_error("email", "must be an e-mail address such as ana@example.com")
    return email


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise validation_error("password", f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise validation_error("password", f"must be at most {MAX_PASSWORD_LENGTH} characters")


def parse_role(raw: str) -> Role:
    try:
        return Role(raw.strip().lower())
    except ValueError:
        raise validation_error("role", "must be admin or viewer") from None


def create_operator(
    session: Session, *, email: str, password: str, role: str, project_ids: list[int], now: datetime
) -> OperatorView:
    address = check_email(email)
    check_password(password)
    parsed = parse_role(role)
    if operators.operator_by_email(session, address) is not None:
        raise Conflict(f"An operator {address} exists already.", error_code="OPERATOR_EXISTS")
    for project_id in project_ids:
        _require_project(session, project_id)
    operator = operators.create_operator(
        session, email=address, password_hash=secrets.hash_secret(password), role=parsed.value, now=now
    )
    for project_id in project_ids:
        operators.add_member(session, operator.id, project_id)
    return view_of(session, operator)


def grant(session: Session, *, email: str, project_id: int) -> OperatorView:
    operator = _require_operator(session, email)
    _require_project(session, project_id)
    operators.add_member(session, operator.id, project_id)
    return view_of(session, operator)


def revoke(session: Session, *, email: str, project_id: int) -> OperatorView:
    operator = _require_operator(session, email)
    operators.remove_member(session, operator.id, project_id)
    return view_of(session, operator)


def set_password(session: Session, *, email: str, password: str) -> OperatorView:
    """A new password; every browser signed in with the old one is signed out."""
    operator = _require_operator(session, email)
    check_password(password)
    operator.password_hash = secrets.hash_secret(password)
    operators.close_sessions_of(session, operator.id)
    return view_of(session, operator)


def list_operators(session: Session) -> list[OperatorView]:
    return [view_of(session, o) for o in operators.list_operators(session)]


def view_of(session: Session, operator: Operator) -> OperatorView:
    return OperatorView(
        id=operator.id,
        email=operator.email,
        role=Role(operator.role),
        project_ids=operators.member_project_ids(session, operator.id),
    )


def _require_operator(session: Session, email: str) -> Operator:
    operator = operators.operator_by_email(session, normalize_email(email))
    if operator is None:
        raise NotFound(f"No operator {normalize_email(email)}.")
    return operator


def _require_project(session: Session, project_id: int) -> None:
    if tenants.get_project(session, project_id) is None:
        raise NotFound(f"Project {project_id} not found.")
