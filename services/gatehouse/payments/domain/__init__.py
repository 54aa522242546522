"""The payments domain: money, the payment lifecycle, refunds and the double-entry ledger.

Pure Python: no I/O, no protobuf, no database. Rules raise the runtime's domain errors
(`gatehouse.runtime.errors`) with the reasons the contract documents.
"""
