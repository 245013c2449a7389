"""Fault injection: SIGKILL the consumer at random moments while it sends.

Runs on the embedded default (SQLite + SqliteHuey: 400 receivers, 2 kills) and against
PostgreSQL and Redis (`make test-services`: 2,000 receivers, 4 kills). At the end every receiver
is sent, the sink holds every Message-ID at least once, and each duplicate is a receiver flagged
"delivery_uncertain"; and the flags are precise: at most one per SMTP connection per kill (the
receiver that connection had in flight), so no more than kills x CONNECTIONS. The consumer runs
one worker that sends over CONNECTIONS sessions at once to a sink that takes a while to answer
(and keeps a mail whose sender died before the answer, as a real relay does); on each connection
a receiver is marked in flight before it is handed over and its result recorded before the next.
"""

import collections
import os
import random
import time

import pytest
from django.db import connection, transaction

from messaging import tasks
from messaging.compose import composing
from messaging.feedback import signatures
from messaging.models import Message, MessageReceiver
from tests.conftest import Consumer, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Passes the system check (messaging.checks): a lease covers two sends of 2 x the 1 s mail timeout.
LEASE_SECONDS = 4
CONNECTIONS = 4


@pytest.fixture
def scale():
    """(receivers, kills): full size against PostgreSQL and Redis, smaller on the embedded default."""
    if connection.vendor == "postgresql" and os.environ.get("REDIS_URL"):
        return 2_000, 4
    return 400, 2


def test_sigkill_loses_nothing_and_flags_every_duplicate(
    scale, settings, huey_queue, smtp_sink, django_user_model, capsys
):
    size, planned_kills = scale
    smtp_sink.handler.data_delay = 0.02  # a relay that takes its time: sends overlap
    settings.MESSAGING_LEASE_SECONDS = LEASE_SECONDS
    django_user_model.objects.bulk_create(
        django_user_model(username=f"fault{i}", email=f"fault{i}@uni.example") for i in range(size)
    )
    message = Message.objects.create(
        composed_content={"en": {"subject": "Fault test", "body": "<p>Hi {{ recipient_name }}</p>"}},
        virtual_message_receivers={
            "chosen_user_ids": list(django_user_model.objects.values_list("pk", flat=True))
        },
    )
    with transaction.atomic():
        composing.queue_send(message)

    consumer = Consumer(
        f"{smtp_sink.url}/?timeout=1",
        workers=1,
        MESSAGING_LEASE_SECONDS=LEASE_SECONDS,
        MESSAGING_SMTP_CONNECTIONS=CONNECTIONS,
    ).start()
    rng = random.Random(int(os.environ.get("FAULT_SEED", "1234")))
    # Kill at random points of the send (by mails delivered, which does not depend on the
    # machine's speed), each after the restarted consumer has delivered at least one more.
    kill_points = sorted(rng.sample(range(size // 10, size * 9 // 10), planned_kills))
    kills = 0
    try:
        for point in kill_points:
            target = max(point, len(smtp_sink.received) + 1)
            _sweep_until(lambda target=target: len(smtp_sink.received) >= target or _all_sent(message))
            if _all_sent(message):
                break
            consumer.kill()
            kills += 1
            consumer.start()
            tasks.sweep()  # what the periodic sweeper does every minute

        def finished():
            if _all_sent(message):
                return True
            tasks.sweep()
            return False

        wait_until(
            finished, timeout=180, interval=LEASE_SECONDS, message="every receiver to be sent after the kills"
        )
    finally:
        consumer.stop()

    deliveries = collections.Counter(m.message["Message-ID"] for m in smtp_sink.received)
    receivers = list(MessageReceiver.objects.filter(message=message))
    expected_ids = {signatures.message_id(r.pk, message.pk, "messaging.local"): r for r in receivers}
    duplicates = {mid: n - 1 for mid, n in deliveries.items() if n > 1}
    flagged = {mid for mid, r in expected_ids.items() if "delivery_uncertain" in r.status_data}
    with capsys.disabled():  # the counts belong in CI's output, passed or not
        print(
            f"\nfault injection: receivers={len(receivers)} delivered={len(deliveries)} "
            f"duplicates={sum(duplicates.values())} flagged={len(flagged)} "
            f"flagged_not_duplicated={len(flagged - set(duplicates))} kills={kills} "
            f"kill_points={kill_points}"
        )

    assert kills >= 1, "the send finished before the first kill: nothing was tested"
    assert len(receivers) == size
    assert {r.status for r in receivers} == {MessageReceiver.Status.SENT}
    assert set(deliveries) == set(expected_ids)
    assert sum(duplicates.values()) <= kills * CONNECTIONS
    assert set(duplicates) <= flagged  # every duplicate flagged
    assert len(flagged) <= kills * CONNECTIONS  # and no more than were in flight at the kills
    message.refresh_from_db()
    assert message.status == Message.Status.SENT


def _sweep_until(predicate, timeout: float = 120) -> None:
    """Wait for `predicate`, running the sweeper once a lease (the consumer runs --no-periodic)."""
    swept = time.monotonic()

    def done():
        nonlocal swept
        if predicate():
            return True
        if time.monotonic() - swept >= LEASE_SECONDS:
            tasks.sweep()
            swept = time.monotonic()
        return False

    wait_until(done, timeout=timeout, interval=0.02, message="the consumer to deliver more")


def _all_sent(message) -> bool:
    message.refresh_from_db()
    return message.status == Message.Status.SENT
