"""The database fails while a worker delivers: at each write point of the delivery loop (claim,
lease renewal, the in-flight mark, the result, the roll-up, the release), before the write or
after it committed (its answer lost), briefly or for longer than a worker waits. Real SMTP to
the in-process sink; the failure is injected at the exact point (it cannot be made real there).
Runs on SQLite and, in `make test-services`, on PostgreSQL.

Whatever fails: nothing is lost, every receiver ends `sent` without human help, and a receiver
the sink got twice is flagged `delivery_uncertain` (and only one that may really have gone out).
"""

import collections
import itertools
import sqlite3
import threading
import time

import pytest
from django.db import OperationalError, connection

from messaging.engine import delivery, maintenance, transitions
from messaging.feedback import signatures
from messaging.models import Message, MessageReceiver
from tests.conftest import wait_until
from tests.engine.test_state_machine import sending_message

pytestmark = pytest.mark.django_db(transaction=True)

RECEIVERS = 8
WRITE_POINTS = {
    "claim": ("claim_batch", 1),
    "renew": ("renew_leases", 1),
    "mark": ("mark_in_flight", 3),
    "record": ("record_result", 3),
    "roll-up": ("roll_up", 1),
    "release": ("release", 1),
}


@pytest.fixture
def slow_sink(settings, smtp_mailer):
    """A sink that takes 0.25 s per message and a 4 s lease over a 1 s mail timeout (so a lease
    is renewed after the first second), one lane, a worker that waits 0.5 s for the database."""
    smtp_mailer.handler.data_delay = 0.25
    settings.MAILERS["default"]["OPTIONS"]["timeout"] = 1
    settings.MESSAGING_LEASE_SECONDS = 4
    settings.MESSAGING_SMTP_CONNECTIONS = 1
    settings.MESSAGING_DATABASE_OUTAGE_SECONDS = 0.5
    return smtp_mailer


def inject(monkeypatch, write: str, first_call: int, times: int, *, committed: bool) -> list[int]:
    """Make transitions.<write> raise OperationalError from its `first_call`-th call on, `times`
    times: before writing, or (`committed`) after the write committed, as when the connection
    drops before the answer arrives. Returns the failed call numbers as they happen."""
    original = getattr(transitions, write)
    calls = itertools.count(1)
    failed: list[int] = []

    def failing(*args, **kwargs):
        call = next(calls)
        if first_call <= call < first_call + times:
            if committed:
                original(*args, **kwargs)
            failed.append(call)
            raise OperationalError(f"injected: {write} call {call}")
        return original(*args, **kwargs)

    monkeypatch.setattr(transitions, write, failing)
    return failed


def outcome(message: Message, sink) -> dict:
    """Receivers, deliveries, duplicates and flags, printed by each test."""
    receivers = {
        signatures.message_id(r.pk, message.pk, "messaging.local"): r
        for r in MessageReceiver.objects.filter(message=message)
    }
    deliveries = collections.Counter(m.message["Message-ID"] for m in sink.received)
    return {
        "receivers": receivers,
        "deliveries": deliveries,
        "duplicates": {mid for mid, n in deliveries.items() if n > 1},
        "flagged": {mid for mid, r in receivers.items() if "delivery_uncertain" in r.status_data},
    }


def assert_handed_over_once_or_flagged(message: Message, sink, label: str, capsys) -> None:
    seen = outcome(message, sink)
    with capsys.disabled():
        print(
            f"\ndatabase failure {label}: receivers={len(seen['receivers'])} "
            f"delivered={len(seen['deliveries'])} duplicates={len(seen['duplicates'])} "
            f"flagged={len(seen['flagged'])}"
        )
    assert {r.status for r in seen["receivers"].values()} == {MessageReceiver.Status.SENT}
    assert set(seen["deliveries"]) == set(seen["receivers"])  # nothing lost
    assert seen["duplicates"] <= seen["flagged"]  # a duplicate only where flagged
    assert len(seen["flagged"]) <= 1  # one lane: at most the one receiver in flight
    assert not MessageReceiver.objects.filter(message=message).exclude(in_flight_since=None).exists()
    message.refresh_from_db()
    assert message.status == Message.Status.SENT


