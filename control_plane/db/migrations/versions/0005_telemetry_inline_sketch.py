"""Keep telemetry window rows inline and uncompressed on PostgreSQL (toast_tuple_target = 8160).

A window row is ~2.1 KB (the sparse sketch JSON is ~2 KB), just over the default 2 KB TOAST threshold, so
PostgreSQL compressed every sketch with pglz and moved it to the TOAST table: about half of the server's
CPU per inserted window (measured ~100 -> ~55 us per window, batches of 500). Rows up to 8 KB now stay in
the heap as they are. SQLite has no such setting; there this migration does nothing.

Revision ID: 0005_telemetry_inline_sketch
Revises: 0003_telemetry
Create Date: 2026-11-22 07:25:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0005_telemetry_inline_sketch'
down_revision: str | Sequence[str] | None = '0003_telemetry'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Applies to rows written from now on; existing rows keep their storage until rewritten.
        op.execute("ALTER TABLE telemetry_windows SET (toast_tuple_target = 8160)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE telemetry_windows RESET (toast_tuple_target)")
