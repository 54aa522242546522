"""Heartbeats are frequent and only move a timestamp: they are collected in memory and
written together (one statement per flush), not one transaction each."""

from __future__ import annotations

from datetime import datetime


class HeartbeatBuffer:
    def __init__(self) -> None:
        self._latest: dict[str, datetime] = {}

    def note(self, device_id: str, time: datetime) -> None:
        previous = self._latest.get(device_id)
        if previous is None or time > previous:
            self._latest[device_id] = time

    def drain(self) -> dict[str, datetime]:
        latest, self._latest = self._latest, {}
        return latest

    def restore(self, times: dict[str, datetime]) -> None:
        """Put back what a failed flush took, unless newer heartbeats came meanwhile."""
        for device_id, time in times.items():
            self.note(device_id, time)
