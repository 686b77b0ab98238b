"""A/B experiments: the pre-registered design and decision of each A/B rollout, and each device's arm.

Revision ID: 0150_fleet_experiments
Revises: 0140_telemetry_shadow
Create Date: 2026-12-06 03:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0150_fleet_experiments'
down_revision: str | Sequence[str] | None = '0140_telemetry_shadow'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('fleet_experiments',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('rollout_id', sa.String(length=40), nullable=False),
    sa.Column('deployment_id', sa.String(length=40), nullable=False),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('selector', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('design', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('winner_arm', sa.Integer(), nullable=True),
    sa.Column('winner_version', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('proposal_id', sa.String(length=40), nullable=True),
    sa.Column('promotion_rollout_id', sa.String(length=40), nullable=True),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['deployment_id'], ['fleet_deployments.id'],
                            name=op.f('fk_fleet_experiments_deployment_id_fleet_deployments')),
    sa.ForeignKeyConstraint(['rollout_id'], ['fleet_rollouts.id'],
                            name=op.f('fk_fleet_experiments_rollout_id_fleet_rollouts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fleet_experiments')),
    sa.UniqueConstraint('rollout_id', name=op.f('uq_fleet_experiments_rollout_id'))
    )
    with op.batch_alter_table('fleet_experiments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fleet_experiments_deployment_id'), ['deployment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_fleet_experiments_state'), ['state'], unique=False)
    op.create_table('fleet_experiment_assignments',
    sa.Column('experiment_id', sa.String(length=40), nullable=False),
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('arm', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('artifact_id', sa.String(length=40), nullable=False),
    sa.Column('bucket', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['fleet_devices.id'],
                            name=op.f('fk_fleet_experiment_assignments_device_id_fleet_devices')),
    sa.ForeignKeyConstraint(['experiment_id'], ['fleet_experiments.id'],
                            name=op.f('fk_fleet_experiment_assignments_experiment_id_fleet_experiments')),
    sa.PrimaryKeyConstraint('experiment_id', 'device_id', name=op.f('pk_fleet_experiment_assignments'))
    )
    with op.batch_alter_table('fleet_experiment_assignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fleet_experiment_assignments_device_id'), ['device_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('fleet_experiment_assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fleet_experiment_assignments_device_id'))
    op.drop_table('fleet_experiment_assignments')
    with op.batch_alter_table('fleet_experiments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fleet_experiments_state'))
        batch_op.drop_index(batch_op.f('ix_fleet_experiments_deployment_id'))
    op.drop_table('fleet_experiments')
