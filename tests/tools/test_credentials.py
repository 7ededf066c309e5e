"""The embedded servers' password files and private folders, on the real file system.

As root some of these folders belong to the postgres user, so nothing may follow a symbolic link
that user could plant, nor take a password from a file that user wrote.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from reservations_tools.servers.credentials import (
    CredentialsError,
    private_dir,
    read_or_create_password,
    write_private,
)


def test_a_password_is_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "password"
    password, made = read_or_create_password(path)
    assert made and len(password) >= 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_or_create_password(path) == (password, False)
    assert [p.name for p in tmp_path.iterdir()] == ["password"]  # no temporary file left


def test_a_password_file_others_could_read_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("chosen-by-hand\n")
    path.chmod(0o644)
    assert read_or_create_password(path) == ("chosen-by-hand", False)
    assert path.stat().st_mode & 0o777 == 0o600


def test_an_empty_password_file_gets_a_new_password(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("\n")
    password, made = read_or_create_password(path)
    assert made and password and path.read_text() == password + "\n"


def test_a_symbolic_link_is_not_taken_for_the_password_file(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("not a password\n")
    target.chmod(0o644)
    (tmp_path / "password").symlink_to(target)
    with pytest.raises(CredentialsError, match="symbolic link"):
        read_or_create_password(tmp_path / "password")
    assert target.stat().st_mode & 0o777 == 0o644  # not tightened through the link


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_a_password_file_another_user_wrote_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("planted\n")
    os.chown(path, pwd.getpwnam("postgres").pw_uid, -1)
    with pytest.raises(CredentialsError, match="not a plain file of this user's"):
        read_or_create_password(path)


def test_private_dir_makes_or_tightens_a_folder_and_follows_no_link(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "a" / "b")
    assert made.stat().st_mode & 0o777 == 0o700
    (tmp_path / "open").mkdir(mode=0o755)
    assert private_dir(tmp_path / "open").stat().st_mode & 0o777 == 0o700
    target = tmp_path / "target"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(CredentialsError, match="must be a folder"):
        private_dir(tmp_path / "link")
    assert target.stat().st_mode & 0o777 == 0o755


def test_write_private_replaces_in_one_step_and_never_writes_through_a_link(
    tmp_path: Path,
) -> None:
    target = tmp_path / "target"
    target.write_text("untouched\n")
    path = tmp_path / "run.json"
    path.symlink_to(target)
    write_private(path, "{}\n")
    assert not path.is_symlink() and path.read_text() == "{}\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert target.read_text() == "untouched\n"
