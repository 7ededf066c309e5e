"""The deployment files: the Compose file, the Dockerfile and the environment examples.

No image is built here (the machine has no Docker engine). The Compose file is validated by
Compose itself when a Compose is installed (v2 plugin or the 1.x ``docker-compose``), and its
structure is checked in any case.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SEED_VARIABLES = ("SERVICE_PORT", "ENVIRONMENT", "DATABASE_URL", "REDIS_HOST", "REDIS_PORT",
                  "REDIS_PASSWORD")  # fmt: skip


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_is_valid_for_compose() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose installed")
    result = subprocess.run(
        [*command, "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_compose_runs_the_seed_deployment() -> None:
    services = _compose()["services"]
    assert set(services) == {"redis", "db", "migrate", "api", "worker"}

    redis = services["redis"]
    assert "--appendonly yes" in " ".join(redis["command"])
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert services["db"]["volumes"] == ["db-data:/var/lib/postgresql/data"]
    for name in ("redis", "db", "api"):
        assert services[name]["healthcheck"]["test"], name

    api, worker, migrate = services["api"], services["worker"], services["migrate"]
    assert api["ports"] == ["${SERVICE_PORT:-8080}:8080"]
    assert api["command"][:2] == ["reservations", "api"]
    assert worker["command"] == ["reservations", "worker"]
    assert worker["deploy"]["replicas"] == 3
    assert migrate["command"] == ["reservations", "migrate"] and migrate["restart"] == "no"
    for service in (api, worker):
        assert service["depends_on"] == {
            "db": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
        environment = service["environment"]
        assert environment["REDIS_HOST"] == "redis"
        assert "@db:5432/" in environment["DATABASE_URL"]
        assert service["env_file"] == ["environments/.env.production"]


def test_dockerfile_is_multi_stage_locked_and_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, flags=re.MULTILINE)) >= 3
    # The service's distribution (and brokerq) only, not the workspace's tooling.
    assert "uv sync --locked --no-dev --no-install-workspace --package reservations" in text
    assert "uv sync --locked --no-dev --no-editable --package reservations" in text
    assert re.search(r"^USER app$", text, flags=re.MULTILINE)
    assert "HEALTHCHECK" in text and "/health" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git", "environments"} <= set(ignored)


@pytest.mark.parametrize("environment", ["development", "production", "test"])
def test_environment_examples_use_the_seed_names_and_hold_no_secrets(environment: str) -> None:
    text = (ROOT / "environments" / f".env.{environment}").read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert settings["ENVIRONMENT"] == environment
    assert settings["SERVICE_PORT"] == "8080"
    # Every seed variable is named in the file (set, or shown in a comment).
    for name in SEED_VARIABLES:
        assert name in text, (environment, name)
    assert "REDIS_URL" in text
    for key, value in settings.items():
        if "PASSWORD" in key or key.endswith("_URL"):
            assert value in ("", "postgresql://postgres:change-me@db:5432/reservations"), key
    if environment != "production":
        # The embedded servers of `reservations-tools up` apply when nothing is configured.
        assert not {"DATABASE_URL", "REDIS_URL", "REDIS_HOST"} & set(settings)
