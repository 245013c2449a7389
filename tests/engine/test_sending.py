"""SPEC §2: prepare_and_send, send(), counters, the resend limit and the message roll-up.

Mail goes to Django's locmem outbox here; test_smtp.py does the same over real SMTP."""

from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messaging.engine import resending, transitions
from messaging.engine.channels import DeliveryResult
from messaging.models import AuditEvent, Message, MessageReceiver
from tests.engine_helpers import SEND_ARGS, LanguageSubject, RaisingSubject

pytestmark = pytest.mark.django_db


def draft_for(users, **fields) -> Message:
    return Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]}, **fields)


def send(message, subject_generator=None, **overrides):
    message.prepare_and_send(subject_generator or LanguageSubject(), **{**SEND_ARGS, **overrides})
    message.refresh_from_db()
    return message


class StatusRecordingSubject(LanguageSubject):
    def get_subject_text(self):
        self.kwargs.setdefault("seen", []).append(Message.objects.get(pk=self.kwargs["pk"]).status)
        return super().get_subject_text()


class TestPrepareAndSend:
    def test_every_user_gets_one_receiver_in_their_language(self, make_user):
        en, nb = make_user(language="en"), make_user(language="nb")
        message = send(draft_for([en, nb, en]))
        assert message.status == Message.Status.SENT
        receivers = {r.user_id: r for r in message.receivers.all()}
        assert set(receivers) == {en.pk, nb.pk}
        assert receivers[nb.pk].subject == "Subject [nb]"
        assert {r.status for r in receivers.values()} == {MessageReceiver.Status.SENT}
        assert sorted(m.to[0] for m in mail.outbox) == sorted([en.email, nb.email])

    def test_status_goes_preparing_then_sending(self, make_user, scripted_channel):
        message = draft_for([make_user()])
        subject = StatusRecordingSubject(pk=message.pk)
        send(message, subject_generator=subject)
        assert subject.kwargs["seen"] == [Message.Status.PREPARING]
        assert scripted_channel.seen_statuses == [Message.Status.SENDING]
        assert message.status == Message.Status.SENT

    def test_one_receiver_per_message_type(self, make_user, scripted_channel):
        message = send(draft_for([make_user()], message_type=[]))
        assert message.message_type == ["email"]
        assert message.receivers.count() == 1

    def test_not_a_draft_is_refused_and_nothing_changes(self, make_user):
        message = draft_for([make_user()], status=Message.Status.SENT, status_data={"keep": 1})
        with pytest.raises(ValueError, match="not a draft"):
            send(message)
        message.refresh_from_db()
        assert message.status == Message.Status.SENT
        assert message.status_data == {"keep": 1}
        assert not message.receivers.exists()

    def test_invalid_receivers_raise_before_anything_changes(self):
        message = Message.objects.create(virtual_message_receivers={"user_ids": []})
        with pytest.raises(ValueError, match="must not be empty"):
            send(message)
        message.refresh_from_db()
        assert message.status == Message.Status.DRAFT

    def test_unknown_message_type_is_refused(self, make_user):
        message = draft_for([make_user()], message_type=["pigeon"])
        with pytest.raises(Exception, match="pigeon"):
            send(message)
        assert Message.objects.get(pk=message.pk).status == Message.Status.DRAFT

    def test_exception_while_preparing_is_recorded_not_raised(self, make_user):
        message = draft_for([make_user(), make_user()], status_data={"keep": "me"})
        send(message, subject_generator=RaisingSubject())
        assert message.status == Message.Status.ERROR
        assert message.status_data["keep"] == "me"
        (error,) = message.status_data["errors"]
        assert set(error) >= {"error_message", "timestamp", "exception_traceback"}
        assert "subject generator exploded" in error["error_message"]
        assert "Traceback" in error["exception_traceback"]
        assert not message.receivers.exists()

    def test_errors_are_appended(self, make_user):
        message = draft_for([make_user()], status_data={"errors": [{"error_message": "old"}]})
        send(message, subject_generator=RaisingSubject())
        assert message.status_data["errors"][0]["error_message"] == "old"
        assert len(message.status_data["errors"]) == 2

    def test_subject_with_line_break_is_the_messages_error(self, make_user):
        from tests.engine_helpers import FixedSubject

        message = send(draft_for([make_user()]), subject_generator=FixedSubject(text="a\nb"))
        assert message.status == Message.Status.ERROR
        assert "line break" in message.status_data["errors"][0]["error_message"]

    def test_broken_template_is_the_messages_error(self, make_user):
        message = send(draft_for([make_user()]), template_name="tests/broken.html")
        assert message.status == Message.Status.ERROR
        assert "TemplateSyntaxError" in message.status_data["errors"][0]["error_message"]

    def test_unknown_user_ids_are_skipped_and_recorded(self, make_user):
        user = make_user()
        message = Message.objects.create(virtual_message_receivers={"user_ids": [user.pk, 999999]})
        send(message)
        assert message.status == Message.Status.SENT
        assert message.status_data["skipped_user_ids"] == [999999]
        assert message.receivers.count() == 1

    def test_only_unknown_users_is_an_error(self):
        message = send(Message.objects.create(virtual_message_receivers={"user_ids": [999998]}))
        assert message.status == Message.Status.ERROR
        assert "nothing to send" in message.status_data["errors"][0]["error_message"]

    def test_user_without_address_fails_clearly(self, make_user):
        ok, nobody = make_user(), make_user(email="")
        message = send(draft_for([ok, nobody]))
        assert message.status == Message.Status.ERROR
        receiver = message.receivers.get(user=nobody)
        assert receiver.status == MessageReceiver.Status.FAILED
        assert "no email address" in receiver.errors[0]["error_message"]
        assert receiver.permanent_failure
        assert message.status_data["summary"]["receiver_counts"]["failed"] == 1

    def test_counts_are_published_for_the_status_page(self, make_user, scripted_channel):
        from messaging.engine.status import published_counts

        scripted_channel.answers["no@x.org"] = DeliveryResult(delivered=False, reason="451 later")
        message = send(draft_for([make_user(), make_user(email="no@x.org")]))
        assert message.status_data["summary"]["receiver_counts"] == {
            "cancelled": 0,
            "skipped": 0,
            "held": 0,
            "not_sent": 0,
            "error": 0,
            "failed": 1,
            "sent": 1,
        }
        MessageReceiver.objects.filter(message=message).delete()  # published counts are not recounted
        assert published_counts(message)["sent"] == 1

    def test_queries_grow_by_batches_not_per_receiver(self, make_user, scripted_channel):
        """Reads are per batch; the only per-receiver statements are the two UPDATEs that mark
        each receiver in flight and record its result (each committed before the channel takes
        the receiver, or the next one, for crash safety)."""

        def count_queries(n):
            users = [make_user() for _ in range(n)]
            message = draft_for(users)
            with CaptureQueriesContext(connection) as ctx:
                send(message)
            assert message.status == Message.Status.SENT
            sql = [q["sql"] for q in ctx.captured_queries]
            per_receiver_records = [
                s
                for s in sql
                if s.startswith("UPDATE") and '"status" = ' in s and "sending_success_count" in s
            ]
            marks = [s for s in sql if s.startswith("UPDATE") and 'SET "in_flight_since" = CASE' in s]
            return len(sql) - len(per_receiver_records) - len(marks), len(per_receiver_records), len(marks)

        other_50, records_50, marks_50 = count_queries(50)
        other_500, records_500, marks_500 = count_queries(500)
        assert (records_50, records_500) == (50, 500)
        assert (marks_50, marks_500) == (50, 500)
        # 450 more receivers: one more prepare batch and 5 more claim batches of 100 (about six
        # statements each: savepoint, select, update, release, load, the channel's own read).
        assert other_500 - other_50 <= 10 * 7, (other_50, other_500)


