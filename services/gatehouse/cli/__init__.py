"""The `gatehouse` command."""
