"""Several SMTP connections per worker, and rate limits across consumers, against a real SMTP
server that takes its time to answer, with real `run_huey` consumers (thread workers, no
periodic tasks) on the test database. Runs on the embedded default (SQLite + SqliteHuey, the
limits' state in the database) and on PostgreSQL + Redis (the limits' state in Redis).

The fault-injection test (test_fault_injection.py) covers a SIGKILL during concurrent sends.
"""

from __future__ import annotations

import json

import pytest

from messaging.models import Message, MessageReceiver
from tests.conftest import Consumer, wait_until
from tests.process_helpers import ENGINE_ENV, deliveries, email_url, message_ids, queue_message

pytestmark = pytest.mark.django_db(transaction=True)

CONNECTIONS = 6


def all_sent(message: Message) -> bool:
    return Message.objects.filter(pk=message.pk, status=Message.Status.SENT).exists()


def busiest_second(arrivals: list[float]) -> int:
    """The most messages that arrived within any one second (a sliding window)."""
    arrivals = sorted(arrivals)
    most, start = 0, 0
    for end, arrived in enumerate(arrivals):
        while arrived - arrivals[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_busiest_second_counts_a_sliding_window():
    assert busiest_second([0.0, 0.5, 0.99, 1.0, 1.2, 1.98]) == 4  # 0.99 .. 1.98
    assert busiest_second([0.0, 1.0, 2.0]) == 1
    assert busiest_second([]) == 0


def test_a_slow_relay_gets_every_receiver_once_over_reused_connections(
    engine_settings, huey_queue, smtp_sink, django_user_model
):
    smtp_sink.handler.data_delay = 0.05  # 50 ms per message, like a real relay
    env = {**ENGINE_ENV, "MESSAGING_SMTP_CONNECTIONS": CONNECTIONS}
    consumer = Consumer(email_url(smtp_sink), workers=1, **env).start()
    try:
        first = queue_message(django_user_model, 150, "slow")
        wait_until(lambda: all_sent(first), timeout=120, message="the first message to be sent")
        second = queue_message(django_user_model, 60, "again")
        wait_until(lambda: all_sent(second), timeout=120, message="the second message to be sent")
    finally:
        consumer.stop()

    sunk = deliveries(smtp_sink)
    for message in (first, second):
        expected = message_ids(message)
        assert {mid: sunk[mid] for mid in expected} == dict.fromkeys(expected, 1)
        assert set(MessageReceiver.objects.filter(message=message).values_list("status", flat=True)) == {
            MessageReceiver.Status.SENT
        }
    handler = smtp_sink.handler
    assert 2 <= handler.most_in_flight <= CONNECTIONS  # sends overlapped, never beyond the setting
    # Sessions were kept open between claims (of 20 receivers) and between the two messages.
    assert handler.sessions <= CONNECTIONS


def test_two_consumers_together_never_exceed_the_rate_limit(
    engine_settings, huey_queue, smtp_sink, django_user_model, capsys
):
    limit = 10
    smtp_sink.handler.data_delay = 0.02
    env = {
        **ENGINE_ENV,
        "MESSAGING_SMTP_CONNECTIONS": 4,
        "MESSAGING_RATE_LIMITS": json.dumps({"default": {"per_second": limit}}),
    }
    consumers = [Consumer(email_url(smtp_sink), workers=1, **env).start() for _ in range(2)]
    try:
        message = queue_message(django_user_model, 60, "limited")
        wait_until(lambda: all_sent(message), timeout=120, message="the limited message to be sent")
    finally:
        for consumer in consumers:
            consumer.stop()

    arrivals = [mail.arrived_at for mail in smtp_sink.received]
    sunk = deliveries(smtp_sink)
    assert sunk == dict.fromkeys(message_ids(message), 1)
    with capsys.disabled():
        span = max(arrivals) - min(arrivals)
        print(
            f"\nrate limit {limit}/s, 2 consumers: busiest second {busiest_second(arrivals)}, "
            f"achieved {(len(arrivals) - 1) / span:.1f}/s"
        )
    assert busiest_second(arrivals) <= limit
