"""The status table never lies: one guarded state machine, ownership checked before every send.

Each test here is a scenario that broke before the state machine existed: a worker outliving its
lease, send() on a claimed receiver, a slow preparation "recovered" while running, workers killed
between steps, a mail server refusing our login or dropping the connection, a stale form saved
over a message being sent.
"""

from __future__ import annotations

import ast
import collections
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import mail
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from messaging.checks import lease_covers_a_send
from messaging.compose import composing
from messaging.engine import channels, delivery, maintenance, preparing, sending, transitions
from messaging.engine.channels import DeliveryResult
from messaging.feedback import signatures
from messaging.models import Message, MessageReceiver
from messaging.operations.mailsink import MailSink, SinkHandler
from tests.engine_helpers import SEND_ARGS, LanguageSubject

ROOT = Path(__file__).resolve().parents[2]
Status = Message.Status
RStatus = MessageReceiver.Status


def draft_for(users, **fields) -> Message:
    return Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]}, **fields)


def send(message, subject_generator=None) -> Message:
    message.prepare_and_send(subject_generator or LanguageSubject(), **SEND_ARGS)
    message.refresh_from_db()
    return message


def sending_message(users, *, status=Status.SENDING) -> Message:
    """A message whose receivers exist and are not sent yet (as preparing leaves them)."""
    message = draft_for(users, status=status)
    for user in users:
        MessageReceiver.objects.create(
            message=message, user=user, send_to=user.email, subject="Hi", message_content_plain="Hello"
        )
    return message


def smtp_settings(settings, port: int, timeout: float = 5, **options) -> None:
    settings.MAILERS = {
        "default": {
            "BACKEND": "messaging.engine.channels.smtp_backend.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": port, "timeout": timeout, **options},
        }
    }


def message_ids(sink) -> collections.Counter:
    return collections.Counter(m.message["Message-ID"] for m in sink.received)


# --- One package writes statuses, owners and leases ---------------------------------------------

WRITE_CALLS = {"update", "create", "get_or_create", "update_or_create", "bulk_update", "bulk_create"}
# A receiver's owner, lease and delivery outcome are state too: only a transition changes them.
GUARDED_FIELDS = {"status", "claimed_by", "lease_expires_datetime", "in_flight_since", "delivery_outcome"}
TRANSITIONS = ROOT / "messaging" / "engine" / "transitions"


