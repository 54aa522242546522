"""What the auth handlers run on: SQLAlchemy, argon2, Ed25519 keys, the key-value store."""
