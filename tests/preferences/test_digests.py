"""Digests (messaging.preferences.digests): held receivers become one email per user and period, at
the user's local digest time, with a controlled clock (time zones, a DST change, weekly days).

Messages are prepared the real way (prepare_and_send, each user's preference deciding held or
skipped); `send_due(now=...)` is the periodic task's service. Mail goes to Django's locmem outbox,
and over a real SMTP conversation in the language test.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import resolve

from messaging import conf
from messaging.compose import composing
from messaging.engine import controlling
from messaging.engine.channels import DeliveryResult
from messaging.feedback import signatures
from messaging.models import DeliveryMode, Message, MessageReceiver, NotificationPreference
from messaging.preferences import digests, links
from tests.engine_helpers import SEND_ARGS, FixedSubject, LanguageSubject

pytestmark = pytest.mark.django_db

HELD = MessageReceiver.Status.HELD
SENT = MessageReceiver.Status.SENT
COMMENT = Message.ContextType.COMMENT
FEEDBACK = Message.ContextType.FEEDBACK


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def digest_user(make_user):
    def make(zone: str = "Europe/Oslo", modes: dict | None = None, language: str = "en", **fields):
        user = make_user(language=language, **fields)
        user.messaging_profile.time_zone = zone
        user.messaging_profile.save(update_fields=["time_zone"])
        for context_type, mode in (modes if modes is not None else {COMMENT: DeliveryMode.DAILY}).items():
            NotificationPreference.objects.create(user=user, context_type=context_type, mode=mode)
        return user

    return make


def send_at(when: datetime, users, *, context_type=COMMENT, subject=None, expires_at=None, **args) -> Message:
    """A message of `context_type` prepared and sent at `when` (the clock stands still there)."""
    message = Message.objects.create(
        context_type=context_type, virtual_message_receivers={"user_ids": [u.pk for u in users]}
    )
    with time_machine.travel(when, tick=False):
        message.prepare_and_send(
            subject or LanguageSubject(prefix=f"Item {message.pk}"),
            **{**SEND_ARGS, **args},
            expires_at=expires_at,
        )
    message.refresh_from_db()
    return message


@pytest.fixture
def run_digests(django_capture_on_commit_callbacks):
    """send_due(now), with the delivery it queues after commit run here (huey is immediate)."""

    def run(now: datetime) -> list[Message]:
        with django_capture_on_commit_callbacks(execute=True):
            return digests.send_due(now)

    return run


def held_of(user) -> list[MessageReceiver]:
    return list(MessageReceiver.objects.filter(user=user, message__context_type__in=[COMMENT, FEEDBACK]))


def digest_receivers(user=None):
    receivers = MessageReceiver.objects.filter(message__context_type=Message.ContextType.DIGEST)
    return receivers.filter(user=user) if user is not None else receivers


@pytest.mark.usefixtures("scripted_channel")
class TestDueTimes:
    def test_each_zone_gets_its_local_digest_time_and_nothing_is_assembled_before_it(
        self, settings, digest_user, run_digests, scripted_channel
    ):
        settings.MESSAGING_DIGEST_TIME = "07:00"
        oslo, new_york, tokyo = (
            digest_user("Europe/Oslo"),
            digest_user("America/New_York"),
            digest_user("Asia/Tokyo"),
        )
        message = send_at(utc(2026, 3, 10, 12), [oslo, new_york, tokyo])

        due = {r.user_id: r.next_attempt_datetime for r in message.receivers.all()}
        assert {r.status for r in message.receivers.all()} == {HELD}
        assert due == {
            tokyo.pk: utc(2026, 3, 10, 22),  # 07:00 JST on the 11th
            oslo.pk: utc(2026, 3, 11, 6),  # 07:00 CET
            new_york.pk: utc(2026, 3, 11, 11),  # 07:00 EDT (DST began on the 8th)
        }
        assert message.status_data["summary"]["receiver_counts"]["held"] == 3

        assert run_digests(utc(2026, 3, 10, 21, 59)) == []
        assert not digest_receivers().exists() and not scripted_channel.attempted
        for now, user in ((utc(2026, 3, 10, 22), tokyo), (utc(2026, 3, 11, 6), oslo)):
            (digest,) = run_digests(now)
            assert [r.user_id for r in digest.receivers.all()] == [user.pk]
        assert run_digests(utc(2026, 3, 11, 10, 59)) == []
        (digest,) = run_digests(utc(2026, 3, 11, 11))
        assert [r.user_id for r in digest.receivers.all()] == [new_york.pk]
        assert sorted(scripted_channel.delivered) == sorted(u.email for u in (oslo, new_york, tokyo))

    @pytest.mark.parametrize(
        ("prepared", "due"),
        [
            # Spring forward on 2026-03-29: 07:00 is 06:00 UTC the day before, 05:00 UTC that day.
            (utc(2026, 3, 27, 10), utc(2026, 3, 28, 6)),
            (utc(2026, 3, 28, 10), utc(2026, 3, 29, 5)),
            # Fall back on 2026-10-25: 05:00 UTC the day before, 06:00 UTC that day.
            (utc(2026, 10, 23, 10), utc(2026, 10, 24, 5)),
            (utc(2026, 10, 24, 10), utc(2026, 10, 25, 6)),
        ],
    )
    def test_daily_digest_keeps_local_time_across_dst(
        self, settings, digest_user, run_digests, prepared, due
    ):
        settings.MESSAGING_DIGEST_TIME = "07:00"
        user = digest_user("Europe/Oslo")
        (held,) = send_at(prepared, [user]).receivers.all()
        assert held.next_attempt_datetime == due
        assert run_digests(due - timedelta(minutes=1)) == []
        (digest,) = run_digests(due)
        held.refresh_from_db()
        assert held.status == SENT
        assert held.digest.message_id == digest.pk

    def test_weekly_digest_goes_on_the_configured_weekday(
        self, settings, digest_user, run_digests, scripted_channel
    ):
        settings.MESSAGING_DIGEST_TIME = "07:00"
        settings.MESSAGING_DIGEST_WEEKDAY = 2  # Wednesday
        user = digest_user("Europe/Oslo", {COMMENT: DeliveryMode.WEEKLY})
        (held,) = send_at(utc(2026, 3, 12, 10), [user]).receivers.all()  # a Thursday
        assert held.next_attempt_datetime == utc(2026, 3, 18, 6)
        assert run_digests(utc(2026, 3, 13, 6)) == []  # the next day's daily time
        assert run_digests(utc(2026, 3, 18, 5, 59)) == []
        run_digests(utc(2026, 3, 18, 6))
        assert digest_receivers(user).get().subject == "Your weekly digest: 1 message"
        assert scripted_channel.delivered == [user.email]


@pytest.mark.usefixtures("scripted_channel")
class TestAssembly:
    def test_one_digest_per_user_with_every_due_item_newest_first(
        self, digest_user, run_digests, scripted_channel
    ):
        ada, bob = digest_user(), digest_user()
        first = send_at(utc(2026, 5, 4, 8), [ada, bob], subject=FixedSubject(text="First news"))
        second = send_at(utc(2026, 5, 4, 9), [ada], subject=FixedSubject(text="Second news"))
        third = send_at(utc(2026, 5, 4, 10), [ada, bob], subject=FixedSubject(text="Third news"))

        (digest,) = run_digests(utc(2026, 5, 5, 6))

        assert digest.context_type == Message.ContextType.DIGEST
        assert digest.created_by is None
        assert digest.metadata["digest"]["items"] == 5
        digest.refresh_from_db()
        assert digest.status == Message.Status.SENT
        by_user = {r.user_id: r for r in digest.receivers.all()}
        assert set(by_user) == {ada.pk, bob.pk}
        assert by_user[ada.pk].subject == "Your daily digest: 3 messages"
        assert by_user[bob.pk].subject == "Your daily digest: 2 messages"
        assert by_user[ada.pk].metadata == {"context_types": [COMMENT]}
        plain = by_user[ada.pk].message_content_plain
        assert plain.index("Third news") < plain.index("Second news") < plain.index("First news")
        html = by_user[ada.pk].message_content_html
        assert html.index("Third news") < html.index("Second news") < html.index("First news")
        assert "Language: en" in html and "<!DOCTYPE" not in html.split("<body>", 1)[1]
        assert sorted(scripted_channel.delivered) == sorted([ada.email, bob.email])

        for message in (first, second, third):
            message.refresh_from_db()
            receivers = list(message.receivers.all())
            assert {r.status for r in receivers} == {SENT}
            assert {r.digest_id for r in receivers} <= {r.pk for r in by_user.values()}
            assert all(r.digest.user_id == r.user_id for r in receivers)
            assert message.status_data["summary"]["receiver_counts"]["sent"] == len(receivers)
            assert message.status_data["summary"]["receiver_counts"]["held"] == 0

    def test_an_item_held_after_assembly_goes_into_the_next_digest(self, digest_user, run_digests):
        user = digest_user()
        send_at(utc(2026, 5, 4, 8), [user], subject=FixedSubject(text="Monday item"))
        (monday,) = run_digests(utc(2026, 5, 5, 6))
        late = send_at(utc(2026, 5, 5, 6, 1), [user], subject=FixedSubject(text="Tuesday item"))
        (held,) = late.receivers.all()
        assert held.status == HELD and held.next_attempt_datetime == utc(2026, 5, 6, 5)  # 07:00 CEST
        assert run_digests(utc(2026, 5, 6, 4, 59)) == []

        (tuesday,) = run_digests(utc(2026, 5, 6, 5))

        first, second = (d.receivers.get() for d in (monday, tuesday))
        assert "Monday item" in first.message_content_plain
        assert "Tuesday item" not in first.message_content_plain
        assert "Tuesday item" in second.message_content_plain
        assert "Monday item" not in second.message_content_plain
        held.refresh_from_db()
        assert (held.status, held.digest_id) == (SENT, second.pk)

    def test_running_twice_at_the_same_time_puts_no_item_in_two_digests(
        self, digest_user, run_digests, scripted_channel
    ):
        users = [digest_user() for _ in range(3)]
        send_at(utc(2026, 5, 4, 8), users)
        assert len(run_digests(utc(2026, 5, 5, 6))) == 1
        assert run_digests(utc(2026, 5, 5, 6)) == []
        assert digest_receivers().count() == 3
        assert len(scripted_channel.delivered) == 3

    def test_large_runs_are_split_into_several_digest_messages(self, digest_user, run_digests, monkeypatch):
        monkeypatch.setattr(digests, "USERS_PER_DIGEST_MESSAGE", 2)
        users = [digest_user() for _ in range(5)]
        send_at(utc(2026, 5, 4, 8), users)
        made = run_digests(utc(2026, 5, 5, 6))
        assert [d.receivers.count() for d in made] == [2, 2, 1]
        assert sorted(digest_receivers().values_list("user_id", flat=True)) == sorted(u.pk for u in users)

    def test_expired_messages_held_items_are_cancelled_not_digested(self, digest_user, run_digests):
        user = digest_user()
        expired = send_at(
            utc(2026, 5, 4, 8), [user], subject=FixedSubject(text="Gone"), expires_at=utc(2026, 5, 4, 20)
        )
        send_at(utc(2026, 5, 4, 9), [user], subject=FixedSubject(text="Still wanted"))

        (digest,) = run_digests(utc(2026, 5, 5, 6))

        (cancelled,) = expired.receivers.all()
        assert cancelled.status == MessageReceiver.Status.CANCELLED
        assert cancelled.cancel_reason == MessageReceiver.CancelReason.EXPIRED
        assert cancelled.digest_id is None
        receiver = digest.receivers.get()
        assert receiver.subject == "Your daily digest: 1 message"
        assert "Gone" not in receiver.message_content_plain
        assert "Still wanted" in receiver.message_content_plain
        expired.refresh_from_db()
        assert expired.status_data["summary"]["cancelled"] == {"expired": 1}

    def test_skipped_receivers_never_appear(self, digest_user, run_digests, scripted_channel):
        daily = digest_user()
        off = digest_user(modes={COMMENT: DeliveryMode.OFF})
        message = send_at(utc(2026, 5, 4, 8), [daily, off])
        skipped = message.receivers.get(user=off)
        assert skipped.status == MessageReceiver.Status.SKIPPED

        run_digests(utc(2026, 5, 12, 6))

        assert not digest_receivers(off).exists()
        skipped.refresh_from_db()
        assert (skipped.status, skipped.digest_id) == (MessageReceiver.Status.SKIPPED, None)
        assert scripted_channel.delivered == [daily.email]

    def test_a_cancelled_digest_puts_its_items_back_for_the_next_one(self, digest_user):
        user = digest_user()
        (held,) = send_at(utc(2026, 5, 4, 8), [user]).receivers.all()
        (cancelled,) = digests.send_due(utc(2026, 5, 5, 6))  # delivery queued, never run
        held.refresh_from_db()
        assert held.status == HELD and held.digest.message_id == cancelled.pk
        controlling.cancel(cancelled)

        (again,) = digests.send_due(utc(2026, 5, 5, 6, 5))

        held.refresh_from_db()
        assert held.status == HELD and held.digest.message_id == again.pk

    def test_a_digest_that_fails_for_good_leaves_its_items_undelivered_and_resendable(
        self, digest_user, run_digests, scripted_channel
    ):
        user = digest_user(email="gone@x.org")
        scripted_channel.answers["gone@x.org"] = DeliveryResult(
            delivered=False, permanent=True, reason="550 5.1.1 no such user"
        )
        (held,) = send_at(utc(2026, 5, 4, 8), [user]).receivers.all()

        run_digests(utc(2026, 5, 5, 6))
        digests.send_due(utc(2026, 5, 5, 6, 5))  # the next run settles what the first one sent

        held.refresh_from_db()
        assert held.digest.status == MessageReceiver.Status.FAILED and held.digest.permanent_failure
        assert held.status == MessageReceiver.Status.ERROR and held.permanent_failure
        assert held.last_error == "550 5.1.1 no such user"
        assert held.is_resendable
        assert held.message.status_data["summary"]["receiver_counts"]["error"] == 1

    def test_a_mix_of_daily_and_weekly_items_is_just_a_digest(self, settings, digest_user, run_digests):
        settings.MESSAGING_DIGEST_WEEKDAY = 0
        user = digest_user(modes={COMMENT: DeliveryMode.DAILY, FEEDBACK: DeliveryMode.WEEKLY})
        send_at(utc(2026, 5, 10, 8), [user], context_type=COMMENT)  # a Sunday: both due Monday
        send_at(utc(2026, 5, 10, 9), [user], context_type=FEEDBACK)
        (digest,) = run_digests(utc(2026, 5, 11, 5))
        receiver = digest.receivers.get()
        assert receiver.subject == "Your digest: 2 messages"
        assert receiver.metadata == {"context_types": [COMMENT, FEEDBACK]}


@pytest.mark.usefixtures("scripted_channel")
class TestContent:
    def test_long_items_are_shortened_with_a_link_and_everything_is_escaped(
        self, settings, digest_user, run_digests
    ):
        settings.MESSAGING_DIGEST_ITEM_MAX_CHARS = 60
        user = digest_user()
        message = send_at(
            utc(2026, 5, 4, 8),
            [user],
            subject=FixedSubject(text="<b>Tom & Jerry</b>"),
            template_context={"title": "News <views> & more " * 10},
        )
        (held,) = message.receivers.all()
        assert len(held.message_content_plain) > 60

        receiver = run_digests(utc(2026, 5, 5, 6))[0].receivers.get()

        read_url = links.read_url(held.user_id, held.pk)
        prefix = read_url.rsplit("/", 2)[0]  # the token differs by its timestamp
        html, plain = receiver.message_content_html, receiver.message_content_plain
        assert "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;" in html and "<b>Tom" not in html
        assert "&lt;views&gt; &amp; more" in html and "<views>" not in html
        assert "<h1>News" not in html  # the stored HTML is not shown, only its shortened text
        assert "Read the whole message" in html and f'href="{prefix}/' in html
        shortened = re.search(r"# (News.*?)…", plain)
        assert shortened and len(shortened[0]) <= 61
        assert shortened[1].endswith("more") or shortened[1].endswith("&")  # cut between words
        assert f"Read the whole message: {prefix}/" in plain
        token = re.search(rf"{re.escape(prefix)}/(\S+?)/?(?:\s|$)", plain)[1]
        link = links.load_read(token)
        assert (link.user_id, link.receiver_id) == (user.pk, held.pk)

    def test_short_items_show_their_own_html_without_a_read_link(self, digest_user, run_digests):
        user = digest_user()
        send_at(utc(2026, 5, 4, 8), [user])
        receiver = run_digests(utc(2026, 5, 5, 6))[0].receivers.get()
        assert "<h1>News</h1>" in receiver.message_content_html
        assert '<a href="https://example.org/x">the page</a>' in receiver.message_content_html
        assert "Read the whole message" not in receiver.message_content_plain

    def test_a_staff_composed_item_is_shown_without_its_own_document(
        self, digest_user, run_digests, django_capture_on_commit_callbacks
    ):
        """Composed messages are stored as whole HTML documents; the digest shows their body."""
        user = digest_user()
        message = Message.objects.create(
            context_type=COMMENT,
            composed_content={"en": {"subject": "Composed", "body": "<p>Hello {{ recipient_name }}</p>"}},
            virtual_message_receivers={"chosen_user_ids": [user.pk]},
        )
        with (
            time_machine.travel(utc(2026, 5, 4, 8), tick=False),
            django_capture_on_commit_callbacks(execute=True),
        ):
            composing.queue_send(message)
        (held,) = message.receivers.all()
        assert held.status == HELD and "<body" in held.message_content_html

        html = run_digests(utc(2026, 5, 5, 6))[0].receivers.get().message_content_html

        assert f"<p>Hello {user.get_full_name()}</p>" in html
        assert html.count("<!DOCTYPE") == html.count("<body") == html.count("</html>") == 1

    def test_footer_links_to_the_users_preference_page(self, digest_user, run_digests):
        user = digest_user(modes={COMMENT: DeliveryMode.DAILY, FEEDBACK: DeliveryMode.DAILY})
        send_at(utc(2026, 5, 4, 8), [user], context_type=COMMENT)
        send_at(utc(2026, 5, 4, 9), [user], context_type=FEEDBACK)
        plain = run_digests(utc(2026, 5, 5, 6))[0].receivers.get().message_content_plain
        url = re.search(r"Change your notification settings: (\S+)", plain)[1]
        assert url.startswith(conf.site_url())
        match = resolve(url.removeprefix(conf.site_url()))
        assert match.view_name == "preferences:manage_signed"
        token = [*match.args, *match.kwargs.values()][0]
        assert links.load_manage(token).user_id == user.pk


def test_digest_in_each_users_language_over_smtp(digest_user, smtp_mailer, run_digests):
    """Each user's digest is made in their language (the item labels are translated, the HTML
    says its language) and goes out over a real SMTP conversation; the held receivers end sent,
    pointing at it, and their message publishes the new counts."""
    en = digest_user(language="en", email="en@uni.example")
    nb = digest_user(language="nb", email="nb@uni.example")
    message = send_at(utc(2026, 5, 4, 8), [en, nb])

    (digest,) = run_digests(utc(2026, 5, 5, 6))

    receivers = {r.user_id: r for r in digest.receivers.all()}
    assert (receivers[en.pk].language, receivers[nb.pk].language) == ("en", "nb")
    received = {m.rcpt_tos[0]: m.message for m in smtp_mailer.received}
    assert set(received) == {"en@uni.example", "nb@uni.example"}
    for user, language, label in ((en, "en", "Comment"), (nb, "nb", "Kommentar")):
        email = received[user.email]
        receiver = receivers[user.pk]
        assert email["Message-ID"] == signatures.message_id(receiver.pk, digest.pk, "messaging.local")
        assert email["Subject"] == receiver.subject
        html = email.get_body(("html",)).get_content()
        text = email.get_body(("plain",)).get_content()
        assert f'<html lang="{language}">' in html
        assert f"Language: {language}." in html  # the item, as it was rendered for this user
        assert label in text and label in html
    assert "Comment" not in received[nb.email].get_body(("plain",)).get_content()
    assert received[en.email]["Subject"] == "Your daily digest: 1 message"
    assert received[nb.email]["Subject"] == "Ditt daglige sammendrag: 1 melding"
    assert "Endre varslingsinnstillingene dine" in received[nb.email].get_body(("plain",)).get_content()

    message.refresh_from_db()
    for held in message.receivers.all():
        assert held.status == SENT
        assert held.digest_id == receivers[held.user_id].pk
        assert held.sent_datetime == receivers[held.user_id].sent_datetime
    assert message.status == Message.Status.SENT
    assert message.status_data["summary"]["receiver_counts"]["sent"] == 2
    digest.refresh_from_db()
    assert digest.status == Message.Status.SENT