def guarded_writes(path: Path) -> list[str]:
    """Lines of `path` that assign a guarded field: `x.status = ...`, `.update(claimed_by=...)`,
    ... and `update_fields` naming one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr in GUARDED_FIELDS for t in targets):
                found.append(f"{path.name}:{node.lineno}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            names = {kw.arg for kw in node.keywords}
            if node.func.attr in WRITE_CALLS and names & GUARDED_FIELDS:
                found.append(f"{path.name}:{node.lineno}")
            for kw in node.keywords:
                if kw.arg == "update_fields" and any(f in ast.unparse(kw.value) for f in GUARDED_FIELDS):
                    found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_module_but_the_transitions_writes_a_status_an_owner_or_a_lease():
    owners = sorted(TRANSITIONS.glob("*.py"))
    written = {line.split(":")[0] for path in owners for line in guarded_writes(path)}
    # The checker must see the writes the owners make (each kind of move writes some).
    assert {"messages.py", "ownership.py", "results.py", "digests.py", "outcomes.py"} <= written
    offenders = [
        line
        for path in sorted((ROOT / "messaging").rglob("*.py"))
        if TRANSITIONS not in path.parents and "migrations" not in path.parts
        for line in guarded_writes(path)
    ]
    assert offenders == []


def test_the_checker_sees_an_owner_written_outside_the_transitions(tmp_path):
    rogue = tmp_path / "rogue.py"
    rogue.write_text(
        "def steal(qs, receiver):\n"
        "    qs.update(claimed_by='me')\n"
        "    receiver.lease_expires_datetime = None\n"
        "    receiver.save(update_fields=['status'])\n"
    )
    assert sorted(guarded_writes(rogue)) == ["rogue.py:2", "rogue.py:3", "rogue.py:4"]


# --- Leases -------------------------------------------------------------------------------------


class SlowChannel(channels.Channel):
    """Takes `delay` seconds per receiver and counts deliveries per receiver, from any thread."""

    message_type = "email"

    def __init__(self, delay: float):
        self.delay = delay
        self.sends = collections.Counter()
        self.lock = threading.Lock()

    def seconds_per_receiver(self) -> float:
        return self.delay

    def deliver(self, items):
        for item in items:
            time.sleep(self.delay)
            with self.lock:
                self.sends[item.ref.pk] += 1
            yield item, DeliveryResult.ok()


@pytest.fixture
def slow_channel():
    original = channels.get_channel("email")
    channel = channels.register(SlowChannel(delay=0.3))
    yield channel
    channels.register(original)


def in_thread(target, *args, **kwargs) -> threading.Thread:
    def run():
        try:
            target(*args, **kwargs)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_a_worker_outliving_its_first_lease_renews_it_and_nobody_sends_twice(
    make_user, slow_channel, settings
):
    """One claim takes 4.5 s to deliver with a lease of 3 s; a second worker keeps trying to
    claim all along. Before: the second worker took over the rest and both sent them."""
    settings.MESSAGING_LEASE_SECONDS = 3
    message = sending_message([make_user() for _ in range(15)])
    first = in_thread(delivery.deliver_message, message.pk)
    time.sleep(0.2)
    second = in_thread(delivery.deliver_message, message.pk, wait_for_others=True)
    first.join(30)
    second.join(30)
    assert sorted(slow_channel.sends.values()) == [1] * 15
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert not MessageReceiver.objects.exclude(claimed_by="").exists()


@pytest.mark.django_db
def test_a_lease_that_cannot_cover_one_send_sends_nothing(make_user, slow_channel, settings):
    settings.MESSAGING_LEASE_SECONDS = 1  # shorter than one send (0.3 s) plus the 1 s margin
    message = sending_message([make_user()])
    delivery.deliver_message(message.pk)
    assert slow_channel.sends == {}
    assert MessageReceiver.objects.get().claimed_by == ""  # released for a worker that can


@pytest.mark.django_db
def test_send_on_a_claimed_receiver_does_not_send_and_says_why(make_user):
    message = sending_message([make_user()])
    claim = transitions.claim_batch(message.pk, "busy-worker")
    receiver = MessageReceiver.objects.get()
    result = receiver.send()
    assert not result.delivered and "a worker is delivering" in result.reason
    assert mail.outbox == []
    receiver.refresh_from_db()
    assert (receiver.status, receiver.sending_failed_count, receiver.claimed_by) == (
        RStatus.NOT_SENT,
        0,
        "busy-worker",
    )
    assert claim.ids == [receiver.pk]


@pytest.mark.django_db
def test_send_counts_from_the_database_not_from_a_stale_instance(make_user):
    message = sending_message([make_user()])
    stale = MessageReceiver.objects.get()
    MessageReceiver.objects.filter(pk=stale.pk).update(sending_failed_count=1, status=RStatus.FAILED)
    stale.send()
    stale.refresh_from_db()
    assert (stale.status, stale.sending_failed_count, stale.sending_success_count) == (RStatus.SENT, 1, 1)
    assert message.receivers.count() == 1


def test_system_check_refuses_a_lease_shorter_than_two_sends(settings):
    smtp_settings(settings, 25, timeout=30)
    settings.MESSAGING_LEASE_SECONDS = 100
    assert [e.id for e in lease_covers_a_send()] == ["messaging.E001"]
    settings.MESSAGING_LEASE_SECONDS = 300
    assert lease_covers_a_send() == []


@pytest.mark.parametrize("minutes", [0, 60, "5"])
def test_system_check_refuses_a_sweep_interval_crontab_cannot_take(settings, minutes):
    settings.MESSAGING_SWEEP_MINUTES = minutes
    (problem,) = lease_covers_a_send()
    assert problem.id == "messaging.E002" and "MESSAGING_SWEEP_MINUTES" in problem.msg


# --- Preparation: liveness by lease -----------------------------------------------------------


class RenderGate:
    """Stops a preparation before it renders its `at`-th receiver (outside any transaction, its
    earlier batches committed) until the test opens the gate."""

    def __init__(self, monkeypatch, at: int):
        self.at, self.rendered = at, 0
        self.waiting, self.opened = threading.Event(), threading.Event()
        build = preparing.build_receiver

        def build_at_the_gate(*args, **kwargs):
            self.rendered += 1
            if self.rendered == self.at:
                self.waiting.set()
                assert self.opened.wait(30), "the test never opened the gate"
            return build(*args, **kwargs)

        monkeypatch.setattr(preparing, "build_receiver", build_at_the_gate)


@pytest.mark.django_db(transaction=True)
def test_a_slow_preparation_is_left_alone_while_its_lease_runs(
    make_user, settings, slow_channel, monkeypatch
):
    """Before leases: a preparation held the message row locked for as long as it ran; now it
    commits batch by batch and renews its lease with each, so a sweep meanwhile finds it alive."""
    settings.MESSAGING_PREPARATION_BATCH_SIZE = 1
    users = [make_user(language="en"), make_user(language="nb")]
    message = Message.objects.create(
        composed_content={"en": {"subject": "S", "body": "<p>B</p>"}},
        virtual_message_receivers={"user_ids": [u.pk for u in users]},
    )
    gate = RenderGate(monkeypatch, at=2)
    worker = in_thread(send, message)
    assert gate.waiting.wait(30)
    assert Message.objects.get(pk=message.pk).status == Status.PREPARING
    assert message.receivers.count() == 1  # the first batch is committed; nothing holds a lock
    assert maintenance.recover_dead_preparation(message.pk) is None
    gate.opened.set()
    worker.join(30)
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert sorted(message.receivers.values_list("user_id", flat=True)) == sorted(u.pk for u in users)
    assert sorted(slow_channel.sends.values()) == [1, 1]


@pytest.mark.django_db
def test_receivers_of_an_unfinished_preparation_cannot_be_claimed(make_user, monkeypatch):
    """A worker dying after its last batch and before the move to sending leaves receivers
    under `preparing`: committed, counted on the status page, and claimed by nobody."""
    message = draft_for([make_user(), make_user()])

    def die(*args, **kwargs):
        raise KeyboardInterrupt  # not an Exception: as if the process were stopping

    monkeypatch.setattr(transitions, "finish_preparing", die)
    with pytest.raises(KeyboardInterrupt):
        send(message)
    message.refresh_from_db()
    assert message.status == Status.PREPARING
    assert message.receivers.count() == 2
    assert transitions.claim_batch(message.pk, "eager-worker") is None
    assert message.pk not in maintenance.messages_needing_delivery()


# --- Kill points: the sweeper brings every message to a final status ---------------------------


def age_preparation(message: Message, seconds: int = 3600) -> None:
    """As if the preparation's worker had died `seconds` ago: its lease ran out long since."""
    started = (timezone.now() - timedelta(seconds=seconds)).isoformat()
    data = Message.objects.get(pk=message.pk).status_data
    Message.objects.filter(pk=message.pk).update(
        status_data={**data, "preparing_started": started, "preparing_until": started}
    )


