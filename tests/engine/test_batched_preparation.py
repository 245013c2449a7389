"""Preparation commits receivers in batches, under a lease, and never holds a long write lock.

Before: every receiver and the move to `sending` were one transaction, which on SQLite held the
database's only write lock for the whole preparation (~50 s at 100,000 receivers), longer than
the 30 s every other writer waits. Now each batch is a short transaction that renews the
preparation's lease, so:

- another writer (a draft being saved, a result recorded) waits for one batch at most;
- a worker that dies mid-preparation leaves committed batches, which nobody can claim, and a
  lease that runs out: the sweeper takes over and the preparation resumes (a staff-composed
  message) with no receiver twice and none left out, or the receivers are discarded and the
  message is `error` (a message from another app, whose generator died with its process);
- a preparation taken over while it was only slow commits nothing more;
- a preparation that raises (bad input) discards what it made and says why;
- a staff send streams: workers deliver its first receivers while the rest are prepared, and it
  cannot end before the last batch is in.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from django.core import mail
from django.db import OperationalError, connection
from django.db.utils import DatabaseError

from messaging.compose import composing
from messaging.engine import delivery, maintenance, preparing, sending, transitions
from messaging.engine.status import published_counts
from messaging.feedback import signatures
from messaging.models import Message, MessageReceiver
from messaging.operations.mailsink import MailSink
from tests.conftest import Consumer, wait_until
from tests.engine.test_process_level import sweep_until
from tests.engine_helpers import SEND_ARGS, LanguageSubject, short_lock_timeout
from tests.process_helpers import ENGINE_ENV, deliveries, email_url, queue_message

Status = Message.Status
COMPOSED = {"en": {"subject": "Room change", "body": "<p>Hi {{ recipient_name }}</p>"}}


def composed_message(users) -> Message:
    """A staff-composed message, queued: the sweeper can prepare it again from its content."""
    message = Message.objects.create(
        composed_content=COMPOSED, virtual_message_receivers={"chosen_user_ids": [u.pk for u in users]}
    )
    assert transitions.queue(message, [u.pk for u in users])
    return message


def age_lease(message: Message) -> None:
    """As if the preparation's worker had died a lease ago (no test waits out a real lease)."""
    data = Message.objects.get(pk=message.pk).status_data
    Message.objects.filter(pk=message.pk).update(
        status_data={**data, "preparing_until": "2000-01-01T00:00:00+00:00"}
    )


def receivers_per_user(message: Message) -> Counter:
    return Counter(MessageReceiver.objects.filter(message=message).values_list("user_id", flat=True))


class Crash(BaseException):
    """Not an Exception: nothing in the engine catches it, as nothing catches a SIGKILL."""


def before_each_receiver(monkeypatch, hook) -> Counter:
    """Call hook(n) before the n-th receiver is rendered (rendering is outside any transaction);
    returns the count of receivers rendering was started for."""
    built = Counter()
    build = preparing.build_receiver

    def build_after_hook(*args, **kwargs):
        built["receivers"] += 1
        hook(built["receivers"])
        return build(*args, **kwargs)

    monkeypatch.setattr(preparing, "build_receiver", build_after_hook)
    return built


def crash_at_receiver(monkeypatch, n: int, exc: BaseException) -> Counter:
    """Raise `exc` when the n-th receiver is rendered."""

    def crash(count: int) -> None:
        if count == n:
            raise exc

    return before_each_receiver(monkeypatch, crash)


class Gate:
    """Stops the preparation before its `at`-th receiver until the test opens it."""

    def __init__(self, monkeypatch, at: int):
        self.at = at
        self.waiting, self.opened = threading.Event(), threading.Event()
        before_each_receiver(monkeypatch, self.wait)

    def wait(self, count: int) -> None:
        if count == self.at:
            self.waiting.set()
            assert self.opened.wait(30), "the test never opened the gate"


# --- Batches and the status page ---------------------------------------------------------------


@pytest.mark.django_db
def test_receivers_are_committed_batch_by_batch_and_counted_while_preparing(make_user, settings, monkeypatch):
    settings.MESSAGING_PREPARATION_BATCH_SIZE = 2
    users = [make_user() for _ in range(5)]
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    seen = []  # what the status page shows as each receiver is rendered
    before_each_receiver(monkeypatch, lambda n: seen.append(sum(published_counts(message).values())))
    sending.start_preparing(message, "preparer")
    assert sending.prepare(message, "preparer", LanguageSubject(), **SEND_ARGS)
    assert seen == [0, 0, 2, 2, 4]
    message.refresh_from_db()
    assert message.status == Status.SENDING
    assert message.status_data["receiver_count"] == 5
    assert published_counts(message)[MessageReceiver.Status.NOT_SENT] == 5


