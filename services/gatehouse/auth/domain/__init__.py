"""The auth domain: pure rules about accounts, passwords, roles, sessions, lockout and TOTP.

No I/O, no protobuf, no SQL: handlers feed it values and persist what it decides.
"""
