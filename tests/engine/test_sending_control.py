"""Sending control: schedule, expire, pause, resume, cancel, auto-pause and the sender's report.

The clock is controlled with time-machine; delivery runs in-process through a ScriptedChannel
(tests.engine_helpers) unless a test says otherwise. Real consumers and a real sink:
test_sending_control_processes.py; the browser: e2e/test_sending_control.py.
"""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from messaging.compose import composing
from messaging.compose.forms import SendForm
from messaging.engine import controlling, maintenance, resending, transitions
from messaging.engine.channels import DeliveryResult
from messaging.engine.status import FailureWatch
from messaging.models import AuditEvent, Message, MessageReceiver
from messaging.operations import reporting
from tests.engine_helpers import SEND_ARGS, LanguageSubject

pytestmark = pytest.mark.django_db

Status = Message.Status
ReceiverStatus = MessageReceiver.Status
NOON = datetime(2027, 1, 11, 12, 0, tzinfo=ZoneInfo("UTC"))


@pytest.fixture
def clock():
    with time_machine.travel(NOON, tick=False) as traveller:
        yield traveller


@pytest.fixture
def staff(make_user):
    return make_user(is_staff=True, language="nb", email="staff@uni.example")


def composed_draft(staff, users) -> Message:
    content = {"en": {"subject": "Exam moved", "body": "<p>The exam moved.</p>"}}
    chosen = {"chosen_user_ids": [u.pk for u in users], "group_ids": []}
    return composing.save_draft(Message(composed_content=content, virtual_message_receivers=chosen), staff)


def api_message(users, created_by=None) -> Message:
    return Message.objects.create(
        virtual_message_receivers={"user_ids": [u.pk for u in users]}, created_by=created_by
    )


def actions(message) -> list[str]:
    return list(message.audit_events.order_by("id").values_list("action", flat=True))


# Scheduling -------------------------------------------------------------------------------------