@pytest.mark.django_db
def test_kill_during_preparation_of_a_composed_message_sends_it_again_once(make_user):
    user = make_user()
    message = Message.objects.create(
        status=Status.PREPARING,
        composed_content={"en": {"subject": "S", "body": "<p>B</p>"}},
        virtual_message_receivers={"chosen_user_ids": [user.pk], "user_ids": [user.pk]},
    )
    age_preparation(message)
    maintenance.sweep()  # huey runs inline in tests: the re-queued send happens now
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert message.receivers.count() == 1 and len(mail.outbox) == 1


@pytest.mark.django_db
def test_kill_during_preparation_of_an_api_message_ends_in_error(make_user):
    message = draft_for([make_user()], status=Status.PREPARING)
    age_preparation(message)
    maintenance.sweep()
    message.refresh_from_db()
    assert message.status == Status.ERROR
    assert "Preparing was interrupted" in message.status_data["errors"][-1]["error_message"]


@pytest.mark.django_db
def test_receivers_left_by_a_dead_preparation_of_an_api_message_are_discarded(make_user):
    """Its subject generator and template lived only in the dead process, so nobody can render
    the rest: the receivers it committed go, and the message says why (it never looked sendable)."""
    message = sending_message([make_user(), make_user()], status=Status.PREPARING)
    age_preparation(message)
    maintenance.sweep()
    message.refresh_from_db()
    assert message.status == Status.ERROR
    assert "Preparing was interrupted" in message.status_data["errors"][-1]["error_message"]
    assert not message.receivers.exists() and mail.outbox == []


@pytest.mark.django_db
def test_kill_after_the_last_result_is_rolled_up(make_user, client):
    message = sending_message([make_user()])
    MessageReceiver.objects.update(status=RStatus.SENT)  # recorded; the worker died before the roll-up
    maintenance.sweep()
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert message.status_data["summary"]["receiver_counts"][RStatus.SENT] == 1


