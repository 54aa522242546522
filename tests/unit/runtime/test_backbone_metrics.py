"""Instruments of the parts between RPCs, read back through an in-memory reader."""

from __future__ import annotations

import functools

from gatehouse.runtime.backbone_metrics import ConsumerMetrics, OutboxMetrics, RuntimeGauges
from tests.support.metrics import RecordedMetrics


def test_a_pool_reports_the_connections_in_use_when_read() -> None:
    recorded = RecordedMetrics()
    in_use = [2]
    RuntimeGauges(recorded.provider).pool("payments", lambda: in_use[0])
    labels = {"gatehouse.database": "payments"}
    assert recorded.value("gatehouse.db.pool.checked_out", labels) == 2
    in_use[0] = 5
    assert recorded.value("gatehouse.db.pool.checked_out", labels) == 5


def test_every_database_of_a_process_is_reported() -> None:
    # `gatehouse up` runs five databases in one process: one gauge each name, all reported.
    recorded = RecordedMetrics()
    gauges = RuntimeGauges(recorded.provider)
    for database, pending in (("auth", 3), ("payments", 4)):
        gauges.pool(database, functools.partial(int, pending))
        backlog = OutboxMetrics(database, recorded.provider, gauges=gauges).backlog
        backlog.pending, backlog.measured = pending, True
    for name in ("gatehouse.db.pool.checked_out", "gatehouse.outbox.pending"):
        reported = {p.attributes["gatehouse.database"]: p.value for p in recorded.points(name)}
        assert reported == {"auth": 3, "payments": 4}, name


def test_only_handled_events_have_a_lag_and_it_is_never_negative() -> None:
    recorded = RecordedMetrics()
    metrics = ConsumerMetrics("receipts", recorded.provider)
    metrics.finished("events.payment", "handled", -0.5)  # a producer's clock slightly ahead
    metrics.finished("events.payment", "duplicate", 3.0)
    (lag,) = recorded.points("gatehouse.consumer.lag")
    assert (lag.count, lag.sum) == (1, 0.0)
