"""holds: events sold with a hold time, HELD reservations that expire unless confirmed

Revision ID: 5e7d2b9c4a10
Revises: 9d3b6f0e1a27
Create Date: 2026-12-01 11:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e7d2b9c4a10"
down_revision: str | None = "9d3b6f0e1a27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns without defaults: adding them rewrites no row.
    op.add_column("events", sa.Column("hold_seconds", sa.Integer(), nullable=True))
    op.create_check_constraint(
        op.f("ck_events_hold_seconds_range"),
        "events",
        "hold_seconds IS NULL OR hold_seconds BETWEEN 1 AND 86400",
    )
    op.add_column(
        "reservations", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "reservations", sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True)
    )
    # A HELD reservation takes the user's place as a RESERVED one does: the new index is built
    # before the old one goes, so that no moment is without one.
    op.create_index(
        "uq_reservations_event_id_user_id_live",
        "reservations",
        ["event_id", "user_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('HELD', 'RESERVED')"),
    )
    op.drop_index(
        "uq_reservations_event_id_user_id_reserved",
        table_name="reservations",
        postgresql_where=sa.text("status = 'RESERVED'"),
    )
    op.create_index(
        "ix_reservations_held_expires_at",
        "reservations",
        ["expires_at"],
        postgresql_where=sa.text("status = 'HELD'"),
    )


def downgrade() -> None:
    # Holds cannot be expressed without these columns: they end as cancellations.
    op.execute(
        "UPDATE events e SET reserved = e.reserved - h.n FROM "
        "(SELECT event_id, count(*) AS n FROM reservations WHERE status = 'HELD' "
        "GROUP BY event_id) h WHERE e.id = h.event_id"
    )
    op.execute(
        "UPDATE reservations SET status = 'CANCELLED', cancelled_at = now() WHERE status = 'HELD'"
    )
    op.execute(
        "UPDATE reservations SET status = 'CANCELLED' WHERE status IN ('EXPIRED', 'RELEASED')"
    )
    op.drop_index(
        "ix_reservations_held_expires_at",
        table_name="reservations",
        postgresql_where=sa.text("status = 'HELD'"),
    )
    op.create_index(
        "uq_reservations_event_id_user_id_reserved",
        "reservations",
        ["event_id", "user_id"],
        unique=True,
        postgresql_where=sa.text("status = 'RESERVED'"),
    )
    op.drop_index(
        "uq_reservations_event_id_user_id_live",
        table_name="reservations",
        postgresql_where=sa.text("status IN ('HELD', 'RESERVED')"),
    )
    op.drop_column("reservations", "confirmed_at")
    op.drop_column("reservations", "expires_at")
    op.drop_constraint(op.f("ck_events_hold_seconds_range"), "events", type_="check")
    op.drop_column("events", "hold_seconds")
