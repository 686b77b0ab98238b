"""Prompt labels record what their last move relied on: the eval run and dataset version the gate judged.

Revision ID: 0080_prompt_label_evidence
Revises: 0004_prompts_evals
Create Date: 2026-12-06 00:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0080_prompt_label_evidence'
down_revision: str | Sequence[str] | None = '0004_prompts_evals'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('prompt_labels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('eval_run_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('dataset_version_id', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('prompt_labels', schema=None) as batch_op:
        batch_op.drop_column('dataset_version_id')
        batch_op.drop_column('eval_run_id')
