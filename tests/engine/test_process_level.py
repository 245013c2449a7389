"""The delivery engine's promises, checked with real consumer processes and a real SMTP server.

Each test runs `manage.py run_huey` subprocesses (thread workers, no periodic tasks: the test
drives the sweeper itself) on the test database, sending over SMTP to a MailSink that counts
Message-IDs. Runs on the embedded default (SQLite + SqliteHuey) and on PostgreSQL + Redis.

- a slow relay: one claim takes longer than the lease, so leases must be renewed;
- the mail server disappears mid-send and comes back: blocked, nobody charged, resumed;
- SIGTERM mid-send: the consumer exits promptly and hands everything back.
"""

from __future__ import annotations

import collections
import time

import pytest

from messaging import tasks
from messaging.engine.delivery import LANE_CLAIM_SIZE
from messaging.models import Message, MessageReceiver
from messaging.operations.mailsink import MailSink, SinkHandler
from tests.conftest import Consumer, wait_until
from tests.process_helpers import (
    ENGINE_ENV,
    LEASE_SECONDS,
    deliveries,
    email_url,
    message_ids,
    queue_message,
)

pytestmark = pytest.mark.django_db(transaction=True)


def sent_count(message: Message) -> int:
    return MessageReceiver.objects.filter(message=message, status=MessageReceiver.Status.SENT).count()


def all_sent(message: Message) -> bool:
    receivers = MessageReceiver.objects.filter(message=message)
    return receivers.exists() and not receivers.exclude(status=MessageReceiver.Status.SENT).exists()


def uncertain(receivers) -> list[MessageReceiver]:
    return [r for r in receivers if "delivery_uncertain" in r.status_data]


def sweep_until(predicate, timeout: float, interval: float = 1.0) -> bool:
    """Run the sweeper (on a consumer: it is a task) until `predicate` holds; False on timeout."""
    deadline = time.monotonic() + timeout
    next_sweep = time.monotonic() + interval
    while time.monotonic() < deadline:
        if predicate():
            return True
        if time.monotonic() >= next_sweep:
            tasks.sweep()
            next_sweep = time.monotonic() + interval
        time.sleep(0.2)
    return predicate()


# ---------------------------------------------------------------------------------------------
# 1. A slow relay: a claim takes longer than the lease.

SLOW_RECEIVERS = 250
SLOW_DATA_DELAY = 0.25  # x 20 receivers a claim (delivery.LANE_CLAIM_SIZE) = 5 s > the 4 s lease


def test_slow_relay_leases_are_renewed_and_each_receiver_is_sent_once(
    engine_settings, huey_queue, django_user_model, capsys
):
    started = time.monotonic()
    with MailSink(data_delay=SLOW_DATA_DELAY) as sink:
        message = queue_message(django_user_model, SLOW_RECEIVERS, "slow")
        consumers = [Consumer(email_url(sink), workers=2, **ENGINE_ENV).start() for _ in range(2)]
        try:
            wait_until(lambda: all_sent(message), timeout=90, message="every receiver to be sent")
            # Both consumers passed the system check (lease vs mail timeout) and are still running.
            assert [c.process.poll() for c in consumers] == [None, None]
        finally:
            for consumer in consumers:
                consumer.stop()
        counted = deliveries(sink)
    elapsed = time.monotonic() - started

    expected = message_ids(message)
    receivers = list(expected.values())
    first_claim = sorted(receivers, key=lambda r: r.pk)[:LANE_CLAIM_SIZE]  # claims go in id order
    claim_span = (
        max(r.sent_datetime for r in first_claim) - min(r.sent_datetime for r in first_claim)
    ).total_seconds()
    with capsys.disabled():
        print(
            f"\nslow relay: receivers={len(receivers)} delivered={len(counted)} "
            f"duplicates={sum(n - 1 for n in counted.values())} uncertain={len(uncertain(receivers))} "
            f"first_claim_span={claim_span:.1f}s lease={LEASE_SECONDS}s elapsed={elapsed:.1f}s"
        )

    assert claim_span > LEASE_SECONDS, "the first claim took less than a lease: no renewal was needed"
    assert len(receivers) == SLOW_RECEIVERS
    assert {r.status for r in receivers} == {MessageReceiver.Status.SENT}
    assert set(counted) == set(expected)
    assert set(counted.values()) == {1}, "a Message-ID was delivered more than once"
    assert uncertain(receivers) == []
    assert all(r.sending_failed_count == 0 and r.sending_success_count == 1 for r in receivers)
    message.refresh_from_db()
    assert message.status == Message.Status.SENT


