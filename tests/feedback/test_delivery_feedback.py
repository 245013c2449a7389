"""Delivery feedback in the engine: outcomes from reports, the suppression list in sending and
resending, VERP return paths, ESPs through anymail, and the staff pages (webhook posts are in
tests/feedback/test_webhooks.py, bounce parsing in tests/feedback/test_dsn.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import requests
from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
from django.contrib.auth.models import Permission
from django.core import checks, mail
from django.urls import reverse

from messaging.checks import lease_covers_a_send, sending_settings
from messaging.engine import resending
from messaging.engine.channels.email import EmailChannel, build_email
from messaging.engine.outgoing import OutgoingBuilder
from messaging.feedback import reports as feedback
from messaging.feedback import return_path, suppressions
from messaging.feedback.signatures import message_id as signed_message_id
from messaging.feedback.signatures import receiver_id_from_message_id
from messaging.models import AuditEvent, DeliveryEvent, Message, MessageReceiver, Suppression
from tests.engine_helpers import SEND_ARGS, LanguageSubject

pytestmark = pytest.mark.django_db

Outcome = MessageReceiver.Outcome
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def send(users) -> Message:
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    message.prepare_and_send(LanguageSubject(prefix="Exam"), **SEND_ARGS)
    message.refresh_from_db()
    return message


def report(event_type: str, minutes: int = 0, **fields) -> feedback.Feedback:
    fields.setdefault("event_id", f"{event_type}-{minutes}")
    return feedback.Feedback(
        provider="TestESP", event_type=event_type, occurred=T0 + timedelta(minutes=minutes), **fields
    )


@pytest.fixture
def sent_receiver(make_user, smtp_mailer):
    message = send([make_user(email="Ola.Nordmann@Example.org")])
    return message.receivers.get()


# Outcomes and suppression from reports --------------------------------------------------------


class TestRecordingFeedback:
    def test_a_hard_bounce_sets_the_outcome_and_suppresses_the_address(self, sent_receiver):
        event = feedback.record(
            report("bounced", reject_reason="bounced", mta_response="550 5.1.1 <ola>: User unknown"),
            sent_receiver,
        )

        sent_receiver.refresh_from_db()
        assert sent_receiver.status == MessageReceiver.Status.SENT  # the contract's status stays
        assert sent_receiver.delivery_outcome == Outcome.HARD_BOUNCE
        assert sent_receiver.outcome_detail == "550 5.1.1 <ola>: User unknown"
        assert sent_receiver.outcome_datetime == T0
        suppression = Suppression.objects.get()
        assert (suppression.address, suppression.reason, suppression.event) == (
            "ola.nordmann@example.org",
            Suppression.Reason.HARD_BOUNCE,
            event,
        )
        assert suppression.describe().startswith("suppressed: bounced on ")
        assert suppression.describe().endswith("(550 5.1.1 <ola>: User unknown)")

    @pytest.mark.parametrize(
        "fields",
        [
            {"mta_response": "452 4.2.2 Mailbox full"},
            {"mta_response": "4.4.7 Delivery time expired"},
            {"reject_reason": "timed_out", "mta_response": "550 hmm"},
            {"reject_reason": "blocked", "mta_response": "554 5.7.1 Message rejected as spam"},
            {"permanent": False, "mta_response": "550 5.1.1 but the report says temporary"},
        ],
    )
    def test_a_soft_bounce_is_recorded_but_does_not_suppress(self, sent_receiver, fields):
        feedback.record(report("bounced", **fields), sent_receiver)

        sent_receiver.refresh_from_db()
        assert sent_receiver.delivery_outcome == Outcome.SOFT_BOUNCE
        assert not Suppression.objects.exists()

    @pytest.mark.parametrize(
        ("event_type", "reject_reason", "outcome", "suppressed_for"),
        [
            ("delivered", "", Outcome.DELIVERED, None),
            ("deferred", "", Outcome.DEFERRED, None),
            ("complained", "", Outcome.COMPLAINED, Suppression.Reason.COMPLAINT),
            ("rejected", "invalid", Outcome.REJECTED, Suppression.Reason.HARD_BOUNCE),
            ("rejected", "bounced", Outcome.REJECTED, Suppression.Reason.HARD_BOUNCE),
            ("rejected", "spam", Outcome.REJECTED, Suppression.Reason.COMPLAINT),
            ("rejected", "unsubscribed", Outcome.REJECTED, None),
            ("failed", "other", Outcome.REJECTED, None),
            ("opened", "", "", None),
            ("autoresponded", "", "", None),
        ],
    )
    def test_each_event_type(self, sent_receiver, event_type, reject_reason, outcome, suppressed_for):
        assert feedback.record(report(event_type, reject_reason=reject_reason), sent_receiver) is not None

        sent_receiver.refresh_from_db()
        assert sent_receiver.delivery_outcome == outcome
        assert list(Suppression.objects.values_list("reason", flat=True)) == (
            [suppressed_for] if suppressed_for else []
        )

    def test_unknown_event_types_are_not_stored(self, sent_receiver):
        assert feedback.record(report("unknown"), sent_receiver) is None
        assert feedback.record(report("inbound"), sent_receiver) is None
        assert not DeliveryEvent.objects.exists()

    def test_a_repeated_event_is_stored_once_and_changes_nothing(self, sent_receiver):
        first = feedback.record(report("bounced", mta_response="550 5.1.1 gone"), sent_receiver)
        Suppression.objects.all().delete()  # staff lifted it meanwhile (without the service)

        assert feedback.record(report("bounced", mta_response="550 5.1.1 gone"), sent_receiver) is None
        assert list(DeliveryEvent.objects.all()) == [first]
        assert not Suppression.objects.exists()  # a replay does not suppress again

    def test_events_without_an_id_are_deduplicated_by_their_content(self, sent_receiver):
        bounce = report("deferred", event_id="", recipient="ola@example.org", payload={"x": [1, 2]})
        assert feedback.record(bounce, sent_receiver) is not None
        assert feedback.record(bounce, sent_receiver) is None
        other = report("deferred", event_id="", recipient="ola@example.org", payload={"x": [1, 3]})
        assert feedback.record(other, sent_receiver) is not None
        assert DeliveryEvent.objects.count() == 2

    def test_the_newest_event_wins_whatever_order_they_arrive_in(self, sent_receiver):
        feedback.record(report("delivered", minutes=5), sent_receiver)
        feedback.record(report("deferred", minutes=1), sent_receiver)  # older, arrives later

        sent_receiver.refresh_from_db()
        assert sent_receiver.delivery_outcome == Outcome.DELIVERED
        assert list(sent_receiver.delivery_events.values_list("event_type", flat=True)) == [
            "deferred",
            "delivered",
        ]
        feedback.record(report("bounced", minutes=9, mta_response="550 5.1.1 gone"), sent_receiver)
        sent_receiver.refresh_from_db()
        assert sent_receiver.delivery_outcome == Outcome.HARD_BOUNCE

    def test_a_complaint_stays_whatever_comes_later(self, sent_receiver):
        feedback.record(report("complained", minutes=1), sent_receiver)
        feedback.record(report("delivered", minutes=2), sent_receiver)

        sent_receiver.refresh_from_db()
        assert sent_receiver.delivery_outcome == Outcome.COMPLAINED

    def test_huge_payloads_are_cut(self, sent_receiver):
        event = feedback.record(report("delivered", payload={"blob": "x" * 100_000}), sent_receiver)
        assert len(event.payload["truncated"]) == feedback.PAYLOAD_LIMIT


# Sending skips suppressed addresses -------------------------------------------------------------


class TestSendingToSuppressedAddresses:
    def test_suppressed_receivers_are_permanent_failures_and_never_reach_the_server(
        self, make_user, smtp_mailer, settings
    ):
        settings.MESSAGING_AUTO_PAUSE_SAME_ERROR = 2  # three identical "errors" must not pause
        fine = make_user(email="fine@example.org")
        gone = [make_user(email=f"gone{n}@example.org") for n in range(3)]
        for user in gone:
            suppressions.suppress(
                user.email.upper(), Suppression.Reason.HARD_BOUNCE, "550 5.1.1 User unknown"
            )

        message = send([fine, *gone])

        assert [m.rcpt_tos for m in smtp_mailer.received] == [("fine@example.org",)]
        assert message.status == Message.Status.ERROR  # sent with failures, not paused
        for receiver in message.receivers.exclude(user=fine):
            assert receiver.status == MessageReceiver.Status.FAILED
            assert receiver.permanent_failure and receiver.next_attempt_datetime is None
            assert receiver.delivery_outcome == Outcome.SUPPRESSED
            assert receiver.last_error.startswith("suppressed: bounced on ")
            assert receiver.last_error.endswith("(550 5.1.1 User unknown)")

    def test_a_direct_send_respects_the_suppression_list(self, sent_receiver, smtp_mailer):
        suppressions.suppress(sent_receiver.send_to, Suppression.Reason.COMPLAINT)
        sent_before = len(smtp_mailer.received)

        result = sent_receiver.send()

        assert not result.delivered and result.permanent
        assert result.reason.startswith("suppressed: marked as spam on ")
        assert len(smtp_mailer.received) == sent_before

    def test_the_compose_summary_counts_suppressed_recipients(self, make_user, admin_client):
        users = [make_user(email=f"r{n}@example.org") for n in range(3)]
        suppressions.suppress("R1@example.org", Suppression.Reason.HARD_BOUNCE, "550 gone")

        response = admin_client.get(
            reverse("messaging:recipient_summary"), {"users": [u.pk for u in users]}, HTTP_HX_REQUEST="true"
        )

        html = response.content.decode()
        assert 'id="recipients-suppressed" data-count="1"' in html
        assert "(550 gone)" in html


# Resending bounced receivers --------------------------------------------------------------------


class TestResendingAfterFeedback:
    def bounce(self, receiver):
        feedback.record(report("bounced", mta_response="550 5.1.1 gone"), receiver)
        receiver.refresh_from_db()

    def test_a_bounced_receiver_cannot_be_resent_while_its_address_is_suppressed(
        self, sent_receiver, admin_user
    ):
        self.bounce(sent_receiver)

        assert sent_receiver.is_resendable
        refusal = resending.resend_refusal(sent_receiver)
        assert "ola.nordmann@example.org is suppressed: bounced on" in refusal.lower()
        assert "lift the suppression" in refusal
        assert not resending.resend_receiver(sent_receiver, actor=admin_user)
        assert resending.resend_failed(sent_receiver.message, actor=admin_user) == 0

    def test_after_the_suppression_is_lifted_it_is_resent_and_its_outcome_starts_afresh(
        self, sent_receiver, admin_user, smtp_mailer, django_capture_on_commit_callbacks
    ):
        self.bounce(sent_receiver)
        assert suppressions.lift(Suppression.objects.get(), actor=admin_user)

        assert resending.resend_refusal(sent_receiver) == ""
        with django_capture_on_commit_callbacks(execute=True):
            assert resending.resend_receiver(sent_receiver, actor=admin_user)
        sent_receiver.refresh_from_db()
        assert sent_receiver.status == MessageReceiver.Status.SENT  # delivered again (immediate huey)
        assert sent_receiver.delivery_outcome == ""
        assert len(smtp_mailer.received) == 2
        # A late report about the first attempt does not apply to the second.
        feedback.record(
            report("bounced", minutes=-60, event_id="late", mta_response="550 old"), sent_receiver
        )
        sent_receiver.refresh_from_db()
        assert sent_receiver.delivery_outcome == ""
        lifted = AuditEvent.objects.get(action=AuditEvent.Action.SUPPRESSION_LIFTED)
        assert lifted.actor == admin_user
        assert lifted.details["address"] == "ola.nordmann@example.org"

    def test_after_the_user_changed_address_it_is_resent_to_the_new_one(
        self, sent_receiver, smtp_mailer, django_capture_on_commit_callbacks
    ):
        self.bounce(sent_receiver)
        user = sent_receiver.user
        user.email = "ola@new.example.org"
        user.save()

        assert resending.resend_refusal(sent_receiver) == ""
        with django_capture_on_commit_callbacks(execute=True):
            assert resending.resend_failed(sent_receiver.message) == 1
        assert smtp_mailer.received[-1].rcpt_tos == ("ola@new.example.org",)

    def test_a_delivered_receiver_is_not_resendable(self, sent_receiver):
        feedback.record(report("delivered"), sent_receiver)
        sent_receiver.refresh_from_db()
        assert not sent_receiver.is_resendable
        assert resending.resend_refusal(sent_receiver) == "Only failed or bounced receivers can be resent."


# VERP return paths and Message-IDs --------------------------------------------------------------


class TestReturnPaths:
    def test_each_email_goes_out_from_its_receivers_own_signed_return_path(
        self, make_user, smtp_mailer, settings
    ):
        settings.MESSAGING_BOUNCE_ADDRESS = "bounces@bounces.example.edu"
        message = send([make_user(), make_user()])

        for sunk in smtp_mailer.received:
            receiver = message.receivers.get(send_to=sunk.rcpt_tos[0])
            assert sunk.mail_from == return_path.envelope_sender(receiver)
            assert sunk.mail_from.startswith(f"bounces+r{receiver.pk}-")
            assert sunk.mail_from.endswith("@bounces.example.edu")
            assert sunk.message["From"] == settings.DEFAULT_FROM_EMAIL
            assert return_path.receiver_id_from_address(sunk.mail_from.upper()) == receiver.pk

    def test_without_a_bounce_address_the_from_address_is_the_envelope_sender(
        self, sent_receiver, smtp_mailer
    ):
        assert smtp_mailer.received[0].mail_from == "noreply@localhost"

    @pytest.mark.parametrize(
        "address",
        [
            "bounces+r12-0000000000@bounces.example.edu",  # forged signature
            "bounces+r12@bounces.example.edu",
            "bounces+rx-1@bounces.example.edu",
            "other+r12-abc@bounces.example.edu",
            "bounces+r12-abc@elsewhere.example",
            "",
        ],
    )
    def test_forged_or_foreign_addresses_name_no_receiver(self, settings, address):
        settings.MESSAGING_BOUNCE_ADDRESS = "bounces@bounces.example.edu"
        assert return_path.receiver_id_from_address(address) is None

    def test_our_signed_message_ids_name_their_receiver(self):
        ours = signed_message_id(12, 3, "messaging.local")
        assert re.fullmatch(r"<receiver-12\.message-3\.[0-9a-f]{16}@messaging\.local>", ours)
        assert receiver_id_from_message_id(ours) == 12
        assert receiver_id_from_message_id(f" {ours} ") == 12

    def test_a_message_id_we_did_not_sign_names_no_receiver(self):
        ours = signed_message_id(12, 3, "messaging.local")
        signature = ours.split(".")[2].split("@")[0]
        forged = [
            "<receiver-12.message-3@messaging.local>",  # the unsigned form a forger can write
            ours.replace(signature, "0" * 16),  # wrong token
            ours.replace(signature, signature[:-1]),  # cut
            ours.replace("receiver-12.", "receiver-13."),  # another receiver
            ours.replace("message-3.", "message-4."),  # another message number
            ours.replace("@messaging.local", "@evil.example"),  # another domain
            "<abc@messaging.local>",
            "<receiver-99999999999999999999.message-3.0000000000000000@x>",
        ]
        assert [receiver_id_from_message_id(text) for text in forged] == [None] * len(forged)

    def test_a_rotated_secret_key_keeps_message_ids_and_return_paths_valid_through_its_fallbacks(
        self, settings
    ):
        settings.MESSAGING_BOUNCE_ADDRESS = "bounces@bounces.example.edu"
        settings.SECRET_KEY = "old-key-" + "x" * 50
        message_id = signed_message_id(12, 3, "messaging.local")
        address = return_path.envelope_sender(MessageReceiver(pk=12))
        settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-key-" + "y" * 50, ["old-key-" + "x" * 50]
        assert receiver_id_from_message_id(message_id) == 12
        assert return_path.receiver_id_from_address(address) == 12
        settings.SECRET_KEY_FALLBACKS = []  # the old key retired: what it signed matches nothing
        assert receiver_id_from_message_id(message_id) is None
        assert return_path.receiver_id_from_address(address) is None


# Sending through an ESP with django-anymail -----------------------------------------------------


@pytest.fixture
def anymail_test_backend(settings):
    settings.MAILERS = {"default": {"BACKEND": "anymail.backends.test.EmailBackend", "OPTIONS": {}}}


def api_error(status: int) -> AnymailAPIError:
    """What an anymail backend raises when the provider's API answers `status`."""
    response = requests.Response()
    response.status_code, response.reason, response._content = status, "Nope", b'{"message": "nope"}'
    return AnymailAPIError("API call failed", status_code=status, response=response, esp_name="Mailgun")