@pytest.mark.django_db
def test_kill_mid_batch_flags_the_one_in_flight_and_sends_nothing_twice(make_user):
    message = sending_message([make_user() for _ in range(5)])
    claim = transitions.claim_batch(message.pk, "dead-worker")
    for receiver in claim.receivers[:3]:
        assert transitions.mark_in_flight(receiver, "dead-worker", 1) == Status.SENDING
    for receiver in claim.receivers[:2]:
        transitions.record_result(receiver, DeliveryResult.ok(), "dead-worker")
    # The worker dies with the third handed over (marked) and two more claimed, not marked.
    MessageReceiver.objects.filter(claimed_by="dead-worker").update(
        lease_expires_datetime=timezone.now() - timedelta(seconds=1)
    )
    maintenance.sweep()
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert len(mail.outbox) == 3  # the two recorded ones are not sent again
    flagged = [r.pk for r in message.receivers.all() if "delivery_uncertain" in r.status_data]
    assert flagged == [claim.receivers[2].pk]  # exactly the one that may have gone out
    assert not message.receivers.exclude(in_flight_since=None).exists()


# --- Failures that belong to the server --------------------------------------------------------


@pytest.mark.django_db
def test_wrong_smtp_login_blocks_the_message_charges_nobody_and_completes_once_fixed(make_user, settings):
    settings.MESSAGING_RETRY_BASE_SECONDS = 0
    users = [make_user() for _ in range(3)]
    with MailSink(credentials=("mailer", "right")) as sink:
        smtp_settings(settings, sink.port, username="mailer", password="wrong")
        message = send(draft_for(users))
        assert message.status == Status.BLOCKED
        assert "535" in message.blocked_reason and "login" in message.blocked_reason
        assert message.status_data["blocked"]["attempts"] == 1
        assert set(message.receivers.values_list("status", "sending_failed_count", "claimed_by")) == {
            (RStatus.NOT_SENT, 0, "")
        }
        maintenance.sweep()  # still wrong: blocked again, one more attempt, still nobody charged
        message.refresh_from_db()
        assert message.status == Status.BLOCKED and message.status_data["blocked"]["attempts"] == 2

        smtp_settings(settings, sink.port, username="mailer", password="right")
        maintenance.sweep()
    message.refresh_from_db()
    assert message.status == Status.SENT and "blocked" not in message.status_data
    assert sorted(message_ids(sink).values()) == [1, 1, 1]
    assert set(message.receivers.values_list("sending_failed_count", flat=True)) == {0}
    # The receiver being attempted when the login was refused never left: not flagged.
    assert not [r.pk for r in message.receivers.all() if "delivery_uncertain" in r.status_data]


class DroppingHandler(SinkHandler):
    """Drops the connection (no answer) at chosen moments, like a relay restarting."""

    def __init__(self):
        super().__init__()
        self.drop_at_rcpt: set[str] = set()  # once per address
        self.drop_after_data: set[str] = set()  # once per address, after keeping the mail
        self.down = False

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if self.down:
            server.transport.abort()
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.down or address in self.drop_at_rcpt:
            self.drop_at_rcpt.discard(address)
            server.transport.abort()
            return "421 closing"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        if set(envelope.rcpt_tos) & self.drop_after_data:
            self.drop_after_data.difference_update(envelope.rcpt_tos)
            server.transport.abort()
        return reply


@pytest.fixture
def dropping_sink(settings):
    handler = DroppingHandler()
    with MailSink(handler=handler) as sink:
        smtp_settings(settings, sink.port, timeout=2)
        yield sink


@pytest.mark.django_db
def test_a_connection_dropped_mid_batch_reconnects_and_charges_nobody(make_user, dropping_sink):
    users = [make_user() for _ in range(5)]
    dropping_sink.handler.drop_at_rcpt = {users[2].email}
    message = send(draft_for(users))
    assert message.status == Status.SENT
    assert sorted(message_ids(dropping_sink).values()) == [1] * 5
    assert set(message.receivers.values_list("sending_failed_count", flat=True)) == {0}
    assert dropping_sink.handler.sessions == 2  # one reconnect


@pytest.mark.django_db
def test_a_connection_lost_after_data_leaves_the_receiver_uncertain(make_user, dropping_sink, settings):
    settings.MESSAGING_RETRY_BASE_SECONDS = 0  # the uncertain receiver's pause ends at once
    users = [make_user() for _ in range(3)]
    dropping_sink.handler.drop_after_data = {users[1].email}
    message = send(draft_for(users))
    maintenance.sweep()
    message.refresh_from_db()
    assert message.status == Status.SENT
    uncertain = message.receivers.get(user=users[1])
    assert uncertain.status_data["delivery_uncertain"]["reason"].startswith(
        "Connection lost after the message"
    )
    assert uncertain.sending_failed_count == 0
    # The server kept the first copy; the resend carries the same Message-ID.
    counts = message_ids(dropping_sink)
    assert counts[signatures.message_id(uncertain.pk, message.pk, "messaging.local")] == 2
    assert sorted(counts.values()) == [1, 1, 2]


