"""The embedded servers' passwords and folders, readable only by the user who started them.

Each embedded server keeps its password in a ``password`` file (mode 0600) in its own folder under
the data folder; the first start makes a random one, later starts reuse it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["PASSWORD_FILE", "private_dir", "read_or_create_password", "write_private"]

PASSWORD_FILE = "password"  # noqa: S105 - a file name, not a secret


def private_dir(path: Path, *, traverse_gid: int | None = None) -> Path:
    """``path`` as a folder only its owner can enter (made when missing, tightened when not).

    ``traverse_gid``: that group may also pass through it (mode 0710), to reach a folder inside
    that it owns; as root, the PostgreSQL server runs as the ``postgres`` user and needs this.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if traverse_gid is None:
        os.chmod(path, 0o700)
    else:
        os.chown(path, -1, traverse_gid)
        os.chmod(path, 0o710)  # noqa: S103 - search (x) only, for that one group
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step; the file is 0600 from its first byte, so no
    other user can open it while it is written, and readers never see half of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)  # a leftover of a crashed run may have another mode
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_or_create_password(path: Path) -> tuple[str, bool]:
    """The password kept in ``path`` and whether it was just made: a missing or empty file gets
    a new random password."""
    try:
        password = path.read_text().strip()
    except FileNotFoundError:
        password = ""
    if password:
        if path.stat().st_mode & 0o777 != 0o600:
            os.chmod(path, 0o600)
        return password, False
    password = secrets.token_urlsafe(32)
    write_private(path, password + "\n")
    return password, True