# ---------------------------------------------------------------------------------------------
# 2. The mail server disappears mid-send and comes back.

OUTAGE_RECEIVERS = 400
OUTAGE_SECONDS = 5


class OutageHandler(SinkHandler):
    """A sink that can be switched "down": it then drops every connection, without an answer,
    at whatever command comes next. A message whose body it had already taken is kept (the
    server committed it and crashed before answering): the client cannot know it arrived."""

    def __init__(self, **options):
        super().__init__(**options)
        self.down = False
        self.dropped = collections.Counter()

    def _drop(self, server, command: str) -> str:
        self.dropped[command] += 1
        server.transport.close()
        return "421 4.3.2 Service shutting down"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if self.down:
            return [self._drop(server, "EHLO")]
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.down:
            return self._drop(server, "MAIL")
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.down:
            return self._drop(server, "RCPT")
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)  # waits data_delay, keeps it
        if self.down:
            return self._drop(server, "DATA")
        return reply


@pytest.mark.parametrize("outage", ["refused", "dropping"])
def test_mail_server_outage_blocks_charges_nobody_and_resumes(
    outage, engine_settings, huey_queue, django_user_model, capsys
):
    """refused: the server process is gone (connections refused; open ones are cut), then a new
    one starts on the same port. dropping: the server accepts connections and drops them (a
    crashed backend behind a load balancer), then recovers."""
    handler = OutageHandler(data_delay=0.02)
    sink = MailSink(handler=handler).start()
    port = sink.port
    message = queue_message(django_user_model, OUTAGE_RECEIVERS, "outage")
    consumers = [Consumer(email_url(sink), workers=2, **ENGINE_ENV).start() for _ in range(2)]
    blocked_seen = 0
    started = time.monotonic()
    try:
        wait_until(
            lambda: len(handler.received) >= OUTAGE_RECEIVERS // 4,
            timeout=60,
            interval=0.05,
            message="a quarter of the receivers to be delivered",
        )
        sent_before_outage = len(handler.received)
        if outage == "refused":
            sink.stop()
            sink = None
        else:
            handler.down = True
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_ends:
            blocked_seen += Message.objects.filter(pk=message.pk, status=Message.Status.BLOCKED).exists()
            time.sleep(0.05)
        if outage == "refused":
            sink = MailSink(port=port, handler=handler).start()
        else:
            handler.down = False
        # The blocked message is tried again by its scheduled retry or by the sweeper; stop early
        # if a receiver ran out of retries (then it can never be sent).
        finished = sweep_until(
            lambda: (
                all_sent(message)
                or MessageReceiver.objects.filter(
                    message=message, status=MessageReceiver.Status.ERROR
                ).exists()
            ),
            timeout=60,
        )
    finally:
        for consumer in consumers:
            consumer.stop()
        if sink is not None:
            sink.stop()
    elapsed = time.monotonic() - started

    counted = collections.Counter(m.message["Message-ID"] for m in handler.received)
    expected = message_ids(message)
    receivers = list(expected.values())
    duplicates = {mid: n - 1 for mid, n in counted.items() if n > 1}
    charged = [r for r in receivers if r.sending_failed_count > 0]
    statuses = collections.Counter(r.status for r in receivers)
    with capsys.disabled():
        print(
            f"\nmail server outage ({outage}): receivers={len(receivers)} sent_before={sent_before_outage} "
            f"delivered={len(counted)} duplicates={sum(duplicates.values())} "
            f"uncertain={len(uncertain(receivers))} charged={len(charged)} blocked_seen={blocked_seen} "
            f"dropped={dict(handler.dropped)} statuses={dict(statuses)} finished={finished} "
            f"elapsed={elapsed:.1f}s"
        )
        for receiver in charged[:3]:
            print(f"  charged receiver {receiver.pk}: {receiver.status} {receiver.last_error!r}")

    assert len(receivers) == OUTAGE_RECEIVERS
    assert charged == [], f"{len(charged)} receivers were charged a failure for the server's outage"
    assert blocked_seen, "the message was never `blocked` while the mail server was down"
    assert statuses == {MessageReceiver.Status.SENT: OUTAGE_RECEIVERS}
    assert set(counted) == set(expected), "a receiver's Message-ID never reached the server"
    for message_id in duplicates:
        assert "delivery_uncertain" in expected[message_id].status_data, f"{message_id} sent twice, unflagged"
    message.refresh_from_db()
    assert message.status == Message.Status.SENT


