"""Training jobs (one per approved retraining request) and the labelled feature rows they learn from.

Revision ID: 0170_training_jobs
Revises: 0150_fleet_experiments
Create Date: 2026-12-06 03:06:18.626930
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0170_training_jobs'
down_revision: str | Sequence[str] | None = '0150_fleet_experiments'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('training_jobs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('retrain_request_id', sa.String(length=40), nullable=True),
    sa.Column('incident_id', sa.String(length=40), nullable=True),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cohort', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('outcome', sa.String(length=40), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('claim_token', sa.String(length=40), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('challenger_version', sa.Integer(), nullable=True),
    sa.Column('challenger_version_id', sa.String(length=40), nullable=True),
    sa.Column('proposal_id', sa.String(length=40), nullable=True),
    sa.Column('data', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('comparison', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('timings', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_jobs')),
    sa.UniqueConstraint('retrain_request_id', name=op.f('uq_training_jobs_retrain_request_id'))
    )
    with op.batch_alter_table('training_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_training_jobs_incident_id'), ['incident_id'], unique=False)
        batch_op.create_index('ix_training_jobs_state_created', ['state', 'created_at'], unique=False)

    op.create_table('training_samples',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('device_id', sa.String(length=200), nullable=False),
    sa.Column('window_seq', sa.BigInteger(), nullable=False),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('device_group', sa.String(length=100), nullable=True),
    sa.Column('window_start', sa.Float(), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('features', sa.Text(), nullable=False),
    sa.Column('labels', sa.Text(), nullable=False),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_samples')),
    sa.UniqueConstraint('device_id', 'window_seq', name='uq_training_samples_device_seq')
    )
    with op.batch_alter_table('training_samples', schema=None) as batch_op:
        batch_op.create_index('ix_training_samples_model_time', ['model_name', 'window_start'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('training_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_training_samples_model_time')

    op.drop_table('training_samples')
    with op.batch_alter_table('training_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_training_jobs_state_created')
        batch_op.drop_index(batch_op.f('ix_training_jobs_incident_id'))

    op.drop_table('training_jobs')