class TestSchedule:
    def test_composed_message_waits_then_the_sweeper_starts_it(
        self, clock, staff, make_user, django_capture_on_commit_callbacks
    ):
        users = [make_user(), make_user()]
        message = composed_draft(staff, users)
        with django_capture_on_commit_callbacks(execute=True):
            composing.queue_send(message, staff, send_at=NOON + timedelta(hours=20))
        message.refresh_from_db()
        assert message.status == Status.SCHEDULED and not message.receivers.exists()
        assert message.send_at == NOON + timedelta(hours=20)

        clock.move_to(NOON + timedelta(hours=19, minutes=59))
        with django_capture_on_commit_callbacks(execute=True):
            maintenance.sweep()
        message.refresh_from_db()
        assert message.status == Status.SCHEDULED and mail.outbox == []

        # The consumer was down at 08:00; the first sweep after it comes back starts it.
        clock.move_to(NOON + timedelta(hours=23))
        with django_capture_on_commit_callbacks(execute=True):
            maintenance.sweep()
        message.refresh_from_db()
        assert message.status == Status.SENT
        assert sorted(m.to[0] for m in mail.outbox) == sorted(u.email for u in users)
        assert actions(message) == ["created", "scheduled", "started"]

    def test_recipients_are_resolved_when_it_starts(
        self, clock, staff, make_user, django_capture_on_commit_callbacks
    ):
        from django.contrib.auth.models import Group

        group = Group.objects.create(name="INF1000")
        early = make_user()
        early.groups.add(group)
        message = composed_draft(staff, [])
        message.virtual_message_receivers = {"chosen_user_ids": [], "group_ids": [group.pk]}
        composing.save_draft(message, staff)
        composing.queue_send(message, staff, send_at=NOON + timedelta(hours=1))
        late = make_user()
        late.groups.add(group)  # joined the course after the message was scheduled
        clock.move_to(NOON + timedelta(hours=2))
        with django_capture_on_commit_callbacks(execute=True):
            maintenance.sweep()
        assert set(message.receivers.values_list("user_id", flat=True)) == {early.pk, late.pk}

    def test_reschedule_and_take_back_to_draft(self, clock, staff, make_user):
        message = composed_draft(staff, [make_user()])
        composing.queue_send(message, staff, send_at=NOON + timedelta(hours=1))
        composing.queue_send(message, staff, send_at=NOON + timedelta(days=2))
        message.refresh_from_db()
        assert message.status == Status.SCHEDULED and message.send_at == NOON + timedelta(days=2)

        assert composing.unschedule(message, staff)
        message.refresh_from_db()
        assert message.status == Status.DRAFT and message.send_at is None and message.is_editable
        assert actions(message)[-3:] == ["scheduled", "scheduled", "unscheduled"]
        # Nothing goes out at the old times.
        clock.move_to(NOON + timedelta(days=3))
        maintenance.sweep()
        message.refresh_from_db()
        assert message.status == Status.DRAFT and mail.outbox == []

    def test_send_now_on_a_scheduled_message(
        self, clock, staff, make_user, django_capture_on_commit_callbacks
    ):
        message = composed_draft(staff, [make_user()])
        composing.queue_send(message, staff, send_at=NOON + timedelta(hours=5))
        with django_capture_on_commit_callbacks(execute=True):
            composing.queue_send(message, staff)
        message.refresh_from_db()
        assert message.status == Status.SENT and len(mail.outbox) == 1

    def test_a_started_message_cannot_be_taken_back(
        self, clock, staff, make_user, django_capture_on_commit_callbacks
    ):
        message = composed_draft(staff, [make_user()])
        composing.queue_send(message, staff, send_at=NOON + timedelta(minutes=5))
        clock.move_to(NOON + timedelta(minutes=6))
        with django_capture_on_commit_callbacks(execute=True):
            maintenance.sweep()
        assert not composing.unschedule(message, staff)
        message.refresh_from_db()
        assert message.status == Status.SENT

    def test_api_prepares_now_and_delivers_at_send_at(
        self, clock, make_user, django_capture_on_commit_callbacks
    ):
        users = [make_user(language="nb"), make_user(language="en")]
        message = api_message(users)
        with django_capture_on_commit_callbacks(execute=True):
            message.prepare_and_send(LanguageSubject(), **SEND_ARGS, send_at=NOON + timedelta(hours=1))
        message.refresh_from_db()
        assert message.status == Status.SCHEDULED
        assert message.receivers.filter(status=ReceiverStatus.NOT_SENT).count() == 2
        assert message.status_data["summary"]["total"] == 2
        # Workers do not claim receivers of a scheduled message.
        assert transitions.claim_batch(message.pk, "w") is None
        assert mail.outbox == []

        clock.move_to(NOON + timedelta(hours=1, seconds=30))
        with django_capture_on_commit_callbacks(execute=True):
            maintenance.sweep()
        message.refresh_from_db()
        assert message.status == Status.SENT and len(mail.outbox) == 2

    def test_api_send_at_in_the_past_sends_now(self, clock, make_user):
        message = api_message([make_user()])
        message.prepare_and_send(LanguageSubject(), **SEND_ARGS, send_at=NOON - timedelta(hours=1))
        message.refresh_from_db()
        assert message.status == Status.SENT

    @pytest.mark.parametrize(
        ("send_at", "expires_at", "error"),
        [
            (NOON + timedelta(hours=2), NOON + timedelta(hours=1), "must be after the send time"),
            (None, NOON - timedelta(minutes=1), "must be after the send time and in the future"),
            (datetime(2027, 1, 12, 8, 0), None, "timezone-aware"),
        ],
    )
    def test_api_rejects_impossible_times(self, clock, make_user, send_at, expires_at, error):
        message = api_message([make_user()])
        with pytest.raises(ValueError, match=error):
            message.prepare_and_send(LanguageSubject(), **SEND_ARGS, send_at=send_at, expires_at=expires_at)
        message.refresh_from_db()
        assert message.status == Status.DRAFT and not message.receivers.exists()


