"""Signing keys shared by every replica (encrypted private keys, rotation documents).

Revision ID: 0020_signing_keys
Revises: 0001_foundation
Create Date: 2026-12-06 00:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0020_signing_keys'
down_revision: str | Sequence[str] | None = '0001_foundation'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('signing_keys',
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('private_key_encrypted', sa.Text(), nullable=True),
    sa.Column('rotation_document', sa.Text(), nullable=True),
    sa.Column('retire_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_signing_keys')),
    sa.UniqueConstraint('purpose', 'generation', name='uq_signing_keys_purpose_generation')
    )


def downgrade() -> None:
    op.drop_table('signing_keys')
