"""Local PostgreSQL and Redis servers in a data folder, for ``up``, the fault harness and tests."""
