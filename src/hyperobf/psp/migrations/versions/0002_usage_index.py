"""Covering index for the limit counts: (account_id, issued_at, retired_at).

The per-account usage query counts an account's un-retired nets and its nets in the window.
With only (account_id, issued_at) indexed, reading retired_at meant reading each row, and on
SQLite a row's columns after the model file (~60 KB and more) sit behind its overflow pages:
the count cost grew with the account's whole history (2.6 ms per query after ~3,000 nets of a
load test). The new index answers both counts by itself and replaces the old one (its prefix).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_masknets_account_usage", "masknets", ["account_id", "issued_at", "retired_at"])
    op.drop_index("ix_masknets_account_issued", table_name="masknets")


def downgrade() -> None:
    op.create_index("ix_masknets_account_issued", "masknets", ["account_id", "issued_at"])
    op.drop_index("ix_masknets_account_usage", table_name="masknets")
