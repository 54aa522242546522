"""The payments service: payments, their lifecycle, refunds, the provider adapter and the ledger."""
