"""Instruments of the parts between RPCs, read back through an in-memory reader."""

from __future__ import annotations

from gatehouse.runtime.backbone_metrics import ConsumerMetrics, observe_pool
from tests.support.metrics import RecordedMetrics


def test_a_pool_reports_the_connections_in_use_when_read() -> None:
    recorded = RecordedMetrics()
    in_use = [2]
    observe_pool("payments", lambda: in_use[0], recorded.provider)
    labels = {"gatehouse.database": "payments"}
    assert recorded.value("gatehouse.db.pool.checked_out", labels) == 2
    in_use[0] = 5
    assert recorded.value("gatehouse.db.pool.checked_out", labels) == 5


def test_only_handled_events_have_a_lag_and_it_is_never_negative() -> None:
    recorded = RecordedMetrics()
    metrics = ConsumerMetrics("receipts", recorded.provider)
    metrics.finished("events.payment", "handled", -0.5)  # a producer's clock slightly ahead
    metrics.finished("events.payment", "duplicate", 3.0)
    (lag,) = recorded.points("gatehouse.consumer.lag")
    assert (lag.count, lag.sum) == (1, 0.0)
