"""The embedded servers' passwords and folders, readable only by the user who started them.

Each embedded server keeps its password in a ``password`` file (mode 0600) in its own folder under
the data folder; the first start makes a random one, later starts reuse it.

As root, some of these folders belong to the ``postgres`` user, so nothing here follows a
symbolic link: that user must not be able to point root's writes, or its chmod, elsewhere.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

__all__ = [
    "PASSWORD_FILE",
    "CredentialsError",
    "private_dir",
    "read_or_create_password",
    "write_private",
]

PASSWORD_FILE = "password"  # noqa: S105 - a file name, not a secret


class CredentialsError(RuntimeError):
    """A password file or a private folder is not what it must be; the message says what."""


def private_dir(path: Path, *, uid: int = -1, gid: int = -1, group_may_enter: bool = False) -> Path:
    """``path`` as a folder only its owner can enter (made when missing, tightened when not),
    owned by ``uid``/``gid`` when given (-1: left as it is).

    ``group_may_enter``: its group may also pass through it (mode 0710), to reach a folder inside
    that it owns; as root, the PostgreSQL server runs as the ``postgres`` user and needs this.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise CredentialsError(f"{path} must be a folder: {exc.strerror}") from None
    try:
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o710 if group_may_enter else 0o700)
    finally:
        os.close(fd)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step; the file is 0600 from its first byte, so no
    other user can open it while it is written, and readers never see half of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)  # a crashed run's; O_EXCL then makes sure the file is ours
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_or_create_password(path: Path) -> tuple[str, bool]:
    """The password kept in ``path`` and whether it was just made: a missing or empty file gets
    a new random password."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        password = ""
    except OSError as exc:
        raise CredentialsError(
            f"cannot open the password file {path} ({exc.strerror}): it must be a plain file, "
            "not a symbolic link"
        ) from None
    else:
        with os.fdopen(fd) as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                raise CredentialsError(
                    f"the password file {path} is not a plain file of this user's: remove it, "
                    "and a new password is made"
                )
            if info.st_mode & 0o777 != 0o600:
                os.fchmod(file.fileno(), 0o600)
            password = file.read().strip()
    if password:
        return password, False
    password = secrets.token_urlsafe(32)
    write_private(path, password + "\n")
    return password, True