# --- A crash mid-preparation -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_crash_in_the_first_batch_requeues_with_no_duplicate_and_no_lost_receiver(
    make_user, settings, monkeypatch
):
    settings.MESSAGING_PREPARATION_BATCH_SIZE = 2
    users = [make_user() for _ in range(7)]
    message = composed_message(users)
    built = crash_at_receiver(monkeypatch, 2, Crash())  # nothing committed yet
    with pytest.raises(Crash):
        composing.send_composed(message)
    message.refresh_from_db()
    assert message.status == Status.PREPARING
    assert message.receivers.count() == 0
    assert transitions.claim_batch(message.pk, "eager-worker") is None  # nothing sendable yet

    maintenance.sweep()  # the lease has not run out: a live preparation is left alone
    assert Message.objects.get(pk=message.pk).status == Status.PREPARING

    age_lease(message)
    maintenance.sweep()  # takes over, queues it again; huey runs inline in tests
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert receivers_per_user(message) == Counter({u.pk: 1 for u in users})
    assert sorted(m.to[0] for m in mail.outbox) == sorted(u.email for u in users)
    assert built["receivers"] == 2 + 7
    assert message.status_data["requeued_after_dead_preparation"] is True
    assert message.status_data["receiver_count"] == 7


@pytest.mark.django_db
def test_a_crash_mid_streaming_preparation_resumes_with_no_duplicate_and_no_lost_receiver(
    make_user, settings, monkeypatch
):
    """A staff send streams: its committed receivers are sendable while the rest are prepared,
    and it cannot end before they all are; a dead preparation is carried on where it stopped."""
    settings.MESSAGING_PREPARATION_BATCH_SIZE = 2
    users = [make_user() for _ in range(7)]
    message = composed_message(users)
    built = crash_at_receiver(monkeypatch, 5, Crash())  # in the third batch
    with pytest.raises(Crash):
        composing.send_composed(message)
    message.refresh_from_db()
    assert message.status == Status.SENDING and message.status_data["still_preparing"] is True
    assert message.receivers.count() == 4  # two batches committed, the third lost with the worker

    maintenance.sweep()  # the live preparation is left alone; what is prepared is delivered
    message.refresh_from_db()
    assert message.status == Status.SENDING, "it cannot end while more receivers are coming"
    assert len(mail.outbox) == 4

    age_lease(message)
    maintenance.sweep()  # queues it again; the task takes the preparation over and carries on
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert "still_preparing" not in message.status_data
    assert receivers_per_user(message) == Counter({u.pk: 1 for u in users})
    assert sorted(m.to[0] for m in mail.outbox) == sorted(u.email for u in users)
    assert built["receivers"] == 5 + 3, "the committed receivers are not rendered again"
    assert message.status_data["preparing_taken_over_from"]
    assert message.status_data["receiver_count"] == 7


@pytest.mark.django_db
def test_a_streaming_preparation_that_raises_keeps_what_it_prepared_and_ends_in_error(
    make_user, settings, monkeypatch
):
    settings.MESSAGING_PREPARATION_BATCH_SIZE = 2
    users = [make_user() for _ in range(5)]
    message = composed_message(users)
    crash_at_receiver(monkeypatch, 3, RuntimeError("the template broke for this user"))
    composing.send_composed(message)  # recorded, not raised
    message.refresh_from_db()
    assert message.receivers.count() == 2
    assert len(mail.outbox) == 2  # delivered: they may have gone out before it raised
    assert message.status == Status.ERROR, "three users got nothing"
    assert message.status_data["preparation_failed"] is True
    assert "the template broke" in message.status_data["errors"][-1]["error_message"]


