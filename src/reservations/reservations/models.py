from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from reservations.db import Base


class ReservationStatus(enum.StrEnum):
    RESERVED = "RESERVED"
    CANCELLED = "CANCELLED"


class RequestStatus(enum.StrEnum):
    PENDING = "PENDING"
    RESERVED = "RESERVED"
    REJECTED = "REJECTED"


class RejectReason(enum.StrEnum):
    SOLD_OUT = "SOLD_OUT"
    DUPLICATE = "DUPLICATE"
    UNKNOWN_USER = "UNKNOWN_USER"
    UNKNOWN_EVENT = "UNKNOWN_EVENT"


class Reservation(Base):
    __tablename__ = "reservations"
    __table_args__ = (
        # One live reservation per user and event; a cancelled one does not block a new request.
        Index(
            "uq_reservations_event_id_user_id_reserved",
            "event_id",
            "user_id",
            unique=True,
            postgresql_where=text("status = 'RESERVED'"),
        ),
        Index("ix_reservations_event_id_id", "event_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reserved_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)


class ReservationRequest(Base):
    """The final outcome of one accepted reservation request, keyed by its job id.

    Written in the same transaction as the reservation it creates, so the job id doubles as the
    idempotency key: a redelivered message finds its row and changes nothing.
    """

    __tablename__ = "reservation_requests"
    __table_args__ = (
        Index("ix_reservation_requests_event_outcome", "event_id", "status", "reason"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # No foreign keys: a request may name a user or event that does not (or no longer) exist.
    event_id: Mapped[int] = mapped_column(Integer, nullable=False)
    user_id: Mapped[int] = mapped_column(Integer, nullable=False)
    # Arrival order at admission, per event: first come, first served is checkable after the fact.
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reservation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    accepted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