class TestSend:
    @pytest.fixture
    def receiver(self, make_user):
        # An enforced type: its email is exactly the receiver's content (no preference footer).
        message = Message.objects.create(
            status=Message.Status.SENDING, context_type=Message.ContextType.DEADLINE_MOVED
        )
        return MessageReceiver.objects.create(
            message=message,
            user=make_user(),
            send_to="r@x.org",
            subject="Hi",
            message_content_plain="plain",
            message_content_html="<p>html</p>",
        )

    def test_send_by_hand_takes_a_receiver_set_aside_but_never_a_workers(self, receiver):
        later = timezone.now() + timedelta(minutes=5)
        MessageReceiver.objects.filter(pk=receiver.pk).update(lease_expires_datetime=later)  # deferred
        assert receiver.send().delivered
        other = MessageReceiver.objects.create(
            message=receiver.message, user=receiver.user, send_to="o@x.org"
        )
        MessageReceiver.objects.filter(pk=other.pk).update(claimed_by="worker", lease_expires_datetime=later)
        result = other.send()
        assert not result.delivered and "a worker is delivering" in result.reason
        assert [m.to for m in mail.outbox] == [["r@x.org"]]

    def test_a_send_by_hand_that_died_in_flight_is_flagged_when_sent_again(self, receiver):
        transitions.claim_one(receiver, "dead-process")
        transitions.mark_sending_now(receiver, "dead-process")
        MessageReceiver.objects.filter(pk=receiver.pk).update(
            lease_expires_datetime=timezone.now() - timedelta(seconds=1)
        )
        receiver.send()
        receiver.refresh_from_db()
        assert receiver.status_data["delivery_uncertain"]["abandoned_by"] == "dead-process"
        assert receiver.in_flight_since is None

    def test_success_counts_and_records(self, receiver):
        receiver.send()
        assert receiver.status == MessageReceiver.Status.SENT
        assert receiver.sending_success_count == 1
        assert receiver.sent_datetime is not None
        stored = MessageReceiver.objects.get(pk=receiver.pk)
        assert (stored.status, stored.sending_success_count) == ("sent", 1)
        (email,) = mail.outbox
        assert email.to == ["r@x.org"]
        assert email.body == "plain"
        assert email.alternatives[0].content == "<p>html</p>"
        assert email.extra_headers["Message-ID"].startswith(f"<receiver-{receiver.pk}.")
        assert Message.objects.get(pk=receiver.message_id).status == Message.Status.SENT

    @pytest.mark.parametrize(
        ("limit", "statuses"),
        [
            (2, ["failed", "failed", "error", "error"]),
            (0, ["error", "error"]),
            (1, ["failed", "error"]),
        ],
    )
    def test_resend_limit_boundary(self, receiver, scripted_channel, settings, limit, statuses):
        settings.MESSAGING_RESEND_LIMIT = limit
        scripted_channel.answers["r@x.org"] = DeliveryResult(delivered=False, reason="451 later")
        seen = []
        for _ in statuses:
            receiver.send()
            seen.append(receiver.status)
        assert seen == statuses
        stored = MessageReceiver.objects.get(pk=receiver.pk)
        assert stored.sending_failed_count == len(statuses)
        assert len(stored.errors) == len(statuses)
        assert stored.errors[0]["error_message"] == "451 later"

    def test_send_after_failures_succeeds_and_message_becomes_sent(self, receiver, scripted_channel):
        scripted_channel.answers["r@x.org"] = DeliveryResult(delivered=False, reason="boom")
        receiver.send()
        assert Message.objects.get(pk=receiver.message_id).status == Message.Status.ERROR
        scripted_channel.answers.clear()
        receiver.send()
        assert (receiver.status, receiver.sending_failed_count, receiver.sending_success_count) == (
            "sent",
            1,
            1,
        )
        assert Message.objects.get(pk=receiver.message_id).status == Message.Status.SENT

    def test_invalid_address_is_a_permanent_error_not_a_crash(self, receiver):
        receiver.send_to = "not an address\n"
        receiver.save()
        receiver.send()
        assert receiver.status == MessageReceiver.Status.FAILED
        assert receiver.permanent_failure


