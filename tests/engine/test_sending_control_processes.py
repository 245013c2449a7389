"""Scheduling, pause, resume and cancel, checked with real consumer processes and a real SMTP server.

Each test runs `manage.py run_huey` subprocesses (thread workers, no periodic tasks) on the test
database, sending over SMTP to a MailSink. Runs on the embedded default (SQLite + SqliteHuey) and
on PostgreSQL + Redis.

- a scheduled message whose huey schedule was lost (consumer stopped, queue flushed) is started
  by the sweep the next consumer runs at startup;
- cancel during a real send: only the receivers in flight still reach the server, and the
  database says exactly what the server got;
- pause and resume with two consumers: the server stops receiving, then every receiver is
  delivered exactly once.
"""

from __future__ import annotations

import collections
import socket
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.compose import composing
from messaging.engine import controlling
from messaging.models import AuditEvent, Heartbeat, Message, MessageReceiver
from messaging.operations.mailsink import MailSink
from tests.conftest import Consumer, wait_until
from tests.process_helpers import (
    CONNECTIONS,
    ENGINE_ENV,
    deliveries,
    draft,
    email_url,
    message_ids,
    queue_message,
)

pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = 2
# Receivers one consumer may have in flight at once: one per SMTP connection of each worker.
IN_FLIGHT = WORKERS * CONNECTIONS


def all_sent(message: Message) -> bool:
    """Every receiver sent and the message rolled up to `sent`."""
    receivers = MessageReceiver.objects.filter(message=message)
    return (
        receivers.exists()
        and not receivers.exclude(status=MessageReceiver.Status.SENT).exists()
        and Message.objects.filter(pk=message.pk, status=Message.Status.SENT).exists()
    )


def statuses(message: Message) -> collections.Counter:
    return collections.Counter(
        MessageReceiver.objects.filter(message=message).values_list("status", flat=True)
    )


def claimed(message: Message) -> int:
    return MessageReceiver.objects.filter(message=message).exclude(claimed_by="").count()


def consumer_ready(consumer: Consumer) -> bool:
    """The consumer's heartbeat thread runs (it starts after the workers)."""
    return Heartbeat.objects.filter(name=f"{socket.gethostname()}:{consumer.process.pid}").exists()


def wait_idle(message: Message, settle: float = 1.0) -> None:
    """No worker owns a receiver of the message, and it stays so for `settle` seconds."""

    def idle() -> bool:
        # A task still queued cannot send: nobody claims receivers of a paused or cancelled
        # message, and a worker in flight owns its receiver until the result is recorded.
        return claimed(message) == 0

    deadline = time.monotonic() + 30
    while True:
        wait_until(idle, timeout=max(deadline - time.monotonic(), 0.1), interval=0.1, message="idle workers")
        time.sleep(settle)
        if idle():
            return


# ---------------------------------------------------------------------------------------------
# 1. A scheduled message whose huey schedule was lost is started by the next consumer's sweep.

SCHEDULED_RECEIVERS = 20


def start_task_scheduled(huey_queue, message: Message) -> bool:
    """The consumer took the message's start task off the queue and keeps it in huey's
    schedule (the SqliteHuey file's table, or the Redis sorted set): what a flush loses."""
    return any(
        task.name.endswith("start_scheduled_message") and tuple(task.args) == (message.pk,)
        for task in huey_queue.scheduled()
    )


SCHEDULE_AHEAD = timedelta(seconds=3)


