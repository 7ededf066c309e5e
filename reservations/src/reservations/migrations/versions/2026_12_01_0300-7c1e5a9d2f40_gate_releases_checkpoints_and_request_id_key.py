"""gate releases outbox, gate checkpoints and the request id key

Revision ID: 7c1e5a9d2f40
Revises: 4b22cddcde49
Create Date: 2026-12-01 03:00:00.000000+00:00
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c1e5a9d2f40"
down_revision: str | None = "4b22cddcde49"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gate_releases",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_releases")),
    )
    op.create_table(
        "gate_checkpoints",
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_gate_checkpoints")),
    )
    table = op.create_table(
        "service_keys",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_keys")),
    )
    # Made here, once per database, so that every API process signs request ids alike.
    op.bulk_insert(table, [{"name": "request_id", "value": secrets.token_bytes(32)}])


def downgrade() -> None:
    op.drop_table("service_keys")
    op.drop_table("gate_checkpoints")
    op.drop_table("gate_releases")
