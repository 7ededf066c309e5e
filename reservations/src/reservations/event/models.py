from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, Identity, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from reservations.db import Base, Timestamps


class Event(Timestamps, Base):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint("max_tickets >= 0", name="max_tickets_not_negative"),
        # The last line of defence against overselling, whatever the code above it does.
        CheckConstraint(
            "reserved >= 0 AND reserved <= max_tickets", name="reserved_within_capacity"
        ),
        CheckConstraint(
            "hold_seconds IS NULL OR hold_seconds BETWEEN 1 AND 86400", name="hold_seconds_range"
        ),
        CheckConstraint("max_per_user BETWEEN 1 AND 100", name="max_per_user_range"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    date: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    location: Mapped[str] = mapped_column(String(200), nullable=False)
    max_tickets: Mapped[int] = mapped_column(Integer, nullable=False)
    # Seats taken by HELD and RESERVED reservations, kept in the same transaction as every change
    # of a reservation's status.
    reserved: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # Sold with holds: a won request holds its seat this long, until confirmed; None: the seed's
    # sale, a won request is RESERVED at once.
    hold_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The most seats one user may hold (one reservation per user, of up to this many seats).
    max_per_user: Mapped[int] = mapped_column(
        Integer, nullable=False, default=1, server_default="1"
    )
    # Requests that find it sold out wait in line (WAITING) for a seat that comes back.
    waitlist: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    # Closed by an operator: no more sales; its waiting requests end EVENT_CLOSED.
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
