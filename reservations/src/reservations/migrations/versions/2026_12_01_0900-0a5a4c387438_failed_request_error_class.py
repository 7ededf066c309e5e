"""the error class of requests that failed for good (reason FAILED)

Revision ID: 0a5a4c387438
Revises: 7c1e5a9d2f40
Create Date: 2026-12-01 09:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0a5a4c387438"
down_revision: str | None = "7c1e5a9d2f40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, without a default: adding it rewrites no row and holds the table's lock briefly.
    op.add_column("reservation_requests", sa.Column("error", sa.String(length=128), nullable=True))


def downgrade() -> None:
    op.drop_column("reservation_requests", "error")