def test_lost_schedule_is_started_by_the_startup_sweep(
    engine_settings, huey_queue, django_user_model, capsys
):
    with MailSink() as sink:
        message = draft(django_user_model, SCHEDULED_RECEIVERS, "sched")
        first = Consumer(email_url(sink), workers=WORKERS, **ENGINE_ENV).start()
        try:
            wait_until(lambda: consumer_ready(first), timeout=30, message="the first consumer to start")
            send_at = timezone.now() + SCHEDULE_AHEAD
            assert composing.queue_send(message, None, send_at=send_at) == SCHEDULED_RECEIVERS
            # The consumer took the task off the queue and keeps it in huey's schedule.
            wait_until(
                lambda: start_task_scheduled(huey_queue, message),
                timeout=10,
                interval=0.05,
                message="the start task to be in huey's schedule",
            )
            first.terminate()
        finally:
            first.stop()
        stopped_before_due = timezone.now() < send_at
        message.refresh_from_db()
        status_at_stop = message.status

        # The schedule is lost (a Redis restart, a flushed queue).
        huey_queue.flush()
        assert not start_task_scheduled(huey_queue, message)
        assert huey_queue.pending_count() == 0
        time.sleep(max((send_at - timezone.now()).total_seconds(), 0) + 0.5)
        message.refresh_from_db()
        status_when_due = message.status

        started = time.monotonic()
        second = Consumer(email_url(sink), workers=WORKERS, **ENGINE_ENV).start()
        try:
            wait_until(lambda: all_sent(message), timeout=30, message="every receiver to be sent")
        finally:
            second.stop()
        elapsed = time.monotonic() - started
        counted = deliveries(sink)

    expected = message_ids(message)
    with capsys.disabled():
        print(
            f"\nlost schedule: receivers={len(expected)} delivered={len(counted)} "
            f"status_at_stop={status_at_stop} status_when_due={status_when_due} "
            f"delivered_after_restart={elapsed:.1f}s"
        )

    assert stopped_before_due, "the first consumer stopped after send_at: nothing was tested"
    assert status_at_stop == Message.Status.SCHEDULED
    assert status_when_due == Message.Status.SCHEDULED, "something started the message without a consumer"
    assert len(expected) == SCHEDULED_RECEIVERS
    assert set(counted) == set(expected)
    assert set(counted.values()) == {1}, "a Message-ID was delivered more than once"
    message.refresh_from_db()
    assert message.status == Message.Status.SENT


# ---------------------------------------------------------------------------------------------
# 2. Cancel during a real send: only what is in flight still goes out.

CANCEL_RECEIVERS = 60


def test_cancel_mid_send_stops_after_the_receivers_in_flight(
    engine_settings, huey_queue, django_user_model, capsys
):
    with MailSink(data_delay=0.1) as sink:
        message = queue_message(django_user_model, CANCEL_RECEIVERS, "cancel")
        consumer = Consumer(email_url(sink), workers=WORKERS, **ENGINE_ENV).start()
        try:
            wait_until(lambda: len(sink.received) >= 5, timeout=60, interval=0.05, message="5 deliveries")
            # (controlling returns the caller's instance, refreshed: keep the status, not the object.)
            returned = controlling.cancel(message, None).status
            delivered_at_cancel = len(sink.received)
            wait_idle(message)
            delivered_when_idle = len(sink.received)
            # Nothing more goes out later either.
            time.sleep(1)
            delivered_later = len(sink.received)
        finally:
            consumer.stop()
        counted = deliveries(sink)

    expected = message_ids(message)
    receivers = list(expected.values())
    by_status = collections.Counter(r.status for r in receivers)
    sent = {mid for mid, r in expected.items() if r.status == MessageReceiver.Status.SENT}
    cancelled = [r for r in receivers if r.status == MessageReceiver.Status.CANCELLED]
    message.refresh_from_db()
    with capsys.disabled():
        print(
            f"\ncancel: receivers={len(receivers)} delivered_at_cancel={delivered_at_cancel} "
            f"delivered_when_idle={delivered_when_idle} delivered_later={delivered_later} "
            f"statuses={dict(by_status)} summary={message.status_data.get('summary')}"
        )

    assert returned == Message.Status.CANCELLED
    assert delivered_at_cancel < CANCEL_RECEIVERS, "the send finished before the cancel: nothing was tested"
    assert delivered_when_idle <= delivered_at_cancel + IN_FLIGHT, (
        "more than the in-flight receivers went out"
    )
    assert delivered_later == delivered_when_idle
    assert set(counted.values()) == {1}, "a Message-ID was delivered more than once"
    assert set(counted) == sent, "the receivers marked sent are not those the server got"
    assert (
        by_status[MessageReceiver.Status.SENT] + by_status[MessageReceiver.Status.CANCELLED]
        == CANCEL_RECEIVERS
    )
    assert {r.cancel_reason for r in cancelled} == {MessageReceiver.CancelReason.CANCELLED}
    assert [r.pk for r in receivers if r.claimed_by or r.lease_expires_datetime] == []
    assert message.status == Message.Status.CANCELLED
    summary = message.status_data["summary"]
    assert summary["receiver_counts"][MessageReceiver.Status.SENT] == len(sent)
    assert summary["receiver_counts"][MessageReceiver.Status.CANCELLED] == len(cancelled)

    # A receiver in flight at the cancel was handed to the server and recorded `sent`; cancel
    # had marked it cancelled first (transitions.cancel: every not_sent receiver, claimed or
    # not). Nothing of that mark may remain: it is not "cancelled because ...", and the audit
    # trail does not count it among the cancelled receivers.
    audited = AuditEvent.objects.get(message=message, action=AuditEvent.Action.CANCELLED).details
    leftovers = {
        "sent receivers with a cancel_reason": [
            r.pk for r in receivers if r.status == MessageReceiver.Status.SENT and r.cancel_reason
        ],
        "audited cancelled receivers beyond the in-flight allowance": max(
            0, audited["receivers"] - len(cancelled) - audited["in_flight_at_most"]
        ),
    }
    assert leftovers == {
        "sent receivers with a cancel_reason": [],
        "audited cancelled receivers beyond the in-flight allowance": 0,
    }
    assert audited["receivers"] >= len(cancelled) and audited["in_flight_at_most"] <= IN_FLIGHT


