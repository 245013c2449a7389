"""Digests with real processes: a consumer killed (SIGKILL) while it delivers digests loses none
and sends none twice unflagged, and two assemblers racing never put an item in two digests.

A digest is an ordinary message of the engine, so the kill is recovered the way every send is
(claims, leases, the sweeper); the held receivers it carries end sent once it was.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from django.db import connection

from messaging.feedback import signatures
from messaging.models import DeliveryMode, Message, MessageReceiver, NotificationPreference
from messaging.operations.mailsink import MailSink
from messaging.preferences import digests
from tests.conftest import Consumer, wait_until
from tests.engine.test_process_level import sweep_until
from tests.engine_helpers import SEND_ARGS, FixedSubject
from tests.process_helpers import ENGINE_ENV, deliveries, email_url

pytestmark = pytest.mark.django_db(transaction=True)

USERS = 30
ITEMS_PER_USER = 2
DATA_DELAY = 0.2  # a relay that takes its time: the kill lands mid-run


def daily_users(django_user_model, count: int, prefix: str) -> list:
    users = django_user_model.objects.bulk_create(
        django_user_model(username=f"{prefix}{i}", email=f"{prefix}{i}@uni.example") for i in range(count)
    )
    NotificationPreference.objects.bulk_create(
        NotificationPreference(user=user, context_type=Message.ContextType.COMMENT, mode=DeliveryMode.DAILY)
        for user in users
    )
    return users


def hold_items(users, count: int) -> list[Message]:
    """`count` comment messages to every user, each held for their daily digest."""
    messages = []
    for n in range(count):
        message = Message.objects.create(
            context_type=Message.ContextType.COMMENT,
            virtual_message_receivers={"user_ids": [u.pk for u in users]},
        )
        message.prepare_and_send(FixedSubject(text=f"Item {n}"), **SEND_ARGS)
        messages.append(message)
    assert set(MessageReceiver.objects.values_list("status", flat=True)) == {MessageReceiver.Status.HELD}
    return messages


def after_every_due_time() -> datetime:
    return max(MessageReceiver.objects.values_list("next_attempt_datetime", flat=True)) + timedelta(minutes=1)


def test_sigkill_while_delivering_digests_loses_nothing(
    engine_settings, huey_queue, django_user_model, capsys
):
    users = daily_users(django_user_model, USERS, "digestkill")
    items = hold_items(users, ITEMS_PER_USER)
    (digest,) = digests.send_due(after_every_due_time())  # its deliveries go to the consumer's queue

    with MailSink(data_delay=DATA_DELAY) as sink:
        consumer = Consumer(email_url(sink), workers=1, **ENGINE_ENV).start()
        try:
            wait_until(lambda: len(sink.received) >= USERS // 4, timeout=60, message="some digests delivered")
            consumer.kill()
            delivered_before_kill = len(sink.received)
            consumer.start()

            def settled() -> bool:
                return not MessageReceiver.objects.filter(status=MessageReceiver.Status.HELD).exists()

            assert sweep_until(settled, timeout=60), "held receivers left after the restart"
        finally:
            consumer.stop()
        counted = deliveries(sink)

    receivers = {r.user_id: r for r in MessageReceiver.objects.filter(message=digest)}
    expected = {signatures.message_id(r.pk, digest.pk, "messaging.local"): r for r in receivers.values()}
    duplicates = {mid: n - 1 for mid, n in counted.items() if n > 1}
    with capsys.disabled():
        print(
            f"\ndigest kill: users={USERS} delivered_before_kill={delivered_before_kill} "
            f"emails={sum(counted.values())} duplicates={sum(duplicates.values())}"
        )

    assert delivered_before_kill < USERS, "every digest went out before the kill: nothing was tested"
    assert set(receivers) == {u.pk for u in users}
    assert set(counted) == set(expected), "every user got their digest, and nothing else was sent"
    for message_id in duplicates:  # a re-send keeps its Message-ID and is flagged
        assert "delivery_uncertain" in expected[message_id].status_data
    assert {r.status for r in receivers.values()} == {MessageReceiver.Status.SENT}
    for message in items:
        message.refresh_from_db()
        assert message.status_data["summary"]["receiver_counts"]["sent"] == USERS
        for held in message.receivers.all():
            assert held.status == MessageReceiver.Status.SENT
            assert held.digest_id == receivers[held.user_id].pk
    digest.refresh_from_db()
    assert digest.status == Message.Status.SENT


def test_two_assemblers_at_once_never_put_an_item_in_two_digests(huey_queue, django_user_model):
    users = daily_users(django_user_model, 12, "digestrace")
    hold_items(users, 3)
    now = after_every_due_time()
    start = threading.Barrier(2)
    made: list[list[Message]] = [[], []]
    errors: list[BaseException] = []

    def assemble(index: int) -> None:
        try:
            start.wait(timeout=10)
            made[index] = digests.send_due(now)
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=assemble, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    held = list(MessageReceiver.objects.filter(message__context_type=Message.ContextType.COMMENT))
    assert len(held) == 12 * 3
    assert all(r.digest_id is not None for r in held), "an item was left out"
    digest_receivers = {
        r.pk: r for r in MessageReceiver.objects.filter(message__context_type=Message.ContextType.DIGEST)
    }
    assert {r.digest_id for r in held} <= set(digest_receivers)
    # Each item is in exactly one digest email: its own digest receiver's text, no other's.
    for item in held:
        containing = [
            d
            for d in digest_receivers.values()
            if d.user_id == item.user_id and item.subject in d.message_content_plain
        ]
        assert [d.pk for d in containing] == [item.digest_id]
    assert sum(len(m) for m in made) == len({d.message_id for d in digest_receivers.values()})