class TestResending:
    """Resends queue a delivery task after commit; the callbacks run the (immediate) task."""

    @pytest.fixture(autouse=True)
    def committed(self, django_capture_on_commit_callbacks, monkeypatch):
        for name in ["resend_failed", "resend_receiver", "retry_due_receivers"]:
            service = getattr(resending, name)

            def run(*args, _service=service, **kwargs):
                with django_capture_on_commit_callbacks(execute=True):
                    return _service(*args, **kwargs)

            monkeypatch.setattr(f"tests.engine.test_sending.resending.{name}", run)

    @pytest.fixture
    def sent_message(self, make_user, scripted_channel):
        users = [make_user(email=f"u{i}@x.org") for i in range(4)]
        scripted_channel.answers["u1@x.org"] = DeliveryResult(delivered=False, reason="451 later")
        scripted_channel.answers["u2@x.org"] = DeliveryResult(
            delivered=False, permanent=True, code=550, reason="550 no such user"
        )
        message = send(draft_for(users))
        assert message.status == Message.Status.ERROR
        scripted_channel.answers.clear()
        scripted_channel.delivered.clear()
        return message

    def test_resend_failed_never_resends_sent_and_is_safe_twice(
        self, sent_message, scripted_channel, admin_user
    ):
        assert resending.resend_failed(sent_message, actor=admin_user) == 2
        assert sorted(scripted_channel.delivered) == ["u1@x.org", "u2@x.org"]
        assert resending.resend_failed(sent_message, actor=admin_user) == 0
        assert sorted(scripted_channel.delivered) == ["u1@x.org", "u2@x.org"]
        sent_message.refresh_from_db()
        assert sent_message.status == Message.Status.SENT
        event = AuditEvent.objects.get(message=sent_message, action=AuditEvent.Action.RESENT_ALL)
        assert (event.actor, event.details) == (admin_user, {"receivers": 2, "include_permanent": True})

    def test_resend_goes_to_the_users_current_address(self, sent_message, scripted_channel):
        failed = sent_message.receivers.get(send_to="u2@x.org")
        failed.user.email = "fixed@x.org"
        failed.user.save()
        assert resending.resend_receiver(failed)
        assert scripted_channel.delivered == ["fixed@x.org"]

    def test_resend_one_receiver(self, sent_message, scripted_channel, admin_user):
        failed = sent_message.receivers.get(send_to="u1@x.org")
        assert resending.resend_receiver(failed, actor=admin_user)
        failed.refresh_from_db()
        assert failed.status == MessageReceiver.Status.SENT
        assert not resending.resend_receiver(failed, actor=admin_user)
        assert scripted_channel.delivered == ["u1@x.org"]
        assert (
            AuditEvent.objects.filter(
                receiver=failed, actor=admin_user, action=AuditEvent.Action.RESENT
            ).count()
            == 1
        )

    def test_automatic_retry_only_temporary_due_failures(self, sent_message, scripted_channel):
        assert resending.retry_due_receivers() == 0  # backoff not over yet
        MessageReceiver.objects.update(next_attempt_datetime=timezone.now() - timedelta(seconds=1))
        assert resending.retry_due_receivers() == 1
        assert scripted_channel.delivered == ["u1@x.org"]
        permanent = sent_message.receivers.get(send_to="u2@x.org")
        assert permanent.status == MessageReceiver.Status.FAILED

    def test_backoff_grows_exponentially(self, sent_message, settings, scripted_channel):
        receiver = sent_message.receivers.get(send_to="u1@x.org")
        first_delay = receiver.next_attempt_datetime - timezone.now()
        scripted_channel.answers["u1@x.org"] = DeliveryResult(delivered=False, reason="451 again")
        receiver.send()
        second_delay = receiver.next_attempt_datetime - timezone.now()
        assert 50 < first_delay.total_seconds() <= 60
        assert 110 < second_delay.total_seconds() <= 120
