from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, LargeBinary, SmallInteger, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from reservations.db import Base

__all__ = ["IdempotencyKey"]


class IdempotencyKey(Base):
    """One ``Idempotency-Key`` a client sent with a POST, and the answer to replay for it.

    ``scope`` is a digest of the request's ``Authorization`` header (empty without one), so that
    an answer is replayed only to a caller presenting the same credentials; ``fingerprint`` is a
    digest of the request itself (method, path, query, body). ``status`` is null while the first
    request runs; ``lease_id`` and ``locked_until`` say which API process runs it and until when
    it is presumed alive (it renews the lease while it runs).
    """

    __tablename__ = "idempotency_keys"
    # The cleanup deletes by age.
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    scope: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    lease_id: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    headers: Mapped[list[list[str]] | None] = mapped_column(JSONB, nullable=True)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
