"""Real servers for the whole suite: tests start their own redis-server unless one is configured.

``TEST_REDIS_URL`` points the suite at an existing Redis instead (its database is flushed).

``scripts/test`` runs the suite on two pytest-xdist workers, a file at a time to each
(``--dist loadfile``): a file's module fixtures (a deployment, a cluster) are built once, and
every worker starts its own servers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from brokerq.server import RedisCluster, RedisServer

# The files that take minutes, longest first: they are handed out to the workers first, so that
# none of them is left to run alone at the end while the other worker idles.
LONGEST_FIRST = (
    "tests/tools/test_faults.py",
    "tests/tools/test_cli_loadtest.py",
    "tests/tools/test_faults_failover.py",
    "tests/reservations/reservation/test_cluster_failover.py",
    "tests/brokerq/test_cluster_failover.py",
    "tests/reservations/test_processes_on_cluster.py",
    "tests/reservations/reservation/test_cluster.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath

    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(root).as_posix()
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    # A stable sort: the order within a file, and among the other files, is kept.
    items.sort(key=rank)


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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 primaries, a module's own (its tests may flush it)."""
    with RedisCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running