@pytest.mark.django_db
def test_a_server_gone_mid_batch_releases_the_rest_uncharged(make_user, dropping_sink, settings):
    settings.MESSAGING_RETRY_BASE_SECONDS = 0
    users = [make_user() for _ in range(4)]
    handler = dropping_sink.handler

    original = handler.handle_DATA

    async def down_after_second(server, session, envelope):
        reply = await original(server, session, envelope)
        if len(handler.received) == 2:
            handler.down = True
        return reply

    handler.handle_DATA = down_after_second
    message = send(draft_for(users))
    assert message.status == Status.BLOCKED
    assert set(message.receivers.values_list("sending_failed_count", flat=True)) == {0}
    assert message.receivers.filter(status=RStatus.NOT_SENT, claimed_by="").count() == 2

    handler.down = False
    maintenance.sweep()
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert sorted(message_ids(dropping_sink).values()) == [1] * 4


@pytest.mark.django_db
def test_an_attempt_is_bounded_by_the_timeout_not_per_reply(make_user, settings):
    """A relay that answers DATA after 3 s with a 1 s timeout: the attempt ends after ~1 s and,
    the message having been handed over, the receiver is uncertain, not failed."""
    with MailSink(data_delay=3) as sink:
        smtp_settings(settings, sink.port, timeout=1)
        message = draft_for([make_user()])
        started = time.monotonic()
        send(message)
        elapsed = time.monotonic() - started
    receiver = message.receivers.get()
    assert "delivery_uncertain" in receiver.status_data and receiver.sending_failed_count == 0
    assert elapsed < 2.5


@pytest.mark.django_db
def test_permanent_failures_and_errors_get_no_retry_time(make_user, smtp_mailer, settings):
    settings.MESSAGING_RESEND_LIMIT = 0
    permanent, temporary = make_user(email="x@bounce.example"), make_user(email="y@tempfail.example")
    message = send(draft_for([permanent, temporary]))
    assert message.status == Status.ERROR
    assert list(message.receivers.values_list("next_attempt_datetime", flat=True)) == [None, None]


# --- Edits never race a send ---------------------------------------------------------------------


@pytest.mark.django_db
def test_a_stale_compose_form_cannot_undo_a_send(admin_client, make_user, django_capture_on_commit_callbacks):
    user = make_user()
    message = composing.save_draft(
        Message(
            composed_content={"en": {"subject": "S", "body": "<p>B</p>"}},
            virtual_message_receivers={"chosen_user_ids": [user.pk]},
        )
    )
    edit_url = reverse("messaging:message_edit", args=[message.pk])
    stale = {
        "context_type": "other",
        "users": [user.pk],
        "subject_en": "Changed",
        "body_en": "<p>Changed</p>",
    }
    # The edit view checked the draft, then the send won the race before the save.
    original_is_editable = Message.is_editable
    with django_capture_on_commit_callbacks(execute=True):
        composing.queue_send(message)
    try:
        Message.is_editable = property(lambda self: True)
        response = admin_client.post(edit_url, stale)
    finally:
        Message.is_editable = original_is_editable
    assert response.status_code == 409
    assert "was sent while you were editing" in response.content.decode()
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert message.composed_content["en"]["subject"] == "S"
    assert message.receivers.count() == 1


@pytest.mark.django_db
def test_a_stale_delete_keeps_a_sent_message(admin_client, make_user, django_capture_on_commit_callbacks):
    user = make_user()
    message = composing.save_draft(
        Message(
            composed_content={"en": {"subject": "S", "body": "<p>B</p>"}},
            virtual_message_receivers={"chosen_user_ids": [user.pk]},
        )
    )
    with django_capture_on_commit_callbacks(execute=True):
        composing.queue_send(message)
    assert not composing.delete_draft(message)
    assert Message.objects.filter(pk=message.pk).exists()


# --- Commit durability ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_delivery_never_relaxes_commit_durability(make_user):
    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is a PostgreSQL setting")
    message = sending_message([make_user()])
    delivery.deliver_message(message.pk)
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


# --- prepare_and_send --------------------------------------------------------------------------


@pytest.mark.django_db
def test_prepare_and_send_from_queued_refuses_a_second_preparer(make_user):
    message = draft_for([make_user()], status=Status.QUEUED)
    assert transitions.start_preparing(message, "first")
    with pytest.raises(ValueError, match="not a draft"):
        sending.start_preparing(message, "second")