class TestSendForm:
    @pytest.fixture(autouse=True)
    def oslo(self, settings, clock):
        settings.TIME_ZONE = "Europe/Oslo"
        timezone.activate(ZoneInfo("Europe/Oslo"))
        yield
        timezone.deactivate()

    def test_later_is_read_in_the_site_time_zone_and_stored_in_utc(self):
        form = SendForm({"when": "later", "send_at": "2027-01-12T08:00", "expires_at": "2027-01-12T17:30"})
        assert form.is_valid(), form.errors
        assert form.cleaned_data["send_at"] == datetime(2027, 1, 12, 7, 0, tzinfo=ZoneInfo("UTC"))
        assert form.cleaned_data["expires_at"] == datetime(2027, 1, 12, 16, 30, tzinfo=ZoneInfo("UTC"))

    @pytest.mark.parametrize(
        ("data", "field", "text"),
        [
            ({"when": "later", "send_at": "2027-01-11T08:00"}, "send_at", "already passed"),
            ({"when": "later", "send_at": ""}, "send_at", "Choose the date and time"),
            ({"when": "later", "send_at": "next tuesday"}, "send_at", "valid date/time"),
            (
                {"when": "later", "send_at": "2027-01-12T08:00", "expires_at": "2027-01-12T07:00"},
                "expires_at",
                "after its send time",
            ),
            ({"when": "now", "expires_at": "2027-01-10T08:00"}, "expires_at", "already passed"),
            # 02:30 on 28 March 2027 does not exist in Oslo (clocks go from 02:00 to 03:00).
            ({"when": "later", "send_at": "2027-03-28T02:30"}, "send_at", "may not exist"),
        ],
    )
    def test_bad_times_are_clear_errors(self, data, field, text):
        form = SendForm(data)
        assert not form.is_valid()
        assert text in " ".join(form.errors[field])

    def test_a_send_time_with_send_now_is_not_guessed(self):
        form = SendForm({"when": "now", "send_at": "2027-01-12T08:00"})
        assert not form.is_valid()
        assert 'choose "Send at a later time"' in form.errors["send_at"][0]
        assert SendForm({"when": "now", "send_at": ""}).is_valid()


class TestSendPage:
    def test_schedule_from_the_send_page(self, client, staff, make_user, clock, settings):
        settings.TIME_ZONE = "Europe/Oslo"
        staff.user_permissions.set(_perms("view_message", "send_message", "compose_message"))
        client.force_login(staff)
        message = composed_draft(staff, [make_user()])
        url = reverse("messaging:message_send", args=[message.pk])
        response = client.post(url, {"when": "later", "send_at": "2027-01-12T08:00"})
        assert response.status_code == 302
        message.refresh_from_db()
        assert message.status == Status.SCHEDULED
        assert message.send_at == datetime(2027, 1, 12, 7, 0, tzinfo=ZoneInfo("UTC"))
        status_page = client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert 'id="scheduled-note"' in status_page and 'id="unschedule-button"' in status_page
        listing = client.get(reverse("messaging:message_list")).content.decode()
        assert 'data-testid="send-at"' in listing
        # The send page of a scheduled message offers it again, prefilled in local time.
        again = client.get(url).content.decode()
        assert 'value="2027-01-12T08:00"' in again and 'value="later"' in again

    def test_a_bad_time_keeps_the_draft_and_says_why_in_place(self, client, staff, make_user, clock):
        staff.user_permissions.set(_perms("view_message", "send_message"))
        client.force_login(staff)
        message = composed_draft(staff, [make_user()])
        response = client.post(
            reverse("messaging:message_send", args=[message.pk]),
            {"when": "later", "send_at": "2020-01-01T08:00"},
        )
        assert response.status_code == 400
        assert 'data-field="send_at"' in response.content.decode()
        message.refresh_from_db()
        assert message.status == Status.DRAFT and message.send_at is None

    def test_unschedule_view(self, client, staff, make_user, clock):
        staff.user_permissions.set(_perms("view_message", "send_message", "compose_message"))
        client.force_login(staff)
        message = composed_draft(staff, [make_user()])
        composing.queue_send(message, staff, send_at=NOON + timedelta(hours=1))
        response = client.post(reverse("messaging:message_unschedule", args=[message.pk]))
        assert response["Location"] == reverse("messaging:message_edit", args=[message.pk])
        message.refresh_from_db()
        assert message.status == Status.DRAFT


