"""The tooling's tests use the service tests' real servers."""

from tests.reservations.conftest import database_url, pg_server_url

__all__ = ["database_url", "pg_server_url"]