# ---------------------------------------------------------------------------------------------
# 3. SIGTERM while sending: a prompt, clean exit; another consumer finishes the send.

SIGTERM_RECEIVERS = 300


def test_sigterm_mid_send_exits_promptly_and_hands_everything_back(
    engine_settings, huey_queue, django_user_model, capsys
):
    with MailSink(data_delay=0.05) as sink:
        message = queue_message(django_user_model, SIGTERM_RECEIVERS, "term")
        consumer = Consumer(email_url(sink), workers=2, **ENGINE_ENV).start()
        try:
            wait_until(
                lambda: sent_count(message) >= 30, timeout=60, interval=0.05, message="30 receivers sent"
            )
            exit_seconds = consumer.terminate()
        finally:
            consumer.stop()
        returncode = consumer.process.returncode
        sent_at_exit = sent_count(message)
        delivered_at_exit = len(sink.received)
        receivers = list(MessageReceiver.objects.filter(message=message))
        leased = [r.pk for r in receivers if r.lease_expires_datetime is not None or r.claimed_by]
        charged = [r.pk for r in receivers if r.sending_failed_count > 0]
        flagged = [r.pk for r in uncertain(receivers)]
        message.refresh_from_db()
        status_at_exit = message.status

        successor = Consumer(email_url(sink), workers=2, **ENGINE_ENV).start()
        try:
            # The stopping worker queued the rest for another consumer; the sweeper is the safety net.
            finished = sweep_until(lambda: all_sent(message), timeout=60, interval=2.0)
        finally:
            successor.stop()
        counted = deliveries(sink)

    expected = message_ids(message)
    final = list(expected.values())
    with capsys.disabled():
        print(
            f"\nsigterm: receivers={len(final)} exit_seconds={exit_seconds:.2f} returncode={returncode} "
            f"sent_at_exit={sent_at_exit} delivered_at_exit={delivered_at_exit} "
            f"status_at_exit={status_at_exit} "
            f"leased={len(leased)} charged={len(charged)} uncertain={len(flagged)} "
            f"delivered={len(counted)} duplicates={sum(n - 1 for n in counted.values())}"
        )

    assert exit_seconds < 10
    assert sent_at_exit < SIGTERM_RECEIVERS, "the send finished before SIGTERM: nothing was tested"
    assert delivered_at_exit == sent_at_exit, "a receiver in flight was not recorded before exiting"
    assert leased == [], "receivers still owned by the stopped consumer"
    assert charged == []
    assert flagged == []
    assert status_at_exit == Message.Status.SENDING
    assert finished, "the next consumer did not finish the send"
    assert {r.status for r in final} == {MessageReceiver.Status.SENT}
    assert set(counted) == set(expected)
    assert set(counted.values()) == {1}, "a Message-ID was delivered more than once"
    assert uncertain(final) == []
    message.refresh_from_db()
    assert message.status == Message.Status.SENT