def _perms(*codenames):
    from django.contrib.auth.models import Permission

    return Permission.objects.filter(content_type__app_label="messaging", codename__in=codenames)


# Expiry -----------------------------------------------------------------------------------------


class TestExpiry:
    def test_expiry_cancels_what_was_not_delivered_and_stops_retries(
        self, clock, make_user, scripted_channel, django_capture_on_commit_callbacks
    ):
        ok, later = make_user(email="ok@x.org"), make_user(email="later@x.org")
        scripted_channel.answers["later@x.org"] = DeliveryResult(delivered=False, reason="451 try later")
        message = api_message([ok, later])
        message.prepare_and_send(LanguageSubject(), **SEND_ARGS, expires_at=NOON + timedelta(minutes=30))
        waiting = message.receivers.get(user=later)
        assert waiting.status == ReceiverStatus.FAILED and waiting.next_attempt_datetime is not None

        clock.move_to(NOON + timedelta(hours=1))
        assert resending.retry_due_receivers() == 0  # past expiry: never retried
        with django_capture_on_commit_callbacks(execute=True):
            maintenance.sweep()
        message.refresh_from_db()
        waiting.refresh_from_db()
        assert message.status == Status.EXPIRED
        assert waiting.status == ReceiverStatus.CANCELLED
        assert waiting.cancel_reason == MessageReceiver.CancelReason.EXPIRED
        assert message.receivers.get(user=ok).status == ReceiverStatus.SENT
        assert message.status_data["summary"]["cancelled"] == {"expired": 1}
        assert scripted_channel.attempted == ["ok@x.org", "later@x.org"]
        # Staff cannot resend it either.
        assert resending.resend_failed(message) == 0

    def test_a_delivering_worker_stops_at_the_expiry(self, clock, make_user, scripted_channel):
        users = [make_user() for _ in range(6)]
        message = api_message(users)

        def tick(receiver):
            clock.shift(timedelta(minutes=1))

        scripted_channel.before_each = tick
        message.prepare_and_send(
            LanguageSubject(), **SEND_ARGS, expires_at=NOON + timedelta(minutes=3, seconds=30)
        )
        message.refresh_from_db()
        assert message.status == Status.EXPIRED
        counts = message.status_data["summary"]["receiver_counts"]
        # Each send takes a minute: the ones started before 12:03:30 went out, none after.
        assert counts["sent"] == len(scripted_channel.delivered) == 4
        assert counts["cancelled"] == 2 and counts["not_sent"] == 0
        assert message.receivers.filter(claimed_by="").count() == 6

    def test_a_queued_message_past_its_expiry_is_not_prepared(self, clock, staff, make_user):
        message = composed_draft(staff, [make_user()])
        composing.queue_send(message, staff, expires_at=NOON + timedelta(minutes=10))  # task held back
        message.refresh_from_db()
        assert message.status == Status.QUEUED
        clock.move_to(NOON + timedelta(minutes=11))
        composing.send_composed(message)
        message.refresh_from_db()
        assert message.status == Status.EXPIRED and not message.receivers.exists() and mail.outbox == []

    def test_a_scheduled_message_whose_expiry_passed_while_down_expires(self, clock, staff, make_user):
        message = composed_draft(staff, [make_user()])
        composing.queue_send(
            message, staff, send_at=NOON + timedelta(hours=1), expires_at=NOON + timedelta(hours=2)
        )
        clock.move_to(NOON + timedelta(hours=3))
        maintenance.sweep()
        message.refresh_from_db()
        assert message.status == Status.EXPIRED and mail.outbox == []


# Pause, resume, cancel --------------------------------------------------------------------------


