from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from reservations.db import Base


class ReservationStatus(enum.StrEnum):
    HELD = "HELD"
    """Won in an event sold with holds: the seat is the holder's until ``expires_at``, unless
    they confirm it (RESERVED) or release it first."""
    RESERVED = "RESERVED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    """A hold that was not confirmed in time; its seat went back on sale."""
    RELEASED = "RELEASED"
    """A hold its holder gave up; its seat went back on sale."""


LIVE_STATUSES = (ReservationStatus.HELD, ReservationStatus.RESERVED)
"""Reservations that take a seat."""


class RequestStatus(enum.StrEnum):
    PENDING = "PENDING"
    RESERVED = "RESERVED"
    HELD = "HELD"
    """Won a seat in an event sold with holds: its reservation is HELD until confirmed,
    released or expired (the reservation's status tells which)."""
    WAITING = "WAITING"
    """In an event's waitlist: gets the next seat that comes back, in arrival order (then HELD
    or RESERVED); not final until then, or until the event ends or closes or the request
    leaves the line (REJECTED with reason EVENT_ENDED, EVENT_CLOSED or LEFT_LINE)."""
    REJECTED = "REJECTED"
    LOST = "LOST"
    """Accepted (202), then lost with the queue's Redis data before it was processed: the
    client must send it again. Recorded when its status URL is first read after the loss."""


class RejectReason(enum.StrEnum):
    SOLD_OUT = "SOLD_OUT"
    DUPLICATE = "DUPLICATE"
    UNKNOWN_USER = "UNKNOWN_USER"
    UNKNOWN_EVENT = "UNKNOWN_EVENT"
    OVER_LIMIT = "OVER_LIMIT"
    """Asked for more seats than the event allows one user (``maxPerUser``)."""
    LEFT_LINE = "LEFT_LINE"
    """Its sender took it out of the waitlist."""
    EVENT_CLOSED = "EVENT_CLOSED"
    """The event was closed (by an operator) before a seat came back for it."""
    EVENT_ENDED = "EVENT_ENDED"
    """The event took place before a seat came back for it."""
    FAILED = "FAILED"
    """Its processing failed on every attempt the queue gives it (the request's ``error`` names
    the error's class); its message stays in the queue's dead letters for inspection."""


class Reservation(Base):
    __tablename__ = "reservations"
    __table_args__ = (
        # One live reservation per user and event; an ended one does not block a new request.
        Index(
            "uq_reservations_event_id_user_id_live",
            "event_id",
            "user_id",
            unique=True,
            postgresql_where=text("status IN ('HELD', 'RESERVED')"),
        ),
        Index("ix_reservations_event_id_id", "event_id", "id"),
        CheckConstraint("quantity >= 1", name="quantity_positive"),
        # The expiry backstop's scan: holds whose timer was lost (see ``settle/holds.py``).
        Index(
            "ix_reservations_held_expires_at",
            "expires_at",
            postgresql_where=text("status = 'HELD'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reserved_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    # When it stopped taking a seat: cancelled, expired or released.
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    # A hold's end unless confirmed before (HELD only; kept afterwards, for the record).
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Seats it takes, all of them until it ends.
    quantity: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")


class ReservationRequest(Base):
    """The final outcome of one accepted reservation request, keyed by its job id.

    Written in the same transaction as the reservation it creates, so the job id doubles as the
    idempotency key: a redelivered message finds its row and changes nothing.
    """

    __tablename__ = "reservation_requests"
    __table_args__ = (
        Index("ix_reservation_requests_event_outcome", "event_id", "status", "reason"),
        # An event's waitlist, in arrival order.
        Index(
            "ix_reservation_requests_waiting",
            "event_id",
            "seq",
            postgresql_where=text("status = 'WAITING'"),
        ),
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
    quantity: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    # The class of the error that failed a FAILED request for good; None for any other outcome.
    error: Mapped[str | None] = mapped_column(String(128), nullable=True)
    accepted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class GateRelease(Base):
    """A seat to hand back to the admission gate: written in the transaction that frees it in
    PostgreSQL (a cancellation), deleted once Redis confirmed the release. Rows left behind by a
    Redis outage are applied by the workers' maintenance pass."""

    __tablename__ = "gate_releases"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(Integer, nullable=False)
    user_id: Mapped[int] = mapped_column(Integer, nullable=False)
    # The request id the gate holds the seat under; None releases whoever holds it.
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class GateCheckpoint(Base):
    """The gate's counters of an event as last seen in Redis, copied every maintenance pass: when
    Redis loses its data, the rebuilt gate goes on counting from here, so the requests lost with
    it still show in the event's outcomes."""

    __tablename__ = "gate_checkpoints"

    event_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    accepted: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class ServiceKey(Base):
    """Secrets every process of a deployment shares, made by the migrations."""

    __tablename__ = "service_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
