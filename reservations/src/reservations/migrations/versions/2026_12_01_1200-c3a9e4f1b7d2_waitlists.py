"""waitlists: events whose sold-out requests wait in line for a seat that comes back; closing

Revision ID: c3a9e4f1b7d2
Revises: 5e7d2b9c4a10
Create Date: 2026-12-01 12:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c3a9e4f1b7d2"
down_revision: str | None = "5e7d2b9c4a10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default is stored in the catalogue (PostgreSQL 11+): no row is rewritten.
    op.add_column(
        "events",
        sa.Column("waitlist", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("events", sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_reservation_requests_waiting",
        "reservation_requests",
        ["event_id", "seq"],
        postgresql_where=sa.text("status = 'WAITING'"),
    )


def downgrade() -> None:
    # Without waitlists, a waiting request is one the sale refused.
    op.execute(
        "UPDATE reservation_requests SET status = 'REJECTED', reason = 'SOLD_OUT', "
        "processed_at = now() WHERE status = 'WAITING'"
    )
    op.drop_index(
        "ix_reservation_requests_waiting",
        table_name="reservation_requests",
        postgresql_where=sa.text("status = 'WAITING'"),
    )
    op.drop_column("events", "closed_at")
    op.drop_column("events", "waitlist")
