"""The HMAC key of access tokens (and of local download URLs): configured, else generated once per data dir."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from dataexport.config import Settings


def resolve_jwt_key(settings: Settings) -> str:
    """The configured key, else one generated once and kept in the data dir (0600) across restarts."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = Path(settings.data_dir) / "jwt.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