def sending_message(users) -> Message:
    """A message whose receivers are prepared and waiting (no worker has run yet)."""
    message = api_message(users)
    message.send_at = NOON + timedelta(days=1)
    message.save()
    message.prepare_and_send(LanguageSubject(), **SEND_ARGS, send_at=message.send_at)
    Message.objects.filter(pk=message.pk).update(send_at=NOON)
    assert transitions.start_scheduled_delivery(message.pk)
    message.refresh_from_db()
    return message


class TestPauseResumeCancel:
    def test_pause_stops_claims_and_resume_continues(self, clock, staff, make_user, scripted_channel):
        from messaging.engine import delivery

        message = sending_message([make_user() for _ in range(5)])
        controlling.pause(message, staff)
        assert message.status == Status.PAUSED and message.status_data["paused"]["by"] == staff.pk
        assert transitions.claim_batch(message.pk, "w") is None
        assert delivery.deliver_message(message.pk) is False  # paused: nothing claimed, nothing sent
        assert scripted_channel.attempted == []
        message.refresh_from_db()
        assert message.status == Status.PAUSED

        controlling.resume(message, staff)
        delivery.deliver_message(message.pk)
        message.refresh_from_db()
        assert message.status == Status.SENT and len(scripted_channel.delivered) == 5
        assert actions(message)[-2:] == ["paused", "resumed"]
        assert message.audit_events.get(action="paused").actor == staff

    def test_a_delivering_worker_stops_after_the_receiver_in_flight(
        self, clock, staff, make_user, scripted_channel
    ):
        from messaging.engine import delivery

        message = sending_message([make_user() for _ in range(8)])

        def pause_at_third(receiver):
            if len(scripted_channel.attempted) == 2:
                controlling.pause(Message.objects.get(pk=message.pk), staff)

        scripted_channel.before_each = pause_at_third
        assert delivery.deliver_message(message.pk) is False
        message.refresh_from_db()
        # The third was already handed over when the pause came; nothing after it.
        assert len(scripted_channel.attempted) == 3
        counts = message.status_data["summary"]["receiver_counts"]
        assert counts == {
            "sent": 3,
            "not_sent": 5,
            "failed": 0,
            "error": 0,
            "cancelled": 0,
            "skipped": 0,
            "held": 0,
        }
        assert message.status == Status.PAUSED
        assert not message.receivers.exclude(claimed_by="").exists()  # the rest of the claim was released

    def test_cancel_mid_delivery_records_the_one_in_flight(self, clock, staff, make_user, scripted_channel):
        from messaging.engine import delivery

        message = sending_message([make_user() for _ in range(8)])

        def cancel_at_fourth(receiver):
            if len(scripted_channel.attempted) == 3:
                controlling.cancel(Message.objects.get(pk=message.pk), staff)

        scripted_channel.before_each = cancel_at_fourth
        delivery.deliver_message(message.pk)
        message.refresh_from_db()
        assert len(scripted_channel.delivered) == 4
        statuses = list(message.receivers.order_by("id").values_list("status", flat=True))
        assert statuses == [ReceiverStatus.SENT] * 4 + [ReceiverStatus.CANCELLED] * 4
        assert message.status == Status.CANCELLED
        assert message.status_data["summary"]["receiver_counts"]["sent"] == 4
        event = message.audit_events.get(action=AuditEvent.Action.CANCELLED)
        # Four not yet handed over were cancelled; the one in flight was left to its worker,
        # which recorded it sent.
        assert event.actor == staff and event.details == {"receivers": 4, "in_flight_at_most": 1}
        assert not message.receivers.filter(status=ReceiverStatus.SENT).exclude(cancel_reason="").exists()

    def test_a_cancel_then_an_uncertain_answer_ends_cancelled_and_flagged(
        self, clock, staff, make_user, scripted_channel
    ):
        """The connection dies after DATA of the receiver in flight at the cancel: its worker
        records it uncertain (not sent, not owned); the sweeper makes it final, flag kept."""
        from messaging.engine import delivery

        message = sending_message([make_user() for _ in range(4)])
        scripted_channel.default = DeliveryResult(delivered=False, uncertain=True, reason="lost after DATA")

        def cancel_at_second(receiver):
            if len(scripted_channel.attempted) == 1:
                controlling.cancel(Message.objects.get(pk=message.pk), staff)

        scripted_channel.before_each = cancel_at_second
        delivery.deliver_message(message.pk)
        # The first (uncertain before the cancel) was cancelled by it, flag kept; the one in flight
        # at the cancel was left to the worker, which recorded it uncertain: not sent, unowned.
        in_limbo = message.receivers.filter(status=ReceiverStatus.NOT_SENT, claimed_by="")
        assert in_limbo.count() == 1

        maintenance.sweep()
        receivers = list(message.receivers.order_by("id"))
        assert [r.status for r in receivers] == [ReceiverStatus.CANCELLED] * 4
        assert ["delivery_uncertain" in r.status_data for r in receivers] == [True, True, False, False]
        assert not [r.pk for r in receivers if r.claimed_by or r.lease_expires_datetime or r.in_flight_since]

    def test_cancel_a_scheduled_message(self, clock, staff, make_user):
        message = composed_draft(staff, [make_user()])
        composing.queue_send(message, staff, send_at=NOON + timedelta(hours=1))
        controlling.cancel(message, staff)
        clock.move_to(NOON + timedelta(hours=2))
        maintenance.sweep()
        message.refresh_from_db()
        assert message.status == Status.CANCELLED and mail.outbox == []

    @pytest.mark.parametrize(
        ("setup", "action", "text"),
        [
            ("sent", "pause", "Only a message that is sending can be paused"),
            ("cancelled", "cancel", "only a message that has not finished can be cancelled"),
            ("cancelled", "resume", "Only a paused message can be resumed"),
            ("sending", "resume", "Only a paused message can be resumed"),
        ],
    )
    def test_refusals_change_nothing(self, clock, staff, make_user, setup, action, text):
        message = sending_message([make_user()])
        if setup == "cancelled":
            controlling.cancel(message, staff)
        elif setup == "sent":
            from messaging.engine import delivery

            delivery.deliver_message(message.pk)
        message.refresh_from_db()
        before = (message.status, dict(message.status_data), actions(message))
        with pytest.raises(controlling.ControlRefused, match=text):
            controlling.ACTIONS[action](message, staff)
        message.refresh_from_db()
        assert (message.status, message.status_data, actions(message)) == before

    def test_cancel_and_resume_at_the_same_moment_one_wins(self, clock, staff, make_user):
        """Both were pressed on a page that showed `paused`; whichever runs second is told."""
        message = sending_message([make_user()])
        controlling.pause(message, staff)
        stale_copy = Message.objects.get(pk=message.pk)
        controlling.cancel(message, staff)
        with pytest.raises(
            controlling.ControlRefused, match="Only a paused message can be resumed; this one is"
        ):
            controlling.resume(stale_copy, staff)
        message.refresh_from_db()
        assert message.status == Status.CANCELLED

    def test_status_page_buttons(self, client, clock, staff, make_user):
        staff.user_permissions.set(_perms("view_message", "send_message"))
        client.force_login(staff)
        message = sending_message([make_user(), make_user()])
        url = reverse("messaging:message_status", args=[message.pk])
        page = client.get(url).content.decode()
        assert 'id="pause-button"' in page and 'id="cancel-button"' in page and "hx-confirm" in page
        response = client.post(
            reverse("messaging:message_pause", args=[message.pk]), headers={"HX-Request": "true"}
        )
        assert (
            'data-status="paused"' in response.content.decode()
            and 'id="paused-banner"' in response.content.decode()
        )
        response = client.post(reverse("messaging:message_cancel", args=[message.pk]), follow=True)
        page = response.content.decode()
        assert 'data-status="cancelled"' in page and 'id="cancelled-note"' in page
        assert 'id="count-cancelled">2<' in page
        # A second cancel is refused with a clear message, and changes nothing.
        response = client.post(reverse("messaging:message_cancel", args=[message.pk]), follow=True)
        assert "only a message that has not finished can be cancelled" in response.content.decode()

    def test_staff_without_send_permission_see_no_buttons(self, client, clock, make_user):
        viewer = make_user(is_staff=True)
        viewer.user_permissions.set(_perms("view_message"))
        client.force_login(viewer)
        message = sending_message([make_user()])
        page = client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert 'id="send-controls"' not in page


