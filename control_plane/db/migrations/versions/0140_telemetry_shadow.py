"""Shadow sketches of telemetry windows: a staged candidate's agreement, latency and errors beside the active model.

Revision ID: 0140_telemetry_shadow
Revises: 0130_fleet_cutovers
Create Date: 2026-12-06 03:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0140_telemetry_shadow'
down_revision: str | Sequence[str] | None = '0130_fleet_cutovers'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('telemetry_shadow_windows',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('window_seq', sa.BigInteger(), nullable=False),
    sa.Column('rollout_id', sa.String(length=40), nullable=False),
    sa.Column('device_group', sa.String(length=100), nullable=True),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('candidate_name', sa.String(length=200), nullable=False),
    sa.Column('candidate_version', sa.Integer(), nullable=False),
    sa.Column('candidate_sha256', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=True),
    sa.Column('window_start', sa.Float(), nullable=False),
    sa.Column('window_end', sa.Float(), nullable=False),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.Column('sample_rate', sa.Float(), nullable=False),
    sa.Column('max_latency_ms', sa.Float(), nullable=False),
    sa.Column('samples', sa.BigInteger(), nullable=False),
    sa.Column('rows', sa.BigInteger(), nullable=False),
    sa.Column('agree', sa.BigInteger(), nullable=False),
    sa.Column('errors', sa.BigInteger(), nullable=False),
    sa.Column('dropped', sa.BigInteger(), nullable=False),
    sa.Column('labels', sa.Text(), nullable=False),
    sa.Column('latency', sa.Text(), nullable=False),
    sa.Column('active_latency', sa.Text(), nullable=False),
    sa.Column('error_counts', sa.Text(), nullable=True),
    sa.Column('stopped', sa.String(length=40), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_telemetry_shadow_windows')),
    sa.UniqueConstraint('device_id', 'window_seq', name='uq_telemetry_shadow_windows_device_seq')
    )
    with op.batch_alter_table('telemetry_shadow_windows', schema=None) as batch_op:
        batch_op.create_index('ix_telemetry_shadow_windows_rollout_time', ['rollout_id', 'window_start'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('telemetry_shadow_windows', schema=None) as batch_op:
        batch_op.drop_index('ix_telemetry_shadow_windows_rollout_time')
    op.drop_table('telemetry_shadow_windows')
