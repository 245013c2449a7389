"""Statuses people read correctly (issue 13): labels and colours, resend with judgement, counts
that stay right when receivers are deleted, a page that keeps refreshing while retries are due."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from messaging.engine import resending, status, transitions
from messaging.models import AuditEvent, Message, MessageReceiver, Suppression
from messaging.operations import retention
from messaging.templatetags.messaging_format import language_label, when
from messaging.tracking import status_labels
from tests.conftest import grant

M, R, Outcome = Message.Status, MessageReceiver.Status, MessageReceiver.Outcome
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def staff(make_user):
    """Who signs in (tests/conftest.py's staff_client): may watch, send and resend."""
    user = make_user(is_staff=True, username="staffer", first_name="Sam", last_name="Staff")
    return grant(user, "view_message", "compose_message", "send_message", "resend_message")


def make_send(make_user, *states, status=M.ERROR) -> Message:
    """A finished message with one receiver per state: (status, permanent, outcome) tuples."""
    message = Message.objects.create(
        status=status, context_type="other", composed_content={"en": {"subject": "Exam moved"}}
    )
    for index, (receiver_status, permanent, outcome) in enumerate(states):
        user = make_user(email=f"r{index}@x.org")
        MessageReceiver.objects.create(
            message=message,
            user=user,
            send_to=user.email,
            language="en",
            status=receiver_status,
            permanent_failure=permanent,
            delivery_outcome=outcome,
            sending_failed_count=0 if receiver_status == R.SENT else 1,
            next_attempt_datetime=(
                timezone.now() + timedelta(minutes=5)
                if receiver_status == R.FAILED and not permanent
                else None
            ),
            last_error=""
            if receiver_status == R.SENT
            else ("550 5.1.1 no such user" if permanent else "451 busy"),
        )
    transitions.roll_up(message.pk)
    message.refresh_from_db()
    return message


SENT = (R.SENT, False, "")
RETRYING = (R.FAILED, False, "")
PERMANENT = (R.FAILED, True, "")
USED_UP = (R.ERROR, False, "")
HARD_BOUNCE = (R.SENT, False, Outcome.HARD_BOUNCE)
SOFT_BOUNCE = (R.SENT, False, Outcome.SOFT_BOUNCE)


class TestMessageLabels:
    @pytest.mark.parametrize(
        "status, total, not_delivered, key, severity",
        [
            (M.SENT, 133, 0, "sent", "ok"),
            (M.ERROR, 133, 10, "sent_partly", "partial"),
            (M.SENT, 133, 2, "sent_partly", "partial"),  # sent, then two bounced
            (M.ERROR, 5, 5, "failed", "permanent"),
            (M.SENDING, 5, 1, "sending", "progress"),
            (M.PREPARING, 5, 0, "sending", "progress"),
            (M.BLOCKED, 5, 0, "blocked", "permanent"),
            (M.PAUSED, 5, 0, "paused", "temporary"),
            (M.DRAFT, 0, 0, "draft", "neutral"),
            (M.CANCELLED, 5, 0, "cancelled", "neutral"),
        ],
    )
    def test_label(self, status, total, not_delivered, key, severity):
        label = status_labels.message_label(status, total, not_delivered)
        assert (label.key, label.severity) == (key, severity)

    def test_partly_sent_says_how_many(self):
        assert status_labels.message_label(M.ERROR, 133, 10).text == "Sent, 10 not delivered"

    def test_badge_keeps_the_contract_status_in_the_markup(self):
        badge = status_labels.message_label(M.ERROR, 133, 10).badge()
        assert 'data-status="error"' in badge and 'data-label="sent_partly"' in badge
        assert "severity-partial" in badge

    def test_not_delivered_counts_failures_and_bounces(self):
        counts = {R.FAILED: 3, R.ERROR: 4, R.SENT: 120}
        outcomes = {Outcome.HARD_BOUNCE: 2, Outcome.SOFT_BOUNCE: 1, Outcome.DELIVERED: 100}
        assert status.not_delivered(counts, outcomes) == 10


class TestReceiverLabels:
    @pytest.mark.parametrize(
        "fields, key, severity",
        [
            ({"status": R.SENT}, "sent", "ok"),
            ({"status": R.NOT_SENT}, "not_sent", "neutral"),
            ({"status": R.NOT_SENT, "sending_failed_count": 1}, "retry_queued", "progress"),
            ({"status": R.FAILED}, "retrying", "temporary"),
            ({"status": R.FAILED, "permanent_failure": True}, "failed_permanently", "permanent"),
            ({"status": R.ERROR}, "retries_used_up", "temporary"),
            ({"status": R.ERROR, "permanent_failure": True}, "failed_permanently", "permanent"),
            ({"status": R.CANCELLED, "cancel_reason": "expired"}, "expired", "neutral"),
            ({"status": R.CANCELLED, "cancel_reason": "cancelled"}, "cancelled", "neutral"),
        ],
    )
    def test_label(self, fields, key, severity):
        label = status_labels.receiver_label(MessageReceiver(**fields))
        assert (label.key, label.severity) == (key, severity)


@pytest.mark.django_db
class TestPages:
    def test_list_and_status_page_agree(self, staff_client, make_user):
        message = make_send(make_user, SENT, SENT, SENT, PERMANENT, RETRYING)
        listing = staff_client.get(reverse("messaging:message_list")).content.decode()
        assert 'data-label="sent_partly"' in listing and "Sent, 2 not delivered" in listing
        page = staff_client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert 'id="message-status" data-status="error" data-label="sent_partly"' in page
        assert "Sent, 2 not delivered" in page

    def test_rows_tell_permanent_from_temporary(self, staff_client, make_user):
        message = make_send(make_user, PERMANENT, RETRYING, USED_UP)
        page = staff_client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert page.count('data-label="failed_permanently"') == 1
        assert page.count('data-label="retrying"') == 1 and "next try at" in page
        assert page.count('data-label="retries_used_up"') == 1
        # Resending a permanent failure by hand asks first; a temporary one does not.
        assert page.count('hx-confirm="This failed permanently') == 1

    def test_all_failed_is_labelled_failed(self, staff_client, make_user):
        message = make_send(make_user, PERMANENT, PERMANENT)
        page = staff_client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert 'data-label="failed"' in page and "severity-permanent" in page

    def test_failure_filter(self, staff_client, make_user):
        message = make_send(make_user, SENT, PERMANENT, RETRYING, USED_UP, HARD_BOUNCE, SOFT_BOUNCE)
        url = reverse("messaging:message_status", args=[message.pk])

        def rows(failure: str) -> set[str]:
            page = staff_client.get(url, {"failure": failure}).content.decode()
            return {
                r.last_error or r.delivery_outcome
                for r in message.receivers.all()
                if f'id="receiver-{r.pk}"' in page
            }

        assert rows("permanent") == {"550 5.1.1 no such user", Outcome.HARD_BOUNCE}
        assert rows("temporary") == {"451 busy", Outcome.SOFT_BOUNCE}

    def test_filters_say_any_and_follow_the_flow(self, staff_client, make_user):
        message = make_send(make_user, SENT)
        page = staff_client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert "---------" not in page and '<option value="" selected>Any</option>' in page
        order = [
            page.index(f'<option value="{s}"') for s in ("not_sent", "sent", "failed", "error", "cancelled")
        ]
        assert order == sorted(order)

    def test_local_times_with_zone_and_language_names(self, staff_client, make_user, settings):
        settings.TIME_ZONE = "Europe/Oslo"
        message = make_send(make_user, PERMANENT)
        receiver = message.receivers.get()
        receiver.language = "nb"
        receiver.sent_datetime = timezone.now()
        receiver.status_data = {
            "errors": [
                {
                    "error_message": "550 5.1.1 no such user",
                    "timestamp": "2026-11-26T10:00:00+00:00",
                    "code": 550,
                    "permanent": True,
                    "exception_traceback": "Traceback (most recent call last): ...",
                }
            ]
        }
        receiver.save()
        page = staff_client.get(reverse("messaging:receiver_detail", args=[receiver.pk])).content.decode()
        assert '<time datetime="2026-11-26T11:00:00+01:00">' in page and "CET</time>" in page
        assert "2026-11-26T10:00:00+00:00<" not in page  # never the raw UTC text
        # An SMTP reply reads as a reply; no traceback for it.
        assert 'data-testid="server-reply"' in page and "Traceback (most recent" not in page
        assert "Norwegian Bokmål" in page and 'data-label="failed_permanently"' in page

    def test_a_real_exception_keeps_its_traceback_folded(self, staff_client, make_user):
        message = make_send(make_user, RETRYING)
        receiver = message.receivers.get()
        receiver.status_data = {
            "errors": [
                {
                    "error_message": "OSError: boom",
                    "timestamp": "2026-11-26T10:00:00+00:00",
                    "exception_traceback": "Traceback (most recent call last): boom",
                }
            ]
        }
        receiver.save()
        page = staff_client.get(reverse("messaging:receiver_detail", args=[receiver.pk])).content.decode()
        assert "<details" in page and "Traceback (most recent call last): boom" in page
        assert 'data-testid="server-reply"' not in page


@pytest.mark.django_db
class TestAlwaysCurrent:
    def test_polls_slowly_while_a_retry_is_pending(self, staff_client, make_user):
        message = make_send(make_user, SENT, RETRYING)
        url = reverse("messaging:message_status", args=[message.pk])
        page = staff_client.get(url).content.decode()
        assert 'hx-trigger="every 15s"' in page and 'data-polling="true"' in page
        assert 'id="updated-at"' in page
        poll = staff_client.get(url, **HTMX, HTTP_HX_TRIGGER="receiver-results")
        assert poll.status_code == 200  # keeps polling

    def test_stops_when_nothing_can_change(self, staff_client, make_user):
        message = make_send(make_user, SENT, PERMANENT)
        url = reverse("messaging:message_status", args=[message.pk])
        assert 'data-polling="false"' in staff_client.get(url).content.decode()
        poll = staff_client.get(url, **HTMX, HTTP_HX_TRIGGER="receiver-results")
        assert poll.status_code == 286  # htmx stops polling

    def test_deleting_a_user_corrects_the_counts(self, make_user, django_capture_on_commit_callbacks):
        message = make_send(make_user, SENT, SENT, PERMANENT, PERMANENT)
        leaving = message.receivers.filter(status=R.FAILED).first().user
        with django_capture_on_commit_callbacks(execute=True):
            get_user_model().objects.filter(pk=leaving.pk).delete()  # as the admin's bulk delete
        message.refresh_from_db()
        summary = message.status_data["summary"]
        assert summary["total"] == 3 and summary["receiver_counts"][R.FAILED] == 1
        assert message.status == M.ERROR  # history is not rewritten
        assert resending.resend_plan(message).permanent == 1

    def test_a_rolled_back_delete_changes_nothing_and_later_deletes_still_count(
        self, make_user, django_capture_on_commit_callbacks
    ):
        from django.db import transaction

        message = make_send(make_user, SENT, SENT, SENT)
        users = [r.user for r in message.receivers.all()]
        with django_capture_on_commit_callbacks(execute=True):
            with pytest.raises(RuntimeError), transaction.atomic():
                users[0].delete()
                raise RuntimeError
            users[1].delete()
        message.refresh_from_db()
        assert message.status_data["summary"]["total"] == 2

    def test_retention_corrects_the_counts_of_messages_that_stay(self, make_user):
        message = make_send(make_user, SENT, SENT, SENT)
        MessageReceiver.objects.filter(pk=message.receivers.first().pk).update(
            created_datetime=timezone.now() - timedelta(days=40)
        )
        assert retention.delete_old_receivers(30) == 1
        message.refresh_from_db()
        assert message.status_data["summary"]["total"] == 2


@pytest.mark.django_db
class TestResendWithJudgement:
    def test_plan(self, make_user):
        message = make_send(
            make_user, SENT, RETRYING, USED_UP, PERMANENT, PERMANENT, HARD_BOUNCE, SOFT_BOUNCE
        )
        changed = message.receivers.filter(permanent_failure=True).first().user
        changed.email = "fixed@x.org"
        changed.save()
        bounced = message.receivers.get(delivery_outcome=Outcome.HARD_BOUNCE)
        Suppression.objects.create(address=bounced.send_to, reason=Suppression.Reason.HARD_BOUNCE)
        plan = resending.resend_plan(message)
        assert plan == resending.ResendPlan(
            temporary=3, permanent_address_changed=1, permanent=1, suppressed=1
        )
        assert plan.can_succeed == 4

    def test_default_resends_only_what_can_succeed(self, make_user):
        message = make_send(make_user, RETRYING, USED_UP, PERMANENT, PERMANENT)
        fixed = message.receivers.filter(permanent_failure=True).first()
        fixed.user.email = "fixed@x.org"
        fixed.user.save()
        assert resending.resend_failed(message, include_permanent=False) == 3
        left = message.receivers.get(status=R.FAILED, permanent_failure=True)
        assert left.pk != fixed.pk
        assert MessageReceiver.objects.get(pk=fixed.pk).send_to == "fixed@x.org"
        event = AuditEvent.objects.get(message=message, action=AuditEvent.Action.RESENT_ALL)
        assert event.details == {"receivers": 3, "include_permanent": False}

    def test_confirmation_page_then_default(self, staff_client, make_user):
        message = make_send(make_user, SENT, RETRYING, PERMANENT)
        url = reverse("messaging:message_resend_failed", args=[message.pk])
        page = staff_client.get(url).content.decode()
        assert 'id="plan-can-succeed" data-count="1"' in page and 'id="plan-permanent" data-count="1"' in page
        assert (
            'name="include_permanent"' in page
            and "checked" not in page.split('name="include_permanent"')[1][:40]
        )
        response = staff_client.post(url, follow=True)
        text = response.content.decode()
        assert "1 receiver was queued again." in text
        assert "1 receiver that failed permanently was left alone." in text
        assert message.receivers.filter(status=R.NOT_SENT).count() == 1

    def test_explicit_option_resends_the_rest(self, staff_client, make_user):
        message = make_send(make_user, RETRYING, PERMANENT)
        url = reverse("messaging:message_resend_failed", args=[message.pk])
        staff_client.post(url, {"include_permanent": "on"})
        assert message.receivers.filter(status=R.NOT_SENT).count() == 2

    def test_cancelled_message_page_says_so(self, staff_client, make_user):
        message = make_send(make_user, RETRYING, status=M.CANCELLED)
        page = staff_client.get(
            reverse("messaging:message_resend_failed", args=[message.pk])
        ).content.decode()
        assert 'id="resend-not-allowed"' in page and 'id="resend-form"' not in page


class TestFormatting:
    def test_when_accepts_iso_text_and_garbage(self, settings):
        settings.TIME_ZONE = "UTC"
        assert "UTC</time>" in when("2026-11-26T10:00:00+00:00")
        assert when("not a time") == "not a time" and when(None) == "—"

    def test_language_name(self):
        assert language_label("nb") == "Norwegian Bokmål" and language_label("xx") == "xx"
        assert language_label("") == "—"


class TestUncertainDelivery:
    """A receiver flagged "delivery_uncertain" (handed over, no answer) says so wherever staff
    read its status: the person may have the email whatever the status says."""

    @pytest.mark.parametrize(
        ("receiver_status", "note"),
        [
            (R.CANCELLED, "may have arrived before it was stopped"),
            (R.SENT, "an earlier attempt may have arrived too"),
            (R.NOT_SENT, "may have arrived; any new attempt has the same Message-ID"),
        ],
    )
    def test_the_status_page_and_the_receiver_page_say_it_may_have_arrived(
        self, staff_client, make_user, receiver_status, note
    ):
        message = make_send(make_user, SENT, (receiver_status, False, ""), status=M.CANCELLED)
        plain, flagged = message.receivers.order_by("id")
        flagged.status_data = {"delivery_uncertain": {"timestamp": "2026-12-05T10:00:00+00:00"}}
        flagged.save()

        table = staff_client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert table.count('data-testid="uncertain"') == 1 and note in table
        detail = staff_client.get(reverse("messaging:receiver_detail", args=[flagged.pk])).content.decode()
        assert 'id="uncertain-note"' in detail and note in detail
        other = staff_client.get(reverse("messaging:receiver_detail", args=[plain.pk])).content.decode()
        assert 'id="uncertain-note"' not in other


class TestWaitingReceivers:
    """A receiver set aside until a time (its domain's sending limit is used up, or a pause
    after an uncertain attempt) says when it goes out again; an owned or free one does not."""

    def test_the_time_it_resumes_is_shown(self, staff_client, make_user):
        message = make_send(make_user, (R.NOT_SENT, False, ""), (R.NOT_SENT, False, ""), status=M.SENDING)
        waiting, free = message.receivers.order_by("id")
        MessageReceiver.objects.filter(pk=waiting.pk).update(
            lease_expires_datetime=timezone.now() + timedelta(minutes=5)
        )
        table = staff_client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert table.count('data-testid="resumes"') == 1 and "waiting, resumes at" in table
        detail = staff_client.get(reverse("messaging:receiver_detail", args=[waiting.pk])).content.decode()
        assert 'id="resumes-at"' in detail
        other = staff_client.get(reverse("messaging:receiver_detail", args=[free.pk])).content.decode()
        assert 'id="resumes-at"' not in other

    def test_a_receiver_a_worker_owns_is_not_waiting(self, make_user):
        message = make_send(make_user, (R.NOT_SENT, False, ""), status=M.SENDING)
        receiver = message.receivers.get()
        receiver.claimed_by = "worker"
        receiver.lease_expires_datetime = timezone.now() + timedelta(minutes=5)
        assert status_labels.resumes_at(receiver) is None
        receiver.claimed_by = ""
        assert status_labels.resumes_at(receiver) == receiver.lease_expires_datetime