class TestCommandsAndAdmin:
    def test_commands(self, clock, staff, make_user, capsys):
        message = sending_message([make_user()])
        call_command("messaging_pause", str(message.pk), "--by", staff.username)
        message.refresh_from_db()
        assert message.status == Status.PAUSED
        assert message.audit_events.get(action="paused").actor == staff
        with pytest.raises(CommandError) as refused:
            call_command("messaging_pause", str(message.pk))
        assert refused.value.returncode == 1
        call_command("messaging_resume", str(message.pk))
        call_command("messaging_cancel", str(message.pk))
        message.refresh_from_db()
        assert message.status == Status.CANCELLED
        with pytest.raises(CommandError, match="No message with id"):
            call_command("messaging_cancel", "999999")

    def test_admin_actions(self, clock, admin_client, make_user):
        first, second = sending_message([make_user()]), sending_message([make_user()])
        controlling.cancel(second)
        url = reverse("admin:messaging_message_changelist")
        response = admin_client.post(
            url, {"action": "pause_sending", "_selected_action": [first.pk, second.pk]}, follow=True
        )
        text = response.content.decode()
        assert "Paused 1 message(s)." in text and f"#{second.pk}: Only a message that is sending" in text
        first.refresh_from_db()
        assert first.status == Status.PAUSED
        admin_client.post(url, {"action": "cancel_sending", "_selected_action": [first.pk]})
        first.refresh_from_db()
        assert first.status == Status.CANCELLED


