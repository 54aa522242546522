"""Metrics of the parts between RPCs: the outbox, event consumers and database pools.

Instruments come from a `MeterProvider` passed in, or else the process's global one (set
once by the entrypoint, `gatehouse.cli.serving`); before that is set, and in tools that never
set it, they record nothing. Names follow `gatehouse.<part>.<what>`; Prometheus shows them as
`gatehouse_<part>_<what>` with the unit suffix (`_seconds`) and `_total` on counters. The
dashboards and alert rules in `deploy/observability/` are written against these names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

# Seconds: an event handled at once up to a consumer hours behind.
LAG_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


def _meter(provider: metrics.MeterProvider | None, name: str) -> metrics.Meter:
    return (provider or metrics.get_meter_provider()).get_meter(name)


@dataclass
class OutboxBacklog:
    """The last measurement of a database's unpublished outbox rows (by its relay leader)."""

    pending: int = 0
    oldest_age_seconds: float = 0.0
    measured: bool = False


class RuntimeGauges:
    """The runtime's observable gauges, created once per process and fed by every database in
    it: a second instrument of the same name would be ignored by the SDK (only the first
    callback reports), so `gatehouse up`, with five databases, shares one of these."""

    def __init__(self, provider: metrics.MeterProvider | None = None) -> None:
        meter = _meter(provider, "gatehouse.runtime")
        self._backlogs: dict[str, OutboxBacklog] = {}
        self._pools: dict[str, Callable[[], int]] = {}
        meter.create_observable_gauge(
            "gatehouse.outbox.pending",
            callbacks=[self._backlog_gauge(lambda backlog: backlog.pending)],
            unit="{event}",
            description="Committed events not yet published (measured by the relay leader)",
        )
        meter.create_observable_gauge(
            "gatehouse.outbox.oldest_pending_age",
            callbacks=[self._backlog_gauge(lambda backlog: backlog.oldest_age_seconds)],
            unit="s",
            description="Age of the oldest unpublished event: how far the bus is behind",
        )
        meter.create_observable_gauge(
            "gatehouse.db.pool.checked_out",
            callbacks=[self._observe_pools],
            unit="{connection}",
            description="Database connections in use",
        )

    def backlog(self, database: str) -> OutboxBacklog:
        """Where `database`'s relay records its measurements."""
        return self._backlogs.setdefault(database, OutboxBacklog())

    def pool(self, database: str, checked_out: Callable[[], int]) -> None:
        """Report a pool's connections in use (a pool at its limit queues requests)."""
        self._pools[database] = checked_out

    def _backlog_gauge(
        self, value: Callable[[OutboxBacklog], float]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for database, backlog in list(self._backlogs.items()):
                # Only the leader measures; the other replicas' relays would report stale zeros.
                if backlog.measured:
                    yield Observation(value(backlog), {"gatehouse.database": database})

        return observe

    def _observe_pools(self, options: CallbackOptions) -> Iterable[Observation]:
        for database, checked_out in list(self._pools.items()):
            yield Observation(checked_out(), {"gatehouse.database": database})


class OutboxMetrics:
    def __init__(
        self,
        database: str,
        provider: metrics.MeterProvider | None = None,
        *,
        gauges: RuntimeGauges | None = None,
    ) -> None:
        """`gauges`: the process's (one per process); a private one when None (tests)."""
        meter = _meter(provider, "gatehouse.outbox")
        self._attributes = {"gatehouse.database": database}
        self.backlog = (gauges or RuntimeGauges(provider)).backlog(database)
        self._published = meter.create_counter(
            "gatehouse.outbox.published",
            unit="{event}",
            description="Outbox rows published to the bus",
        )

    def published(self, count: int) -> None:
        self._published.add(count, self._attributes)


class ConsumerMetrics:
    def __init__(self, consumer: str, provider: metrics.MeterProvider | None = None) -> None:
        meter = _meter(provider, "gatehouse.consumer")
        self._consumer = consumer
        self._events = meter.create_counter(
            "gatehouse.consumer.events",
            unit="{event}",
            description="Events a consumer finished with, by outcome",
        )
        self._dead_letters = meter.create_counter(
            "gatehouse.consumer.dead_letters",
            unit="{event}",
            description="Events moved to a dead-letter stream, by reason",
        )
        self._lag = meter.create_histogram(
            "gatehouse.consumer.lag",
            unit="s",
            description="From an event's commit to the end of its handling",
            explicit_bucket_boundaries_advisory=LAG_BUCKETS_SECONDS,
        )

    def finished(self, stream: str, outcome: str, lag_seconds: float | None) -> None:
        """`outcome`: handled, duplicate, skipped or dead_lettered."""
        attributes = {"gatehouse.consumer": self._consumer, "messaging.destination.name": stream}
        self._events.add(1, {**attributes, "gatehouse.outcome": outcome})
        if lag_seconds is not None and outcome == "handled":
            self._lag.record(max(lag_seconds, 0.0), attributes)

    def dead_lettered(self, stream: str, reason: str) -> None:
        self._dead_letters.add(
            1,
            {
                "gatehouse.consumer": self._consumer,
                "messaging.destination.name": stream,
                "gatehouse.reason": reason,
            },
        )
