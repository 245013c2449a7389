"""Fault injection: SIGKILL the consumer at random moments while it sends 2,000 receivers.

Runs against PostgreSQL and Redis (`make test-services`). At the end every receiver is sent,
the sink holds every Message-ID at least once, and each duplicate is a receiver flagged
"delivery_uncertain" — at most one per kill, since the consumer runs one worker thread and
each result is recorded before the next receiver is sent.
"""

import collections
import os
import random
import time

import pytest
from django.db import connection, transaction

from messaging import tasks
from messaging.models import Message, MessageReceiver
from messaging.services import composing
from tests.conftest import Consumer, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

RECEIVERS = 2_000
KILLS = 4
LEASE_SECONDS = 3


@pytest.fixture
def services_only():
    if connection.vendor != "postgresql" or not os.environ.get("REDIS_URL"):
        pytest.skip("fault injection runs against PostgreSQL and Redis (make test-services)")


def test_sigkill_loses_nothing_and_flags_every_duplicate(
    services_only, huey_queue, smtp_sink, django_user_model, capsys
):
    django_user_model.objects.bulk_create(
        django_user_model(username=f"fault{i}", email=f"fault{i}@uni.example") for i in range(RECEIVERS)
    )
    message = Message.objects.create(
        composed_content={"en": {"subject": "Fault test", "body": "<p>Hi {{ recipient_name }}</p>"}},
        virtual_message_receivers={
            "chosen_user_ids": list(django_user_model.objects.values_list("pk", flat=True))
        },
    )
    with transaction.atomic():
        composing.queue_send(message)

    consumer = Consumer(smtp_sink.url, workers=1, MESSAGING_LEASE_SECONDS=LEASE_SECONDS).start()
    rng = random.Random(int(os.environ.get("FAULT_SEED", "1234")))
    kills = 0
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 2.0))
            if _all_sent(message):
                break
            consumer.kill()
            kills += 1
            consumer.start()
            tasks.resume_stalled_messages()  # what the periodic sweeper does every minute

        def finished():
            if _all_sent(message):
                return True
            tasks.resume_stalled_messages()
            return False

        wait_until(
            finished, timeout=180, interval=LEASE_SECONDS, message="every receiver to be sent after the kills"
        )
    finally:
        consumer.stop()

    deliveries = collections.Counter(m.message["Message-ID"] for m in smtp_sink.received)
    receivers = list(MessageReceiver.objects.filter(message=message))
    expected_ids = {f"<receiver-{r.pk}.message-{message.pk}@messaging.local>": r for r in receivers}
    duplicates = {mid: n - 1 for mid, n in deliveries.items() if n > 1}
    with capsys.disabled():  # the counts belong in CI's output, passed or not
        print(
            f"\nfault injection: receivers={len(receivers)} delivered={len(deliveries)} "
            f"duplicates={sum(duplicates.values())} kills={kills} "
            f"uncertain={sum('delivery_uncertain' in r.status_data for r in receivers)}"
        )

    assert len(receivers) == RECEIVERS
    assert {r.status for r in receivers} == {MessageReceiver.Status.SENT}
    assert set(deliveries) == set(expected_ids)
    assert sum(duplicates.values()) <= kills
    for message_id in duplicates:
        assert "delivery_uncertain" in expected_ids[message_id].status_data
    message.refresh_from_db()
    assert message.status == Message.Status.SENT


def _all_sent(message) -> bool:
    message.refresh_from_db()
    return message.status == Message.Status.SENT