# Auto-pause -------------------------------------------------------------------------------------


class TestAutoPause:
    def test_same_error_in_a_row(self):
        watch = FailureWatch(window=50, rate=0.2, streak=3)
        assert watch.add(False, "550 no") is None
        assert watch.add(False, "451 later") is None
        assert watch.add(False, "550 no") is None
        assert watch.add(False, "550 no") is None
        assert watch.add(False, "550 no") == {"rule": "same_error", "count": 3, "error": "550 no"}

    def test_failure_rate_over_the_window(self):
        watch = FailureWatch(window=10, rate=0.2, streak=0)
        results = [watch.add(i % 4 != 0, f"error {i}") for i in range(9)]
        assert results == [None] * 9  # the window is not full yet
        assert watch.add(True) is None  # 3 of 10 failed... but the last one was delivered
        assert watch.add(False, "error x") == {
            "rule": "failure_rate",
            "failed": 3,
            "window": 10,
            "error": "error x",
        }

    def test_a_send_that_goes_wrong_pauses_itself_and_tells_the_sender(
        self, clock, settings, staff, make_user, scripted_channel, django_capture_on_commit_callbacks
    ):
        settings.MESSAGING_AUTO_PAUSE_SAME_ERROR = 5
        scripted_channel.default = DeliveryResult(
            delivered=False, reason="550 5.1.1 No such user", permanent=True
        )
        scripted_channel.answers[staff.email] = DeliveryResult.ok()
        message = api_message([make_user() for _ in range(12)], created_by=staff)
        with django_capture_on_commit_callbacks(execute=True):
            message.prepare_and_send(LanguageSubject(), **SEND_ARGS)
        message.refresh_from_db()
        assert message.status == Status.PAUSED
        paused = message.status_data["paused"]
        assert paused["automatic"] and paused["rule"] == "same_error" and paused["count"] == 5
        assert message.status_data["summary"]["receiver_counts"]["not_sent"] == 7
        report = Message.objects.get(context_type=Message.ContextType.SENDING_REPORT)
        assert report.metadata == {"report_for": message.pk, "event": "auto_paused"}
        assert scripted_channel.delivered == [staff.email]


