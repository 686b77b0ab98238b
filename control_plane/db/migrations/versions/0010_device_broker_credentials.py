"""Per-device MQTT broker credentials: the mosquitto password hash and when it was last issued.

Revision ID: 0010_device_broker_credentials
Revises: 0002_fleet
Create Date: 2026-12-06 00:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010_device_broker_credentials'
down_revision: str | Sequence[str] | None = '0002_fleet'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('fleet_devices') as batch:
        batch.add_column(sa.Column('broker_password_hash', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('broker_credentials_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('fleet_devices') as batch:
        batch.drop_column('broker_credentials_at')
        batch.drop_column('broker_password_hash')
