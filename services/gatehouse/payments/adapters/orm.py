"""The payments tables (Alembic chain `payments`, `migrations/versions/payments_*`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gatehouse.runtime.db import new_registry

PAYMENTS_VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"

ID = 26  # a ULID
NAME = 255  # resource names, accounts, provider references
STATUS = 24


class PaymentsBase(DeclarativeBase):
    registry = new_registry()


class PaymentRow(PaymentsBase):
    __tablename__ = "payments_payments"
    __table_args__ = (
        # ListPayments is keyset-paginated on (create_time, id), scoped by payer or creator.
        Index("ix_payments_payments_create_time_id", "create_time", "id"),
        Index("ix_payments_payments_payer_create_time_id", "payer", "create_time", "id"),
        Index(
            "ix_payments_payments_creator_user_create_time_id",
            "creator_user",
            "create_time",
            "id",
        ),
        # The reconciler's question: PROCESSING since before a cutoff.
        Index("ix_payments_payments_status_processing", "status", "processing_started_at"),
    )

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    payer: Mapped[str] = mapped_column(String(NAME))
    creator_user: Mapped[str] = mapped_column(String(NAME))
    creator_service: Mapped[str] = mapped_column(String(NAME))
    creator_address: Mapped[str] = mapped_column(String(NAME))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    refunded_minor: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(STATUS))
    method: Mapped[str] = mapped_column(String(STATUS))
    method_info: Mapped[str] = mapped_column(Text)  # JSON of the displayable details
    # The input-only secret for the provider (card token, test card, IBAN, wallet token).
    source_kind: Mapped[str] = mapped_column(String(STATUS))
    source_value: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    metadata_json: Mapped[str] = mapped_column(Text)
    failure_code: Mapped[str] = mapped_column(String(64))
    failure_reason: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(String(64))
    provider_reference: Mapped[str] = mapped_column(String(NAME))
    cancel_reason: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime]
    update_time: Mapped[datetime]
    complete_time: Mapped[datetime | None]
    processing_started_at: Mapped[datetime | None]
    pending_reply: Mapped[str] = mapped_column(Text)


class RefundRow(PaymentsBase):
    __tablename__ = "payments_refunds"
    __table_args__ = (Index("ix_payments_refunds_status_create_time", "status", "create_time"),)

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    payment_id: Mapped[str] = mapped_column(
        String(ID), ForeignKey("payments_payments.id"), index=True
    )
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(STATUS))
    provider_reference: Mapped[str] = mapped_column(String(NAME))
    failure_code: Mapped[str] = mapped_column(String(64))
    failure_reason: Mapped[str] = mapped_column(Text)
    creator_user: Mapped[str] = mapped_column(String(NAME))
    creator_service: Mapped[str] = mapped_column(String(NAME))
    creator_address: Mapped[str] = mapped_column(String(NAME))
    create_time: Mapped[datetime]
    complete_time: Mapped[datetime | None]
    pending_reply: Mapped[str] = mapped_column(Text)


class ChangeRow(PaymentsBase):
    """What WatchPayment replays: each change of a payment with the payment as of then."""

    __tablename__ = "payments_changes"
    __table_args__ = (UniqueConstraint("payment_id", "sequence"),)

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(ID), ForeignKey("payments_payments.id"))
    sequence: Mapped[int] = mapped_column(Integer)
    previous_status: Mapped[str | None] = mapped_column(String(STATUS))
    status: Mapped[str] = mapped_column(String(STATUS))
    time: Mapped[datetime]
    refund_id: Mapped[str | None] = mapped_column(String(ID))
    snapshot: Mapped[str] = mapped_column(Text)  # JSON (adapters.snapshots)


class LedgerTransactionRow(PaymentsBase):
    __tablename__ = "payments_ledger_transactions"

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    kind: Mapped[str] = mapped_column(String(STATUS))
    payment_id: Mapped[str] = mapped_column(
        String(ID), ForeignKey("payments_payments.id"), index=True
    )
    refund_id: Mapped[str | None] = mapped_column(String(ID), ForeignKey("payments_refunds.id"))
    currency: Mapped[str] = mapped_column(String(3))
    time: Mapped[datetime]


class LedgerEntryRow(PaymentsBase):
    __tablename__ = "payments_ledger_entries"
    __table_args__ = (Index("ix_payments_ledger_entries_account_currency", "account", "currency"),)

    transaction_id: Mapped[str] = mapped_column(
        String(ID), ForeignKey("payments_ledger_transactions.id"), primary_key=True
    )
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(NAME))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
