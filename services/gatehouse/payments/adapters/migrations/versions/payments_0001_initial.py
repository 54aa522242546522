"""Payments tables: payments and refunds, their changes (WatchPayment replays them) and the
double-entry ledger. First revision of the `payments` chain.

Revision ID: payments_0001
Revises:
Create Date: 2026-11-29 20:40:48.845176
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payments_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("payments",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payments_payments",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("payer", sa.String(length=255), nullable=False),
        sa.Column("creator_user", sa.String(length=255), nullable=False),
        sa.Column("creator_service", sa.String(length=255), nullable=False),
        sa.Column("creator_address", sa.String(length=255), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("method", sa.String(length=24), nullable=False),
        sa.Column("method_info", sa.Text(), nullable=False),
        sa.Column("source_kind", sa.String(length=24), nullable=False),
        sa.Column("source_value", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("provider_reference", sa.String(length=255), nullable=False),
        sa.Column("cancel_reason", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("complete_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processing_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pending_reply", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments_payments")),
    )
    with op.batch_alter_table("payments_payments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payments_payments_create_time_id", ["create_time", "id"], unique=False
        )
        batch_op.create_index(
            "ix_payments_payments_creator_user_create_time_id",
            ["creator_user", "create_time", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_payments_payments_payer_create_time_id",
            ["payer", "create_time", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_payments_payments_status_processing",
            ["status", "processing_started_at"],
            unique=False,
        )

    op.create_table(
        "payments_changes",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("payment_id", sa.String(length=26), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("previous_status", sa.String(length=24), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refund_id", sa.String(length=26), nullable=True),
        sa.Column("snapshot", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments_payments.id"],
            name=op.f("fk_payments_changes_payment_id_payments_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments_changes")),
        sa.UniqueConstraint(
            "payment_id", "sequence", name=op.f("uq_payments_changes_payment_id_sequence")
        ),
    )
    op.create_table(
        "payments_refunds",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("payment_id", sa.String(length=26), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("provider_reference", sa.String(length=255), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=False),
        sa.Column("creator_user", sa.String(length=255), nullable=False),
        sa.Column("creator_service", sa.String(length=255), nullable=False),
        sa.Column("creator_address", sa.String(length=255), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("complete_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pending_reply", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments_payments.id"],
            name=op.f("fk_payments_refunds_payment_id_payments_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments_refunds")),
    )
    with op.batch_alter_table("payments_refunds", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payments_refunds_payment_id"), ["payment_id"], unique=False
        )
        batch_op.create_index(
            "ix_payments_refunds_status_create_time", ["status", "create_time"], unique=False
        )

    op.create_table(
        "payments_ledger_transactions",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("payment_id", sa.String(length=26), nullable=False),
        sa.Column("refund_id", sa.String(length=26), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments_payments.id"],
            name=op.f("fk_payments_ledger_transactions_payment_id_payments_payments"),
        ),
        sa.ForeignKeyConstraint(
            ["refund_id"],
            ["payments_refunds.id"],
            name=op.f("fk_payments_ledger_transactions_refund_id_payments_refunds"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments_ledger_transactions")),
    )
    with op.batch_alter_table("payments_ledger_transactions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payments_ledger_transactions_payment_id"), ["payment_id"], unique=False
        )

    op.create_table(
        "payments_ledger_entries",
        sa.Column("transaction_id", sa.String(length=26), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["payments_ledger_transactions.id"],
            name=op.f("fk_payments_ledger_entries_transaction_id_payments_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("transaction_id", "line", name=op.f("pk_payments_ledger_entries")),
    )
    with op.batch_alter_table("payments_ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payments_ledger_entries_account_currency", ["account", "currency"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payments_ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_ledger_entries_account_currency")

    op.drop_table("payments_ledger_entries")
    with op.batch_alter_table("payments_ledger_transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_ledger_transactions_payment_id"))

    op.drop_table("payments_ledger_transactions")
    with op.batch_alter_table("payments_refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_refunds_status_create_time")
        batch_op.drop_index(batch_op.f("ix_payments_refunds_payment_id"))

    op.drop_table("payments_refunds")
    op.drop_table("payments_changes")
    with op.batch_alter_table("payments_payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_payments_status_processing")
        batch_op.drop_index("ix_payments_payments_payer_create_time_id")
        batch_op.drop_index("ix_payments_payments_creator_user_create_time_id")
        batch_op.drop_index("ix_payments_payments_create_time_id")

    op.drop_table("payments_payments")