def in_thread(target, *args) -> tuple[threading.Thread, list]:
    """Run `target` on a thread of its own (its own database connection); its result, or the
    exception it raised, ends up in the returned list."""
    outcome: list = []

    def run():
        try:
            outcome.append(target(*args))
        except BaseException as exc:  # surfaced by the test
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.django_db(transaction=True)
def test_a_staff_send_is_delivered_while_the_rest_is_still_being_prepared(
    make_user, settings, monkeypatch, huey_queue
):
    """The first emails do not wait for the last receiver: with the preparation held before its
    third batch, another worker has delivered the first two batches, waits for more instead of
    finishing, and the message stays `sending`; once the preparation ends, everyone got one."""
    settings.MESSAGING_PREPARATION_BATCH_SIZE = 3
    users = [make_user() for _ in range(8)]
    message = composed_message(users)
    gate = Gate(monkeypatch, at=7)
    preparer, prepared = in_thread(composing.send_composed, message)
    assert gate.waiting.wait(30)
    helper, delivered = in_thread(delivery.deliver_message, message.pk)
    wait_until(lambda: len(mail.outbox) == 6, timeout=30, message="the prepared receivers delivered")
    time.sleep(0.5)  # the helper waits for more rather than ending the send
    assert helper.is_alive()
    message.refresh_from_db()
    assert message.status == Status.SENDING and message.status_data["still_preparing"] is True
    assert huey_queue.pending_count() >= 1  # the delivery the first batch queued for a helper

    gate.opened.set()
    preparer.join(30)
    helper.join(30)
    assert prepared == [None] and delivered == [True]
    message.refresh_from_db()
    assert message.status == Status.SENT and "still_preparing" not in message.status_data
    assert sorted(m.to[0] for m in mail.outbox) == sorted(u.email for u in users)


@pytest.mark.django_db(transaction=True)
def test_a_preparation_taken_over_while_stalled_commits_nothing_more(make_user, settings, monkeypatch):
    """The sweeper takes over a preparation whose lease ran out although its worker was only
    stalled; when that worker wakes up, its next batch finds the preparation is not its own."""
    settings.MESSAGING_PREPARATION_BATCH_SIZE = 2
    users = [make_user() for _ in range(5)]
    message = composed_message(users)
    sending.start_preparing(message, "stalled-worker")
    gate = Gate(monkeypatch, at=3)
    worker, outcome = in_thread(
        sending.prepare, message, "stalled-worker", LanguageSubject(), *SEND_ARGS.values()
    )
    assert gate.waiting.wait(30)
    assert message.receivers.count() == 2

    age_lease(message)
    maintenance.sweep()  # takes over and resumes (huey inline): every user gets their email
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert message.status_data["preparing_taken_over_from"] == "stalled-worker"

    gate.opened.set()
    worker.join(30)
    assert outcome == [False]  # it stopped, without an error
    message.refresh_from_db()
    assert message.status == Status.SENT and "errors" not in message.status_data
    assert receivers_per_user(message) == Counter({u.pk: 1 for u in users})
    assert len(mail.outbox) == 5


@pytest.mark.django_db
def test_a_dead_preparation_of_an_api_message_is_discarded_batch_by_batch(make_user, settings, monkeypatch):
    settings.MESSAGING_PREPARATION_BATCH_SIZE = 2
    users = [make_user() for _ in range(7)]
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    crash_at_receiver(monkeypatch, 6, Crash())
    with pytest.raises(Crash):
        message.prepare_and_send(LanguageSubject(), **SEND_ARGS)
    assert message.receivers.count() == 4

    age_lease(message)
    assert maintenance.recover_dead_preparation(message.pk) == Status.ERROR
    message.refresh_from_db()
    assert not message.receivers.exists() and mail.outbox == []
    assert "Preparing was interrupted" in message.status_data["errors"][-1]["error_message"]
    assert message.virtual_message_receivers["user_ids"] == [u.pk for u in users]  # nothing lost


# --- Bad input ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_bad_input_half_way_through_a_staff_send_gets_a_clear_error(make_user, settings, monkeypatch):
    """A staff send streams, so what was prepared before the bad input went out; the error
    says how far it got, and the content and recipients are kept."""
    settings.MESSAGING_PREPARATION_BATCH_SIZE = 2
    users = [make_user() for _ in range(7)]
    message = composed_message(users)
    crash_at_receiver(monkeypatch, 6, ValueError("The subject is longer than 255 characters."))
    composing.send_composed(message)
    message.refresh_from_db()
    assert message.status == Status.ERROR
    error = message.status_data["errors"][-1]["error_message"]
    assert error.startswith("Preparing stopped after 4 receiver(s); the other recipients got nothing.")
    assert "longer than 255" in error
    assert message.receivers.count() == len(mail.outbox) == 4
    assert message.composed_content == COMPOSED
    assert message.virtual_message_receivers["user_ids"] == [u.pk for u in users]


