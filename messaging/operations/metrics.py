"""/metrics in the Prometheus text format: the figures of messaging.operations.health as gauges.

Each scrape builds one health report and renders it through its own registry (not the
process-wide default one), so nothing is kept between scrapes and several processes serving
the site all answer the same figures from the database.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from messaging.operations.health import FAILURE_DAYS, HealthReport, health_report


class HealthCollector(Collector):
    def __init__(self, report: HealthReport | None = None):
        self.report = report

    def collect(self) -> Iterator[Metric]:
        report = self.report or health_report()
        yield _gauge("consumers_alive", "Consumers with a fresh heartbeat.", report.consumers_alive)
        seen = GaugeMetricFamily(
            "messaging_consumer_last_seen_timestamp_seconds",
            "Unix time of each known consumer's last heartbeat.",
            labels=["consumer"],
        )
        for consumer in report.consumers:
            seen.add_metric([consumer.name], consumer.seen.timestamp())
        yield seen
        yield _gauge(
            "sweeper_last_run_timestamp_seconds",
            "Unix time the sweeper last finished a run (0: never).",
            report.sweeper_last_run.timestamp() if report.sweeper_last_run else 0,
        )
        messages = GaugeMetricFamily(
            "messaging_messages", "Messages in each in-flight status.", labels=["status"]
        )
        for status, count in report.message_counts.items():
            messages.add_metric([status], count)
        yield messages
        yield _gauge(
            "receivers_waiting", "Not-sent receivers of messages that are sending.", report.receivers_waiting
        )
        yield _gauge(
            "oldest_waiting_receiver_age_seconds",
            "How long the oldest waiting receiver has waited (0: none waiting).",
            report.oldest_waiting_seconds or 0,
        )
        yield _gauge("sends_last_minute", "Receivers sent in the last 60 seconds.", report.sends_last_minute)
        failures = GaugeMetricFamily(
            "messaging_failures",
            f"Failed/error receivers of messages created in the last {FAILURE_DAYS} days, "
            "by last error and whether it was permanent (the 10 commonest).",
            labels=["reason", "permanent"],
        )
        for reason, permanent, count in report.failures:
            failures.add_metric([reason, str(permanent).lower()], count)
        yield failures
        yield _gauge(
            "overdue_seconds",
            "The longest any due work (scheduled, queued, waiting receivers) has waited.",
            report.overdue_seconds,
        )
        yield _gauge("healthy", "1 when messaging_health passes, else 0.", int(report.healthy))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"messaging_{name}", documentation, value=value)


def render(report: HealthReport | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(report))
    return generate_latest(registry)
