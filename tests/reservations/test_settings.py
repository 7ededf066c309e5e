"""Settings: the seed's variable names, the per-environment file, and secrets that never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from reservations.db import async_database_url
from reservations.settings import Settings

_VARS = (
    "ENVIRONMENT", "SERVICE_PORT", "DATABASE_URL", "REDIS_URL", "REDIS_HOST", "REDIS_PORT",
    "REDIS_PASSWORD", "WORKERS", "WORKER_CONCURRENCY", "ADMIN_TOKEN", "DATA_DIR", "LOG_FORMAT",
    "LOG_LEVEL",
)  # fmt: skip


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "environments").mkdir()
    return tmp_path


def test_defaults_without_any_file(in_tmp: Path) -> None:
    s = Settings()
    assert s.environment == "development"
    assert s.service_port == 8080
    assert s.workers == 3
    assert s.database_url is None
    assert s.effective_redis_url == "redis://127.0.0.1:6379/0"
    assert s.data_dir == "data"


def test_environment_selects_the_file_and_variables_win(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (in_tmp / "environments" / ".env.staging").write_text(
        "SERVICE_PORT=4000\n"
        "DATABASE_URL=postgresql://app:db-secret@db:5432/app\n"
        "REDIS_HOST=redis\nREDIS_PORT=6380\nREDIS_PASSWORD=p@ss:word\n"
        "WORKERS=5\n"
    )
    monkeypatch.setenv("ENVIRONMENT", "staging")
    monkeypatch.setenv("WORKERS", "2")
    s = Settings()
    assert s.environment == "staging"
    assert s.service_port == 4000
    assert s.workers == 2
    assert s.effective_redis_url == "redis://:p%40ss%3Aword@redis:6380/0"
    assert s.effective_database_url == "postgresql+asyncpg://app:db-secret@db:5432/app"
    printed = f"{s!r} {s} {s.model_dump()}"
    assert "db-secret" not in printed
    assert "p@ss:word" not in printed


def test_redis_url_wins_over_host_and_port(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:x@elsewhere:1234/3")
    monkeypatch.setenv("REDIS_HOST", "ignored")
    assert Settings().effective_redis_url == "redis://:x@elsewhere:1234/3"


def test_empty_password_means_none(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "")
    assert Settings().effective_redis_url == "redis://127.0.0.1:6379/0"


def test_bad_values_are_refused(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_PORT", "not-a-port")
    with pytest.raises(ValueError, match="SERVICE_PORT"):
        Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKER_CONCURRENCY", "5000"),  # brokerq runs at most 1,000 handlers per consumer
        ("DB_POOL_SIZE", "100000"),
        ("MAX_BODY_BYTES", str(10**12)),
        ("MAINTENANCE_INTERVAL", "0"),
        ("REDIS_SOCKET_TIMEOUT", "-1"),
    ],
)
def test_values_out_of_range_are_refused_at_start(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        Settings()


def test_database_url_spellings() -> None:
    assert async_database_url("postgresql://u@h/d") == "postgresql+asyncpg://u@h/d"
    assert async_database_url("postgres://u:p@h:1/d") == "postgresql+asyncpg://u:p@h:1/d"
    assert async_database_url("postgresql+asyncpg://u@h/d") == "postgresql+asyncpg://u@h/d"
