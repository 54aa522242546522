"""Adapters of the payments service: SQLAlchemy storage, the sandbox provider, snapshots."""
