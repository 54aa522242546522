"""Use cases of the auth service: one plain async function per RPC, over a unit of work."""
