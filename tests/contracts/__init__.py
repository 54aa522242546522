"""Behaviour every implementation of a runtime seam must show, run against each one."""
