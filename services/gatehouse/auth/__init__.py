"""The auth service: accounts, sessions, tokens, TOTP, roles and the security audit trail."""