class TestAnymailSending:
    def test_the_providers_message_id_and_our_metadata_are_kept(self, make_user, anymail_test_backend):
        message = send([make_user(email="kari@example.org")])

        receiver = message.receivers.get()
        (email,) = mail.outbox
        assert email.metadata == {"messaging_receiver": str(receiver.pk)}
        assert email.extra_headers["Message-ID"] == signed_message_id(
            receiver.pk, message.pk, "messaging.local"
        )
        assert receiver.status == MessageReceiver.Status.SENT
        assert receiver.provider_message_id == str(email.anymail_status.message_id)
        assert receiver.provider_message_id != ""

    def channel_result(self, receiver, exc):
        class Raising:
            def send_messages(self, messages):
                raise exc

            def open(self):
                pass

            def close(self):
                pass

        return EmailChannel()._deliver_one(Raising(), OutgoingBuilder().build(receiver))

    def test_a_refused_recipient_is_a_permanent_failure(self, sent_receiver):
        result = self.channel_result(sent_receiver, AnymailRecipientsRefused("All recipients were rejected"))
        assert not result.delivered and result.permanent

    @pytest.mark.parametrize(("status", "permanent"), [(400, True), (422, True), (429, False), (503, False)])
    def test_api_errors_are_permanent_only_for_the_request_itself(self, sent_receiver, status, permanent):
        result = self.channel_result(sent_receiver, api_error(status))
        assert result.permanent is permanent
        assert result.code == status

    def test_a_refused_api_key_blocks_the_message_instead_of_failing_receivers(self, sent_receiver):
        from messaging.engine.channels import ChannelUnavailable

        with pytest.raises(ChannelUnavailable, match="provider refuses our requests"):
            self.channel_result(sent_receiver, api_error(401))

    def test_an_smtp_email_carries_no_provider_id(self, sent_receiver):
        email = build_email(OutgoingBuilder().build(sent_receiver))
        assert not hasattr(email, "anymail_status")
        assert sent_receiver.provider_message_id == ""


