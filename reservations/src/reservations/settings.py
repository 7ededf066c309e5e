"""Service settings, read from the environment and from ``environments/.env.<ENVIRONMENT>``.

The variable names are the seed's (``SERVICE_PORT``, ``ENVIRONMENT``, ``DATABASE_URL``,
``REDIS_HOST``, ``REDIS_PORT``, ``REDIS_PASSWORD``); real environment variables win over the file.
Anything that can hold a password is a ``SecretStr`` so that printing the settings never leaks it.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .middleware.rate_limit import RateLimit, parse_rate

__all__ = ["RETENTION_MIN_DAYS", "Settings", "env_file_for"]

# A request's message can come back to a worker up to 15 minutes after its outcome was written
# (the queue's retries and leases: ``settle.recovery.DELIVERED_HOLD_MS``); its row must still be
# there then, or it would be decided a second time.
RETENTION_MIN_DAYS = 15 / (24 * 60)


def env_file_for(environment: str) -> Path:
    """The settings file of an environment, relative to the current directory (it may not exist)."""
    return Path("environments") / f".env.{environment}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
    )

    environment: str = Field(default="development", validation_alias="ENVIRONMENT")
    service_port: int = Field(default=8080, validation_alias="SERVICE_PORT", ge=1, le=65535)
    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    redis_url: SecretStr | None = Field(default=None, validation_alias="REDIS_URL")
    redis_host: str = Field(default="127.0.0.1", validation_alias="REDIS_HOST")
    redis_port: int = Field(default=6379, validation_alias="REDIS_PORT", ge=1, le=65535)
    redis_password: SecretStr | None = Field(default=None, validation_alias="REDIS_PASSWORD")
    workers: int = Field(default=3, validation_alias="WORKERS", ge=1)
    # brokerq runs at most 1,000 handlers per consumer.
    worker_concurrency: int = Field(
        default=64, validation_alias="WORKER_CONCURRENCY", ge=1, le=1000
    )
    admin_token: SecretStr | None = Field(
        default=None,
        validation_alias="ADMIN_TOKEN",
        description="bearer token for creating events, cancelling, the dashboard and /metrics; "
        "unset refuses them",
    )
    reservation_rate_limit: str | None = Field(
        default=None,
        validation_alias="RESERVATION_RATE_LIMIT",
        description="per-client limit on reservation POSTs, e.g. '20/s' or '600/min'; unset: none",
    )
    reservation_rate_limit_scope: Literal["shared", "process"] = Field(
        default="shared",
        validation_alias="RESERVATION_RATE_LIMIT_SCOPE",
        description="'shared': the limit is kept in Redis and holds across every API process; "
        "'process': each API process keeps its own (no Redis round trip; N processes let a "
        "client through N times the rate)",
    )
    reservation_rate_burst: int | None = Field(
        default=None,
        validation_alias="RESERVATION_RATE_BURST",
        ge=1,
        description="requests a client may send at once before the rate applies (default: the "
        "rate's count)",
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        validation_alias="MAX_BODY_BYTES",
        ge=1,
        le=100 * 1024 * 1024,
        description="largest request body the API reads; a larger one is answered 413 unread",
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        validation_alias="MAX_HEADER_BYTES",
        ge=1024,
        description="largest request head (request line and headers) the API reads; a larger "
        "one is answered 431 (414 when the URL is most of it) and the connection closed",
    )
    request_head_timeout_s: float = Field(
        default=10.0,
        validation_alias="REQUEST_HEAD_TIMEOUT",
        gt=0,
        description="seconds a request head may take to arrive (the first request's from the "
        "connection's start); then the connection is closed",
    )
    request_body_timeout_s: float = Field(
        default=30.0,
        validation_alias="REQUEST_BODY_TIMEOUT",
        gt=0,
        description="seconds a request body may take to arrive after its head; then the "
        "connection is closed",
    )
    keep_alive_timeout_s: float = Field(
        default=5.0,
        validation_alias="KEEP_ALIVE_TIMEOUT",
        gt=0,
        description="seconds an idle keep-alive connection is kept after a response",
    )
    max_connections: int = Field(
        default=2048,
        validation_alias="MAX_CONNECTIONS",
        ge=1,
        description="open connections per API process; a new one past it is answered 503",
    )
    forwarded_allow_ips: str = Field(
        default="",
        validation_alias="FORWARDED_ALLOW_IPS",
        description="comma-separated addresses or networks of the proxies whose "
        "X-Forwarded-For names the client; unset: none trusted",
    )
    data_dir: str = Field(default="data", validation_alias="DATA_DIR")
    log_format: Literal["json", "console", "auto"] = Field(
        default="auto", validation_alias="LOG_FORMAT"
    )
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    otel_enabled: bool = Field(default=False, validation_alias="OTEL_ENABLED")
    # PostgreSQL's own default max_connections is 100.
    db_pool_size: int = Field(default=10, validation_alias="DB_POOL_SIZE", ge=1, le=1000)
    worker_metrics_port: int | None = Field(
        default=None,
        validation_alias="WORKER_METRICS_PORT",
        ge=1,
        le=65000,
        description="`up` gives worker i (from 0) its own metrics port: this plus i",
    )
    maintenance_interval_s: float = Field(
        default=5.0,
        validation_alias="MAINTENANCE_INTERVAL",
        gt=0,
        le=3600,
        description="seconds between the workers' maintenance passes: the admission gate "
        "converges to PostgreSQL within one pass of Redis answering",
    )
    reservation_retention_days: float = Field(
        default=30.0,
        validation_alias="RESERVATION_RETENTION_DAYS",
        ge=RETENTION_MIN_DAYS,
        le=36_500,
        description="days after an event took place that its outcomes (request rows, "
        "reservations, failed requests' dead letters) are kept; then the workers delete them. "
        "At least 15 minutes (0.0105 days), the longest a request's message can come back",
    )
    retention_interval_s: float = Field(
        default=60.0,
        validation_alias="RETENTION_INTERVAL",
        gt=0,
        le=86_400,
        description="seconds between the workers' retention passes: the gates of events that "
        "took place are dropped from Redis, outcomes past RESERVATION_RETENTION_DAYS deleted",
    )
    redis_socket_timeout_s: float = Field(
        default=15.0,
        validation_alias="REDIS_SOCKET_TIMEOUT",
        gt=0,
        le=600,
        description="seconds a Redis call may wait for its reply before it fails",
    )
    redis_replicas_ack: int = Field(
        default=0,
        validation_alias="REDIS_REPLICAS_ACK",
        ge=0,
        le=16,
        description="answer 202 only once this many Redis replicas hold the queued request "
        "(Redis's WAIT), so that a failover to a replica cannot take back an accepted request; 0: "
        "do not wait (replication stays asynchronous). Not with QUEUE_ENGINE=bullmq",
    )
    redis_replicas_ack_timeout_ms: int = Field(
        default=500,
        validation_alias="REDIS_REPLICAS_ACK_TIMEOUT_MS",
        ge=1,
        le=60_000,
        description="how long a request waits for REDIS_REPLICAS_ACK replicas before it is "
        "answered 503",
    )
    queue_engine: Literal["redis", "bullmq"] = Field(
        default="redis",
        validation_alias="QUEUE_ENGINE",
        description="'bullmq' keeps the reservation queue in BullMQ's layout, shared with the "
        "seed's NestJS services",
    )
    reservation_channel_shards: int = Field(
        default=1,
        validation_alias="RESERVATION_CHANNEL_SHARDS",
        ge=1,
        le=128,
        description="shards of the reservation channel (brokerq's shards=), partitioned by event "
        "id so that each event's requests keep their order; on Redis Cluster each shard can be "
        "on a primary of its own. The API and every worker must use the same number; change it "
        "only with the channel drained. Not with QUEUE_ENGINE=bullmq",
    )

    @model_validator(mode="after")
    def _rate_limit_parses(self) -> Settings:
        # At start-up, not at the first request.
        self.rate_limit()
        self.trusted_proxies()
        if self.redis_replicas_ack and self.queue_engine == "bullmq":
            raise ValueError("REDIS_REPLICAS_ACK works with QUEUE_ENGINE=redis only")
        if self.reservation_channel_shards > 1 and self.queue_engine == "bullmq":
            # BullMQ's workers (the seed's services) know one queue, not shards of it.
            raise ValueError("RESERVATION_CHANNEL_SHARDS works with QUEUE_ENGINE=redis only")
        return self

    def trusted_proxies(self) -> list[str]:
        """``FORWARDED_ALLOW_IPS`` as a list of addresses and networks (``*``: any peer)."""
        entries = [e.strip() for e in self.forwarded_allow_ips.split(",") if e.strip()]
        for entry in entries:
            if entry == "*":
                continue
            try:
                ipaddress.ip_network(entry)
            except ValueError:
                raise ValueError(
                    f"FORWARDED_ALLOW_IPS entry {entry!r} is not an IP address or network, "
                    "e.g. '10.0.0.5' or '10.0.0.0/24'"
                ) from None
        return entries

    def rate_limit(self) -> RateLimit | None:
        """The parsed ``RESERVATION_RATE_LIMIT``, or None when there is no limit."""
        if not self.reservation_rate_limit:
            return None
        return parse_rate(self.reservation_rate_limit, self.reservation_rate_burst)

    def __init__(self, **values: Any) -> None:
        # The environment variable picks the file, so it is read before pydantic-settings loads it.
        if "_env_file" not in values:
            environment = values.get("environment") or os.environ.get("ENVIRONMENT", "development")
            values["_env_file"] = env_file_for(str(environment))
        super().__init__(**values)

    @property
    def effective_redis_url(self) -> str:
        """``REDIS_URL`` if set, else one from ``REDIS_HOST``, ``REDIS_PORT``, the password."""
        if self.redis_url is not None and self.redis_url.get_secret_value():
            return self.redis_url.get_secret_value()
        password = self.redis_password.get_secret_value() if self.redis_password else ""
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/0"

    @property
    def effective_database_url(self) -> str | None:
        """``DATABASE_URL`` in the SQLAlchemy asyncpg spelling, or None when not configured."""
        if self.database_url is None or not self.database_url.get_secret_value():
            return None
        from .db import async_database_url

        return async_database_url(self.database_url.get_secret_value())

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.reservation_retention_days)

    @property
    def json_logs(self) -> bool:
        if self.log_format == "auto":
            return self.environment not in {"development", "dev", "local", "test"}
        return self.log_format == "json"