@pytest.mark.django_db
def test_bad_input_half_way_through_prepare_and_send_leaves_no_receiver(make_user, settings, monkeypatch):
    """From code (the SPEC's prepare_and_send) nothing streams: all or nothing."""
    settings.MESSAGING_PREPARATION_BATCH_SIZE = 2
    users = [make_user() for _ in range(7)]
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    crash_at_receiver(monkeypatch, 6, ValueError("The subject is longer than 255 characters."))
    message.prepare_and_send(LanguageSubject(), **SEND_ARGS)
    message.refresh_from_db()
    assert message.status == Status.ERROR
    assert "longer than 255" in message.status_data["errors"][-1]["error_message"]
    assert not message.receivers.exists() and mail.outbox == []


@pytest.mark.django_db
def test_a_failed_preparation_the_database_would_not_clean_up_is_left_to_the_sweeper(
    make_user, settings, monkeypatch
):
    """The preparation raised, then the database failed while its receivers were discarded:
    the message stays `preparing` (never sendable), and the sweeper finishes the job."""
    settings.MESSAGING_PREPARATION_BATCH_SIZE = 2
    users = [make_user() for _ in range(5)]
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    crash_at_receiver(monkeypatch, 4, ValueError("bad template"))
    discard = preparing.discard_receivers

    def database_gone(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(preparing, "discard_receivers", database_gone)
    message.prepare_and_send(LanguageSubject(), **SEND_ARGS)
    message.refresh_from_db()
    assert message.status == Status.PREPARING and message.receivers.count() == 2

    monkeypatch.setattr(preparing, "discard_receivers", discard)
    age_lease(message)
    maintenance.sweep()
    message.refresh_from_db()
    assert message.status == Status.ERROR
    assert not message.receivers.exists() and mail.outbox == []


# --- No writer waits for a whole preparation ---------------------------------------------------------

WRITER_LOCK_TIMEOUT = 1.0  # seconds: SQLite's busy timeout, PostgreSQL's lock_timeout
SLOW_USERS = 400
SLOW_RENDER = 0.01  # seconds per receiver: 4 s of rendering, four writer timeouts
SLOW_BATCH = 50


class Writer:
    """Another writer while the preparation runs: it saves a draft and touches the message
    being prepared, over and over, each with a short lock timeout, until told to stop."""

    def __init__(self, draft: Message, preparing_message: Message):
        self.draft, self.message = draft, preparing_message
        self.stop = threading.Event()
        self.waits: list[float] = []
        self.failures: list[str] = []
        self.seen_mid_preparation = 0

    def run(self) -> None:
        try:
            short_lock_timeout(WRITER_LOCK_TIMEOUT)
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    Message.objects.filter(pk=self.draft.pk).update(metadata={"saved": len(self.waits)})
                    Message.objects.filter(pk=self.message.pk).update(metadata={"touched": len(self.waits)})
                except DatabaseError as exc:
                    self.failures.append(str(exc))
                self.waits.append(time.monotonic() - started)
                status = Message.objects.filter(pk=self.message.pk).values_list("status", flat=True).first()
                created = MessageReceiver.objects.filter(message=self.message).count()
                if status == Status.PREPARING and 0 < created < SLOW_USERS:
                    self.seen_mid_preparation += 1
                time.sleep(0.02)
        finally:
            connection.close()


@pytest.mark.django_db(transaction=True)
def test_another_writer_never_waits_for_a_whole_preparation(django_user_model, settings, monkeypatch, capsys):
    settings.MESSAGING_PREPARATION_BATCH_SIZE = SLOW_BATCH
    before_each_receiver(monkeypatch, lambda n: time.sleep(SLOW_RENDER))
    commits: list[float] = []  # how long each batch's transaction (SQLite: the write lock) lasted
    commit = preparing.commit_batch

    def timed_commit(*args, **kwargs):
        started = time.monotonic()
        try:
            return commit(*args, **kwargs)
        finally:
            commits.append(time.monotonic() - started)

    monkeypatch.setattr(preparing, "commit_batch", timed_commit)
    django_user_model.objects.bulk_create(
        django_user_model(username=f"slow{i}", email=f"slow{i}@uni.example") for i in range(SLOW_USERS)
    )
    user_ids = list(
        django_user_model.objects.filter(username__startswith="slow").values_list("pk", flat=True)
    )
    message = Message.objects.create(virtual_message_receivers={"user_ids": user_ids})
    draft = Message.objects.create(virtual_message_receivers={"user_ids": user_ids[:1]})
    # The preparation takes longer than the writer's timeout by construction, not by the clock.
    assert SLOW_USERS * SLOW_RENDER > 2 * WRITER_LOCK_TIMEOUT

    writer = Writer(draft, message)
    writing = threading.Thread(target=writer.run)
    sending.start_preparing(message, "big-preparer")
    started = time.monotonic()
    writing.start()
    try:
        prepared = sending.prepare(message, "big-preparer", LanguageSubject(), **SEND_ARGS)
    finally:
        writer.stop.set()
        writing.join(30)
    elapsed = time.monotonic() - started

    with capsys.disabled():
        print(
            f"\nbatched preparation ({connection.vendor}): receivers={SLOW_USERS} "
            f"batches={len(commits)} longest_batch_commit={max(commits) * 1000:.0f}ms "
            f"preparation={elapsed:.1f}s "
            f"writer_timeout={WRITER_LOCK_TIMEOUT}s "
            f"writes={len(writer.waits)} failed={len(writer.failures)} "
            f"longest_wait={max(writer.waits, default=0) * 1000:.0f}ms"
        )
    assert prepared and len(commits) == SLOW_USERS // SLOW_BATCH
    assert writer.failures == [], writer.failures[:3]
    assert writer.seen_mid_preparation > 0, "the writer never wrote while the preparation was mid-way"
    message.refresh_from_db()
    assert message.status == Status.SENDING and message.receivers.count() == SLOW_USERS


# --- A real consumer killed mid-preparation ----------------------------------------------------------

KILLED_USERS = 2000
# Small batches under a short lease: a kill lands mid-preparation, and the sweeper finds the
# lease run out within seconds.
KILL_SETTINGS = {"MESSAGING_PREPARATION_BATCH_SIZE": 100, "MESSAGING_PREPARATION_LEASE_SECONDS": 3}


@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_preparation_resumes_with_every_receiver_once(
    engine_settings, huey_queue, django_user_model, capsys
):
    """A consumer is SIGKILLed while it prepares (batches of 100, lease 3 s) and delivers what it
    prepared (a staff send streams); another consumer starts; the sweeper finds the lease run
    out and queues the message again; the preparation resumes where it stopped and every user
    gets exactly one receiver and their email (twice only if flagged: a send in flight at the
    kill)."""
    started = time.monotonic()
    with MailSink() as sink:
        message = queue_message(django_user_model, KILLED_USERS, "prepkill")
        consumer = Consumer(email_url(sink), workers=2, **ENGINE_ENV, **KILL_SETTINGS).start()
        try:
            wait_until(
                lambda: message.receivers.count() >= 300,
                timeout=60,
                interval=0.05,
                message="a few batches committed",
            )
            consumer.kill()
            at_kill = message.receivers.count()
            status_at_kill = Message.objects.get(pk=message.pk).status
            consumer = Consumer(email_url(sink), workers=2, **ENGINE_ENV, **KILL_SETTINGS).start()

            def all_sent() -> bool:
                return (
                    Message.objects.filter(pk=message.pk, status=Status.SENT).exists()
                    and not message.receivers.exclude(status=MessageReceiver.Status.SENT).exists()
                )

            assert sweep_until(all_sent, timeout=180), "the message was not sent after the kill"
        finally:
            consumer.stop()
        counted = deliveries(sink)
    message.refresh_from_db()
    per_user = receivers_per_user(message)
    expected = {signatures.message_id(r.pk, message.pk, "messaging.local") for r in message.receivers.all()}
    with capsys.disabled():
        print(
            f"\nkill mid-preparation ({connection.vendor}): users={KILLED_USERS} "
            f"receivers_at_kill={at_kill} receivers={sum(per_user.values())} "
            f"duplicate_receivers={sum(n - 1 for n in per_user.values())} emails={sum(counted.values())} "
            f"duplicate_emails={sum(n - 1 for n in counted.values())} "
            f"elapsed={time.monotonic() - started:.1f}s"
        )
    # A staff send streams: it was sending its first receivers while the rest were prepared.
    assert status_at_kill == Status.SENDING and 0 < at_kill < KILLED_USERS, "the kill missed the preparation"
    assert len(per_user) == KILLED_USERS and set(per_user.values()) == {1}
    assert set(counted) == expected
    # The kill may also have caught a send in flight: a second copy only of a flagged receiver.
    flagged = {
        signatures.message_id(r.pk, message.pk, "messaging.local")
        for r in message.receivers.all()
        if r.status_data.get("delivery_uncertain")
    }
    assert {mid for mid, n in counted.items() if n > 1} <= flagged
    assert message.status_data["preparing_taken_over_from"]
    assert message.status_data["receiver_count"] == KILLED_USERS
