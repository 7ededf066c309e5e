"""Real servers for the whole suite: tests start their own redis-server unless one is configured.

``TEST_REDIS_URL`` points the suite at an existing Redis instead (its database is flushed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from brokerq.server import RedisServer


class ExternalRedis:
    def __init__(self, url: str) -> None:
        self.url = url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | ExternalRedis]:
    configured = os.environ.get("TEST_REDIS_URL")
    if configured:
        yield ExternalRedis(configured)
        return
    with RedisServer(Path(tmp_path_factory.mktemp("redis"))) as server:
        yield server
