"""The admin token ``reservations-tools up`` makes when none is configured, kept in the data
folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["TOKEN_FILE", "ensure_admin_token", "read_admin_token"]


TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret


def read_admin_token(data_dir: Path) -> str | None:
    """The token ``up`` generated in ``data_dir``, if there is one."""
    try:
        token = (data_dir / TOKEN_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return token or None


def ensure_admin_token(data_dir: Path) -> str:
    """The token in ``data_dir``, made (readable by its owner only) when there is none yet."""
    token = read_admin_token(data_dir)
    if token is not None:
        return token
    token = secrets.token_urlsafe(32)
    path = data_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token
