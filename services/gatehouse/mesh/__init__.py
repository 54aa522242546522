"""Runs services: one (`gatehouse serve`) or all five in one process (`gatehouse up`)."""