# Configuration checks ---------------------------------------------------------------------------


class TestChecks:
    def test_an_anymail_backend_without_its_key_is_a_clear_error(self, settings):
        settings.MAILERS = {"default": {"BACKEND": "anymail.backends.mailgun.EmailBackend", "OPTIONS": {}}}
        settings.ANYMAIL = {}
        (problem,) = lease_covers_a_send()
        assert problem.id == "messaging.E005"
        assert "api_key" in problem.msg
        assert "ANYMAIL_MAILGUN_API_KEY" in problem.hint

    def test_webhooks_without_a_secret_or_signing_key_refuse_to_start(self, settings):
        settings.MAILERS = {"default": {"BACKEND": "anymail.backends.mailgun.EmailBackend", "OPTIONS": {}}}
        settings.ANYMAIL = {"MAILGUN_API_KEY": "k"}
        problems = sending_settings()
        assert [(p.id, p.level) for p in problems] == [("messaging.E009", checks.ERROR)] * 2
        assert "ANYMAIL_WEBHOOK_SECRET" in problems[0].msg
        assert "ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY" in problems[1].msg
        settings.ANYMAIL = {
            "MAILGUN_API_KEY": "k",
            "WEBHOOK_SECRET": "a:b",
            "MAILGUN_WEBHOOK_SIGNING_KEY": "s",
        }
        assert sending_settings() == []

    def test_webhooks_named_explicitly_need_a_secret_with_any_mailer(self, settings):
        settings.MESSAGING_TRACKING_WEBHOOKS = ["postmark"]  # SMTP mailer: only the setting mounts it
        settings.ANYMAIL = {}
        assert [p.id for p in sending_settings()] == ["messaging.E009"]
        settings.ANYMAIL = {"WEBHOOK_SECRET": "a:b"}
        assert sending_settings() == []
        settings.MESSAGING_TRACKING_WEBHOOKS = ["postmark", "nosuchmail"]
        (problem,) = sending_settings()
        assert "nosuchmail" in problem.msg

    def test_no_webhooks_no_secret_needed(self, settings):
        settings.ANYMAIL = {}
        assert sending_settings() == []
        settings.MAILERS = {"default": {"BACKEND": "anymail.backends.mailgun.EmailBackend", "OPTIONS": {}}}
        settings.MESSAGING_TRACKING_WEBHOOKS = []  # sending through anymail, no webhooks wanted
        assert sending_settings() == []

    @pytest.mark.parametrize("address", ["bounces", "a@b@c", "bounces+x@example.edu"])
    def test_a_bounce_address_that_cannot_carry_verp_is_refused(self, settings, address):
        settings.MESSAGING_BOUNCE_ADDRESS = address
        assert [p.id for p in sending_settings()] == ["messaging.E006"]


