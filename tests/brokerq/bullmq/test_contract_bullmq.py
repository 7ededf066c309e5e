"""The brokerq contract tests that hold on BullMQ's semantics, run on BullMQAdapter.

Imported from tests/brokerq/test_contract.py and tests/brokerq/test_batch.py (the batch consumer)
and run here with this folder's ``queue`` fixture.
The ones left out, and why, are listed in ``DIFFERENT`` (and in docs/bullmq.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from brokerq import BrokerQueue
from brokerq.bullmq import BullMQAdapter
from tests.brokerq import test_batch as batch
from tests.brokerq import test_contract as contract

DIFFERENT = {
    "test_a_consumer_that_stops_renewing_loses_the_message_to_another": (
        "BullMQ does not count a stall as an attempt (tries stays attemptsMade + 1; the stall "
        "counter fails the job after max_stalled_count stalls): tested in test_interop.py"
    ),
    "test_a_renewal_never_takes_back_a_reclaimed_message": "the same: tries after a stall",
    "test_priority_orders_waiting_messages_then_first_in_first_out": (
        "BullMQ serves jobs without a priority (our 0) before every prioritized job; the order "
        "among non-zero priorities holds: tested in test_interop.py"
    ),
}

for _module in (contract, batch):
    for _name in dir(_module):
        if _name.startswith("test_") and _name not in DIFFERENT:
            globals()[_name] = getattr(_module, _name)


@pytest.fixture
async def queue(redis_server) -> AsyncIterator[BrokerQueue]:
    q = BrokerQueue(BullMQAdapter(redis_server.url))
    yield q
    await q.close()
