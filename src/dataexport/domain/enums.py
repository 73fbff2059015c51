"""The vendor's enumerations (contract.md section 3)."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar


class Format(StrEnum):
    CSV = "CSV"
    JSONL = "JSONL"


class Frequency(StrEnum):
    ONCE = "once"
    DAILY = "daily"
    HOURLY = "hourly"


class Scope(StrEnum):
    SESSIONS = "sessions"
    VIEWS = "views"


class DeviceLabel(StrEnum):
    ALL = "all"
    DESKTOP = "desktop"
    MOBILE = "mobile"
    TABLET = "tablet"


class JobState(StrEnum):
    ACTIVE = "ACTIVE"
    COMPUTING = "COMPUTING"
    COMPLETED = "COMPLETED"
    SUSPENDED = "SUSPENDED"
    DELETED = "DELETED"


class RunState(StrEnum):
    CREATED = "CREATED"
    RUNNABLE = "RUNNABLE"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


class Order(StrEnum):
    ASC = "ASC"
    DESC = "DESC"


# Data device ids (fields.md): -1 all, 0 unknown, 1 desktop, 2 mobile web, 3 tablet web, 4 mobile app, 5 tablet app.
DEVICE_IDS_BY_LABEL: dict[DeviceLabel, tuple[int, ...] | None] = {
    DeviceLabel.ALL: None,
    DeviceLabel.DESKTOP: (1,),
    DeviceLabel.MOBILE: (2, 4),
    DeviceLabel.TABLET: (3, 5),
}
# What `filters.deviceId` echoes for each label (contract.md decision).
FILTER_DEVICE_ID_BY_LABEL: dict[DeviceLabel, int] = {
    DeviceLabel.ALL: -1,
    DeviceLabel.DESKTOP: 1,
    DeviceLabel.MOBILE: 2,
    DeviceLabel.TABLET: 3,
}
LABEL_BY_FILTER_DEVICE_ID = {v: k for k, v in FILTER_DEVICE_ID_BY_LABEL.items()}

_E = TypeVar("_E", bound=StrEnum)


def parse_enum(enum_cls: type[_E], raw: str, *, case_insensitive: bool = True) -> _E | None:
    """Return the member whose value matches `raw` (case-insensitively), or None."""
    for member in enum_cls:
        if member.value == raw or (case_insensitive and member.value.lower() == raw.lower()):
            return member
    return None
