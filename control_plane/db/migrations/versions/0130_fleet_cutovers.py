"""Blue-green cut-over commands: one signed, retained command per rollout and sequence, published by the bridge.

Revision ID: 0130_fleet_cutovers
Revises: 0010_device_broker_credentials
Create Date: 2026-12-06 01:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0130_fleet_cutovers'
down_revision: str | Sequence[str] | None = '0010_device_broker_credentials'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('fleet_cutovers',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('rollout_id', sa.String(length=40), nullable=False),
    sa.Column('sequence', sa.BigInteger(), nullable=False),
    sa.Column('direction', sa.String(length=10), nullable=False),
    sa.Column('target_sha256', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('envelope', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['rollout_id'], ['fleet_rollouts.id'], name=op.f('fk_fleet_cutovers_rollout_id_fleet_rollouts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fleet_cutovers')),
    sa.UniqueConstraint('rollout_id', 'sequence', name='uq_fleet_cutovers_rollout_sequence')
    )
    with op.batch_alter_table('fleet_cutovers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fleet_cutovers_published_at'), ['published_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_fleet_cutovers_rollout_id'), ['rollout_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('fleet_cutovers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fleet_cutovers_rollout_id'))
        batch_op.drop_index(batch_op.f('ix_fleet_cutovers_published_at'))
    op.drop_table('fleet_cutovers')