# ---------------------------------------------------------------------------------------------
# 2b. Cancel or expiry landing while a killed worker's lease is still live.

KILLED_RECEIVERS = 60


@pytest.mark.parametrize("stop", ["cancel", "expire"])
def test_cancel_or_expiry_after_a_kill_flags_what_the_dead_worker_had_in_flight(
    stop, engine_settings, huey_queue, django_user_model, capsys
):
    """The reported bug: receivers the dead worker had handed to the server, still under its
    lease, were turned `cancelled` unflagged (the page said "not sent" for mail that arrived)
    and kept their owner forever."""
    from messaging.engine import maintenance

    with MailSink(data_delay=0.3) as sink:
        message = queue_message(django_user_model, KILLED_RECEIVERS, f"killed{stop}")
        consumer = Consumer(email_url(sink), workers=WORKERS, **ENGINE_ENV).start()
        try:
            wait_until(lambda: len(sink.received) >= 5, timeout=60, interval=0.02, message="5 deliveries")
            time.sleep(0.15)  # mid-DATA: the server has the mail and has not answered yet
            consumer.kill()
        finally:
            consumer.stop()
        receivers = MessageReceiver.objects.filter(message=message)
        in_flight_at_kill = set(receivers.exclude(in_flight_since=None).values_list("pk", flat=True))
        if stop == "cancel":
            controlling.cancel(message, None)
        else:
            Message.objects.filter(pk=message.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
            maintenance.sweep()  # what the periodic sweeper does: expires it
        live_lease_at_stop = set(
            MessageReceiver.objects.filter(message=message, status=MessageReceiver.Status.NOT_SENT)
            .exclude(in_flight_since=None)
            .values_list("pk", flat=True)
        )
        time.sleep(ENGINE_ENV["MESSAGING_LEASE_SECONDS"] + 0.5)  # the dead worker's lease runs out
        maintenance.sweep()
        counted = deliveries(sink)

    expected = message_ids(message)
    receivers = list(expected.values())
    flagged = {mid for mid, r in expected.items() if "delivery_uncertain" in r.status_data}
    delivered_but_cancelled = {
        mid for mid in counted if expected[mid].status == MessageReceiver.Status.CANCELLED
    }
    with capsys.disabled():
        print(
            f"\n{stop} after a kill: receivers={len(receivers)} delivered={len(counted)} "
            f"in_flight_at_kill={len(in_flight_at_kill)} left_to_a_live_lease={len(live_lease_at_stop)} "
            f"delivered_but_cancelled={len(delivered_but_cancelled)} flagged={len(flagged)} "
            f"statuses={dict(statuses(message))}"
        )

    assert in_flight_at_kill, "nothing was in flight at the kill: nothing was tested"
    assert live_lease_at_stop == in_flight_at_kill  # not cancelled under the dead worker's lease
    assert {r.status for r in receivers} <= {MessageReceiver.Status.SENT, MessageReceiver.Status.CANCELLED}
    assert delivered_but_cancelled <= flagged, "mail that arrived is shown as not sent, unflagged"
    assert {r.pk for r in receivers if "delivery_uncertain" in r.status_data} == in_flight_at_kill
    assert len(flagged) <= IN_FLIGHT
    assert [r.pk for r in receivers if r.claimed_by or r.lease_expires_datetime or r.in_flight_since] == []
    reasons = {
        "cancel": MessageReceiver.CancelReason.CANCELLED,
        "expire": MessageReceiver.CancelReason.EXPIRED,
    }
    assert {r.cancel_reason for r in receivers if r.status == MessageReceiver.Status.CANCELLED} == {
        reasons[stop]
    }


# ---------------------------------------------------------------------------------------------
# 3. Pause and resume with two consumers.

PAUSE_RECEIVERS = 150


def test_pause_stops_two_consumers_and_resume_delivers_each_receiver_once(
    engine_settings, huey_queue, django_user_model, capsys
):
    with MailSink(data_delay=0.05) as sink:
        message = queue_message(django_user_model, PAUSE_RECEIVERS, "pause")
        consumers = [Consumer(email_url(sink), workers=WORKERS, **ENGINE_ENV).start() for _ in range(2)]
        try:
            wait_until(lambda: len(sink.received) >= 20, timeout=60, interval=0.05, message="20 deliveries")
            # (controlling returns the caller's instance, refreshed: keep the status, not the object.)
            paused = controlling.pause(message, None).status
            delivered_at_pause = len(sink.received)
            wait_idle(message)
            delivered_when_idle = len(sink.received)
            time.sleep(2)
            delivered_while_paused = len(sink.received)
            sent_while_paused = statuses(message)[MessageReceiver.Status.SENT]
            distinct_while_paused = len(deliveries(sink))
            message.refresh_from_db()
            status_while_paused = message.status

            resumed = controlling.resume(message, None).status
            wait_until(lambda: all_sent(message), timeout=60, message="every receiver to be sent")
            assert [c.process.poll() for c in consumers] == [None, None]
        finally:
            for consumer in consumers:
                consumer.stop()
        counted = deliveries(sink)

    expected = message_ids(message)
    receivers = list(expected.values())
    with capsys.disabled():
        print(
            f"\npause/resume: receivers={len(receivers)} delivered_at_pause={delivered_at_pause} "
            f"delivered_when_idle={delivered_when_idle} delivered_while_paused={delivered_while_paused} "
            f"delivered={len(counted)} duplicates={sum(n - 1 for n in counted.values())}"
        )

    assert paused == Message.Status.PAUSED
    assert status_while_paused == Message.Status.PAUSED
    assert delivered_at_pause < PAUSE_RECEIVERS, "the send finished before the pause: nothing was tested"
    assert delivered_when_idle <= delivered_at_pause + 2 * IN_FLIGHT, (
        "more than the in-flight receivers went out"
    )
    assert delivered_while_paused == delivered_when_idle, "the server kept receiving while paused"
    assert sent_while_paused == distinct_while_paused == delivered_while_paused
    assert resumed == Message.Status.SENDING
    assert len(receivers) == PAUSE_RECEIVERS
    assert {r.status for r in receivers} == {MessageReceiver.Status.SENT}
    assert set(counted) == set(expected)
    assert set(counted.values()) == {1}, "a Message-ID was delivered more than once"
    assert [r.pk for r in receivers if "delivery_uncertain" in r.status_data] == []
    message.refresh_from_db()
    assert message.status == Message.Status.SENT
