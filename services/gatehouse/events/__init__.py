"""The event envelope (generated from proto/gatehouse/events)."""