# Staff pages -------------------------------------------------------------------------------------


class TestSuppressionPages:
    def test_staff_see_the_list_and_lift_a_suppression_which_is_audited(self, admin_client, admin_user):
        suppressions.suppress("Gone@Example.org", Suppression.Reason.HARD_BOUNCE, "550 5.1.1 gone")
        suppressions.suppress("spam@example.org", Suppression.Reason.COMPLAINT)
        suppression = Suppression.objects.get(address="gone@example.org")

        page = admin_client.get(reverse("messaging:suppression_list"), {"q": "gone"}).content.decode()
        assert 'data-address="gone@example.org"' in page and "spam@example.org" not in page

        response = admin_client.post(
            reverse("messaging:suppression_lift", args=[suppression.pk]) + "?q=gone", HTTP_HX_REQUEST="true"
        )

        assert response.status_code == 200
        assert "gone@example.org will be sent to again." in response.content.decode()
        assert list(Suppression.objects.values_list("address", flat=True)) == ["spam@example.org"]
        event = AuditEvent.objects.get(action=AuditEvent.Action.SUPPRESSION_LIFTED)
        assert (event.actor, event.details["reason"], event.details["detail"]) == (
            admin_user,
            "hard_bounce",
            "550 5.1.1 gone",
        )

    def test_lifting_needs_the_permission(self, client, django_user_model):
        staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
        staff.user_permissions.add(Permission.objects.get(codename="view_message"))
        client.force_login(staff)
        suppressions.suppress("gone@example.org", Suppression.Reason.HARD_BOUNCE)
        suppression = Suppression.objects.get()

        page = client.get(reverse("messaging:suppression_list")).content.decode()
        assert "gone@example.org" in page and "lift-suppression" not in page
        assert client.post(reverse("messaging:suppression_lift", args=[suppression.pk])).status_code == 403
        assert Suppression.objects.exists()

    def test_the_admin_lifts_through_the_audited_service(self, admin_client):
        suppressions.suppress("gone@example.org", Suppression.Reason.HARD_BOUNCE)
        suppression = Suppression.objects.get()

        admin_client.post(
            reverse("admin:messaging_suppression_changelist"),
            {"action": "lift", "_selected_action": [suppression.pk]},
        )

        assert not Suppression.objects.exists()
        assert AuditEvent.objects.filter(action=AuditEvent.Action.SUPPRESSION_LIFTED).count() == 1

    def test_the_status_page_counts_outcomes_and_groups_bounces(self, admin_client, make_user, smtp_mailer):
        message = send([make_user() for _ in range(4)])
        receivers = list(message.receivers.order_by("pk"))
        feedback.record(report("delivered", event_id="d1"), receivers[0])
        feedback.record(report("bounced", event_id="b1", mta_response="550 5.1.1 gone"), receivers[1])
        feedback.record(report("bounced", event_id="b2", mta_response="550 5.1.1 gone"), receivers[2])
        feedback.record(report("complained", event_id="c1"), receivers[3])

        page = admin_client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert 'id="outcome-delivered">1<' in page
        assert 'id="outcome-hard_bounce">2<' in page
        assert 'id="outcome-complained">1<' in page
        assert 'data-outcome="hard_bounce" data-count="2"' in page
        assert 'id="resend-all-failed"' not in page  # all three addresses are suppressed
        filtered = admin_client.get(
            reverse("messaging:message_status", args=[message.pk]), {"outcome": "hard_bounce"}
        ).content.decode()
        assert f'id="receiver-{receivers[1].pk}"' in filtered
        assert f'id="receiver-{receivers[0].pk}"' not in filtered

        response = admin_client.post(
            reverse("messaging:message_resend_failed", args=[message.pk]), follow=True
        )
        assert "3 receivers were not resent: their addresses are suppressed." in response.content.decode()

    def test_the_receiver_page_shows_the_timeline_and_why_it_cannot_be_resent(
        self, admin_client, sent_receiver
    ):
        feedback.record(report("deferred", minutes=1, mta_response="451 4.7.1 greylisted"), sent_receiver)
        feedback.record(report("bounced", minutes=2, mta_response="550 5.1.1 gone"), sent_receiver)

        page = admin_client.get(
            reverse("messaging:receiver_detail", args=[sent_receiver.pk])
        ).content.decode()

        assert page.index('data-event-type="deferred"') < page.index('data-event-type="bounced"')
        assert "451 4.7.1 greylisted" in page
        assert 'id="receiver-outcome" data-outcome="hard_bounce"' in page
        assert 'id="receiver-suppressed"' in page and 'id="resend-refusal"' in page
        assert 'id="resend-receiver"' not in page