def deliver_until_done(message: Message) -> None:
    """What huey's retries and the sweeper do once the database is back: deliver again until
    every receiver is final (receivers a failed release left claimed wait for their lease)."""

    def done() -> bool:
        maintenance.sweep()  # immediate huey: delivers what is claimable, rolls up
        message.refresh_from_db()
        return message.status == Message.Status.SENT

    wait_until(done, timeout=30, interval=0.5, message="the send to finish after the outage")


@pytest.mark.parametrize("committed", [False, True], ids=["before-write", "answer-lost"])
@pytest.mark.parametrize("point", list(WRITE_POINTS))
def test_a_brief_failure_at_any_write_point_is_ridden_out(
    point, committed, slow_sink, monkeypatch, make_user, capsys
):
    write, first_call = WRITE_POINTS[point]
    message = sending_message([make_user() for _ in range(RECEIVERS)])
    failed = inject(monkeypatch, write, first_call, times=2, committed=committed)

    assert delivery.deliver_message(message.pk) is True  # the same run carries on

    assert failed == [first_call, first_call + 1], "the injected failure never happened"
    assert_handed_over_once_or_flagged(message, slow_sink, f"{point} {committed=} brief", capsys)
    assert not outcome(message, slow_sink)["duplicates"]  # ridden out: nobody got two


@pytest.mark.parametrize("point", list(WRITE_POINTS))
def test_an_outage_longer_than_a_worker_waits_loses_nothing_and_flags_every_duplicate(
    point, slow_sink, monkeypatch, make_user, capsys
):
    write, first_call = WRITE_POINTS[point]
    message = sending_message([make_user() for _ in range(RECEIVERS)])
    failed = inject(monkeypatch, write, first_call, times=10_000, committed=False)

    with pytest.raises(OperationalError):  # the task fails; huey runs it again
        delivery.deliver_message(message.pk)
    assert failed, "the injected failure never happened"
    monkeypatch.undo()  # the database is back
    deliver_until_done(message)

    assert_handed_over_once_or_flagged(message, slow_sink, f"{point} outage", capsys)


def test_a_result_the_server_accepted_is_never_released_unflagged(slow_sink, monkeypatch, make_user):
    """The reported bug: recording fails for good, the claim is released, and the receiver the
    server had just accepted was claimable at once, unflagged, and sent again."""
    message = sending_message([make_user() for _ in range(3)])
    inject(monkeypatch, "record_result", 1, times=10_000, committed=False)
    with pytest.raises(OperationalError):
        delivery.deliver_message(message.pk)
    first = MessageReceiver.objects.filter(message=message).order_by("id").first()
    assert first.claimed_by == "" and first.in_flight_since is not None  # released, still marked
    monkeypatch.undo()
    claim = transitions.claim_batch(message.pk, "next-worker")
    flagged = [r.pk for r in claim.receivers if "delivery_uncertain" in r.status_data]
    assert flagged == [first.pk]


@pytest.mark.skipif("connection.vendor != 'sqlite'")
def test_sqlite_locked_by_another_writer_while_results_are_recorded(slow_sink, settings, make_user, capsys):
    """Real: another process's connection holds SQLite's write lock for 2 s in the middle of
    the send, and the worker's connection gives up waiting after 0.1 s each time."""
    message = sending_message([make_user() for _ in range(RECEIVERS)])
    settings.MESSAGING_DATABASE_OUTAGE_SECONDS = 10
    database = connection.settings_dict["NAME"]
    locked = threading.Event()

    def hold_the_write_lock():
        wait_until(lambda: len(slow_sink.received) >= 2, timeout=20, interval=0.01)
        other = sqlite3.connect(database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(2)
        other.execute("COMMIT")
        other.close()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    connection.ensure_connection()
    connection.connection.execute("PRAGMA busy_timeout = 100")
    started = time.monotonic()
    try:
        assert delivery.deliver_message(message.pk) is True
    finally:
        holder.join()
    assert locked.is_set()
    with capsys.disabled():
        print(f"\nsqlite locked 2 s mid-send: delivered in {time.monotonic() - started:.1f} s")
    assert_handed_over_once_or_flagged(message, slow_sink, "sqlite locked", capsys)
    assert not outcome(message, slow_sink)["duplicates"]
