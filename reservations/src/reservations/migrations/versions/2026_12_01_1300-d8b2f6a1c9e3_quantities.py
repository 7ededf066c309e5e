"""quantities: several seats per request, a per-user limit per event

Revision ID: d8b2f6a1c9e3
Revises: c3a9e4f1b7d2
Create Date: 2026-12-01 13:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d8b2f6a1c9e3"
down_revision: str | None = "c3a9e4f1b7d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults are stored in the catalogue: no row is rewritten.
    op.add_column(
        "events", sa.Column("max_per_user", sa.Integer(), server_default="1", nullable=False)
    )
    op.create_check_constraint(
        op.f("ck_events_max_per_user_range"), "events", "max_per_user BETWEEN 1 AND 100"
    )
    op.add_column(
        "reservations", sa.Column("quantity", sa.Integer(), server_default="1", nullable=False)
    )
    op.create_check_constraint(
        op.f("ck_reservations_quantity_positive"), "reservations", "quantity >= 1"
    )
    op.add_column(
        "reservation_requests",
        sa.Column("quantity", sa.Integer(), server_default="1", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("reservation_requests", "quantity")
    op.drop_constraint(op.f("ck_reservations_quantity_positive"), "reservations", type_="check")
    op.drop_column("reservations", "quantity")
    op.drop_constraint(op.f("ck_events_max_per_user_range"), "events", type_="check")
    op.drop_column("events", "max_per_user")
