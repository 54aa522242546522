"""Messages shared by every Gatehouse API (generated from proto/gatehouse/common)."""
