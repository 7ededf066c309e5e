"""Redis Cluster with replicas: a primary's failure and its replica taking over, on six real
nodes (three primaries, a replica each) that fail over within about two seconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from brokerq.server import RedisCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(
        tmp_path_factory.mktemp("cluster"), replicas=1, node_timeout_ms=1000
    ) as running:
        yield running


@pytest.fixture
def whole(cluster: RedisCluster) -> RedisCluster:
    """The cluster with all six nodes running and in sync: a node an earlier test killed is
    started again and rejoins as a replica of the node that took its place."""
    for node in cluster.nodes:
        if node.process is None:
            node.start_sync()
    cluster.wait_ready_sync()
    return cluster


def test_a_killed_primary_is_replaced_by_its_replica(whole: RedisCluster) -> None:
    primary = whole.primary_for("{killed}")
    replica = whole.replica_of(primary)
    assert primary in whole.nodes and replica in whole.nodes and replica is not primary
    primary.kill()
    whole.wait_failover_sync(replica)
    assert whole.primary_for("{killed}") is replica
    primary.start_sync()
    whole.wait_ready_sync()
    assert whole.replica_of(replica) is primary, "the old primary came back as a replica"


def test_replicas_is_0_or_1(tmp_path_factory: pytest.TempPathFactory) -> None:
    with pytest.raises(ValueError, match="replicas"):
        RedisCluster(tmp_path_factory.mktemp("never"), replicas=2)
