"""What runs around the reservation service, apart from it.

``up`` (the whole service on one machine, with embedded PostgreSQL and Redis), ``status``,
``loadtest`` and the fault harness ``faults``; ``servers`` starts the embedded PostgreSQL (Redis
comes from ``brokerq.server``). The service never imports this package.
"""