# Telling the sender -----------------------------------------------------------------------------


class TestSenderReport:
    def test_report_over_real_smtp_in_the_senders_language(
        self, staff, make_user, smtp_mailer, django_capture_on_commit_callbacks, settings
    ):
        settings.MESSAGING_SITE_URL = "https://messages.uni.example/"
        users = [make_user(email="a@uni.example"), make_user(email="ghost@bounce.example")]
        message = composed_draft(staff, users)
        with django_capture_on_commit_callbacks(execute=True):
            composing.queue_send(message, staff)
        message.refresh_from_db()
        assert message.status == Status.ERROR

        (report,) = [m for m in smtp_mailer.received if m.rcpt_tos == ("staff@uni.example",)]
        assert report.message["Subject"] == "Sendt med feil: Exam moved"  # staff reads Norwegian
        text = report.message.get_body(("plain",)).get_content()
        assert "Sendt: 1" in text and "Mislyktes: 1" in text
        assert "550" in text  # the top failure reason
        assert f"https://messages.uni.example/messages/{message.pk}/" in text
        assert message.audit_events.filter(action=AuditEvent.Action.SENDER_NOTIFIED).count() == 1

    def test_reported_once_and_not_while_retries_are_pending(
        self, clock, staff, make_user, scripted_channel, django_capture_on_commit_callbacks
    ):
        scripted_channel.answers["later@x.org"] = DeliveryResult(delivered=False, reason="451 later")
        message = composed_draft(staff, [make_user(email="later@x.org")])
        with django_capture_on_commit_callbacks(execute=True):
            composing.queue_send(message, staff)
        assert not Message.objects.filter(context_type=Message.ContextType.SENDING_REPORT).exists()
        # Retries run out: now it has finished with failures.
        for minutes in (2, 5):
            clock.move_to(NOON + timedelta(minutes=minutes))
            with django_capture_on_commit_callbacks(execute=True):
                resending.retry_due_receivers()
        message.refresh_from_db()
        assert message.receivers.get().status == ReceiverStatus.ERROR
        assert Message.objects.filter(context_type=Message.ContextType.SENDING_REPORT).count() == 1
        assert reporting.report_to_sender(message.pk, reporting.FINISHED_WITH_FAILURES) is None  # once

    def test_blocked_and_expired_are_reported(self, clock, staff, make_user, scripted_channel):
        message = api_message([make_user()], created_by=staff)
        Message.objects.filter(pk=message.pk).update(status=Status.SENDING)
        assert reporting.event_for(Status.SENDING, Status.BLOCKED, {"blocked": {"attempts": 1}}) == "blocked"
        assert reporting.event_for(Status.BLOCKED, Status.BLOCKED, {"blocked": {"attempts": 2}}) is None
        assert reporting.event_for(Status.SENDING, Status.EXPIRED, {}) == "expired"
        assert reporting.event_for(Status.SENDING, Status.CANCELLED, {}) is None

    def test_the_setting_turns_it_off(self, settings, staff, make_user, django_capture_on_commit_callbacks):
        settings.MESSAGING_NOTIFY_SENDER = False
        message = composed_draft(staff, [make_user(email="")])
        with django_capture_on_commit_callbacks(execute=True):
            composing.queue_send(message, staff)
        message.refresh_from_db()
        assert message.status == Status.ERROR
        assert not Message.objects.filter(context_type=Message.ContextType.SENDING_REPORT).exists()

    def test_reports_are_never_reported(self, staff, make_user, django_capture_on_commit_callbacks):
        report = Message.objects.create(
            context_type=Message.ContextType.SENDING_REPORT,
            created_by=staff,
            virtual_message_receivers={"user_ids": [make_user(email="").pk]},
        )
        with django_capture_on_commit_callbacks(execute=True):
            report.prepare_and_send(LanguageSubject(), **SEND_ARGS)
        assert Message.objects.count() == 1
