"""Providers' delivery webhooks (messaging.feedback.webhooks): posts through the real URLs
(/anymail/<esp>/tracking/), with real authentication (HTTP basic auth; Mailgun also its HMAC
signature, SendGrid its ECDSA signature), in each provider's own format as anymail 15 parses it
(anymail/webhooks/*.py and the payloads in anymail's own tests), down to DeliveryEvent, the
receiver's delivery outcome and the suppression list (messaging.feedback.reports)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import hypothesis
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from messaging.engine.outgoing import RECEIVER_METADATA_KEY, message_id_for
from messaging.feedback import suppressions
from messaging.models import DeliveryEvent, Message, MessageReceiver, Suppression, UnmatchedBounce

pytestmark = [
    pytest.mark.django_db,
    # anymail 15 dropped official SendGrid support; its webhook still works, and says so each time.
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

SECRET = "hook:s3cret"
SIGNING_KEY = "key-0123456789abcdef0123456789abcdef"
# SendGrid signs its event webhook with an ECDSA key and shows the public half (base64 DER).
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC_KEY = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
AUTH = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(SECRET.encode()).decode()}
T0 = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
HARD_REPLY = "550 5.1.1 The email account that you tried to reach does not exist."
FULL_REPLY = "452 4.2.2 The email account that you tried to reach is over quota."
_ids = itertools.count(1)

Outcome = MessageReceiver.Outcome


@pytest.fixture(autouse=True)
def anymail_settings(settings):
    settings.ANYMAIL = {
        "WEBHOOK_SECRET": SECRET,
        "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY,
        "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": SENDGRID_PUBLIC_KEY,
    }
    settings.MESSAGING_TRACKING_WEBHOOKS = [provider.name for provider in PROVIDERS]
    return settings


def make_receiver(user, send_to="Ola@Example.org", **fields) -> MessageReceiver:
    message = Message.objects.create(status=Message.Status.SENT, message_type=["email"])
    return MessageReceiver.objects.create(
        message=message,
        user=user,
        status=MessageReceiver.Status.SENT,
        send_to=send_to,
        subject="Exam results",
        message_content_plain="Hello",
        sent_datetime=T0 - timedelta(minutes=5),
        sending_success_count=1,
        **fields,
    )


@pytest.fixture
def receiver(make_user) -> MessageReceiver:
    return make_receiver(make_user(), provider_message_id="")


def uid(prefix: str) -> str:
    return f"{prefix}{next(_ids):06d}"


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def mailgun_signature(timestamp, token, key: str = SIGNING_KEY) -> str:
    """As Mailgun signs its webhooks: HMAC-SHA256 over timestamp + token with the signing key."""
    return hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()


def now_stamp(offset: float = 0) -> str:
    """A signature's time: when the provider posts (now), not when the event happened."""
    return str(int(time.time() + offset))


def sendgrid_headers(body: bytes, timestamp: str | None = None, key=SENDGRID_KEY) -> dict:
    """As SendGrid signs its event webhook: ECDSA-SHA256 over timestamp + body."""
    timestamp = timestamp or now_stamp()
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def post_raw(client, provider, body: bytes, content_type="application/json", headers=None, **extra):
    """A body posted as the provider would, signed where the provider signs its posts."""
    headers = {**provider.signed_headers(body), **(headers or {})}
    return client.generic("POST", provider.url, body, content_type=content_type, headers=headers, **extra)


# ---------------------------------------------------------------------------------------------
# Each provider's events, in its own format. `ref` names the email the way the provider would:
# {"metadata": {...}} (anymail metadata sent with it) and/or {"message_id": ...}.


class Provider:
    name: str
    esp_name: str
    # The outcome a soft (temporary) bounce of this provider should set.
    soft_bounce_type = "bounced"
    soft_bounce_outcome = Outcome.SOFT_BOUNCE

    @property
    def url(self) -> str:
        return f"/anymail/{self.name}/tracking/"

    def body(self, events: list) -> bytes:
        (event,) = events
        return json.dumps(event).encode()

    def post(self, client, *events, headers=None, content_type="application/json", **extra):
        body = self.body(list(events))
        return post_raw(client, self, body, content_type=content_type, headers=headers, **{**AUTH, **extra})

    def signed_headers(self, body: bytes) -> dict:
        return {}

    def ref_for(self, receiver: MessageReceiver, by: str) -> dict:
        if by == "metadata":
            return {"metadata": {RECEIVER_METADATA_KEY: str(receiver.pk)}}
        if by == "provider id":
            return {"message_id": receiver.provider_message_id}
        assert by == "our message-id"
        return {"message_id": message_id_for(receiver)}

    def stored_event_id(self, event) -> str | None:
        """The event id anymail reports; None: the provider has none (a digest is stored)."""
        raise NotImplementedError


class Mailgun(Provider):
    name, esp_name = "mailgun", "Mailgun"
    soft_bounce_type = "deferred"  # Mailgun reports a temporary failure with severity "temporary"
    soft_bounce_outcome = Outcome.DEFERRED

    def provider_message_id(self) -> str:
        return f"<{uid('20260302100000.1.')}@mg.example.org>"

    def event(self, kind, at, ref, recipient="Ola@Example.org", token=None, **fields):
        message_id = ref.get("message_id") or f"{uid('20260302095500.1.')}@mg.example.org"
        data = {
            "id": uid("mgid-"),
            "timestamp": at.timestamp(),
            "log-level": "info",
            "recipient": recipient,
            "recipient-domain": recipient.split("@")[-1],
            "tags": [],
            "user-variables": ref.get("metadata", {}),
            "envelope": {"sender": "noreply@mg.example.org", "transport": "smtp", "targets": recipient},
            "message": {
                # Mailgun writes the Message-ID without its angle brackets; anymail adds them.
                "headers": {
                    "to": recipient,
                    "message-id": message_id.strip("<>"),
                    "from": "noreply@mg.example.org",
                    "subject": "Exam results",
                },
                "attachments": [],
                "size": 809,
            },
        }
        if kind == "delivered":
            data |= {
                "event": "delivered",
                "delivery-status": {"code": 250, "message": "OK", "description": "", "attempt-no": 1},
            }
        elif kind == "hard_bounce":
            data |= {
                "event": "failed",
                "severity": "permanent",
                "reason": "bounce",
                "log-level": "error",
                "delivery-status": {"code": 550, "message": HARD_REPLY[4:], "description": ""},
            }
        elif kind in ("soft_bounce", "deferred"):
            data |= {
                "event": "failed",
                "severity": "temporary",
                "reason": "generic",
                "log-level": "warn",
                "delivery-status": {
                    "code": 452,
                    "message": FULL_REPLY,
                    "description": "",
                    "retry-seconds": 600,
                },
            }
        elif kind == "complaint":
            data |= {"event": "complained"}
        else:
            data |= {"event": kind}
        data |= fields
        token = token or uid("token") + "a" * 40
        timestamp = now_stamp()
        return {
            "signature": {
                "timestamp": timestamp,
                "token": token,
                "signature": mailgun_signature(timestamp, token),
            },
            "event-data": data,
        }

    def hard_reply(self):
        return HARD_REPLY[4:]

    def stored_event_id(self, event):
        return event["signature"]["token"]


class Postmark(Provider):
    name, esp_name = "postmark", "Postmark"

    def provider_message_id(self) -> str:
        return f"{uid('883953f4-6105-42a2-a16a-')}abcdef"

    def event(self, kind, at, ref, recipient="Ola@Example.org", **fields):
        common = {
            "ServerID": 23,
            "MessageStream": "outbound",
            "MessageID": ref.get("message_id") or f"{uid('2706ee8a-737c-4285-b032-')}ccd317",
            "Tag": "exam",
            "Metadata": ref.get("metadata", {}),
        }
        stamp = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        bounce = {
            "RecordType": "Bounce",
            "ID": next(_ids) + 900_000_000,
            "Email": recipient,
            "From": "noreply@example.org",
            "BouncedAt": stamp,
            "DumpAvailable": True,
            "Inactive": True,
            "CanActivate": True,
            "Subject": "Exam results",
        }
        if kind == "delivered":
            event = {
                "RecordType": "Delivery",
                "Recipient": recipient,
                "DeliveredAt": stamp,
                "Details": "smtp;250 2.0.0 OK",
            }
        elif kind == "hard_bounce":
            event = bounce | {
                "Type": "HardBounce",
                "TypeCode": 1,
                "Name": "Hard bounce",
                "Description": (
                    "The server was unable to deliver your message (ex: unknown user, mailbox not found)."
                ),
                "Details": f"smtp;{HARD_REPLY}",
            }
        elif kind == "soft_bounce":
            event = bounce | {
                "Type": "SoftBounce",
                "TypeCode": 4096,
                "Name": "Soft bounce",
                "Description": "Unable to temporarily deliver this email.",
                "Details": f"smtp;{FULL_REPLY}",
                "Inactive": False,
            }
        elif kind == "deferred":
            event = bounce | {
                "Type": "Transient",
                "TypeCode": 2,
                "Name": "Message delayed",
                "Description": (
                    "The server could not temporarily deliver your message (ex: Message is delayed)."
                ),
                "Details": f"smtp;{FULL_REPLY}",
                "Inactive": False,
            }
        elif kind == "complaint":
            event = bounce | {
                "RecordType": "SpamComplaint",
                "Type": "SpamComplaint",
                "TypeCode": 512,
                "Name": "Spam complaint",
                "Description": "The subscriber explicitly marked this message as spam.",
                "Details": "Test spam complaint details",
                "CanActivate": False,
            }
        else:
            event = {"RecordType": kind, "Recipient": recipient, "ReceivedAt": stamp}
        return common | event | fields

    def hard_reply(self):
        return f"smtp;{HARD_REPLY}"

    def stored_event_id(self, event):
        return str(event["ID"]) if "ID" in event else None  # Postmark numbers bounces only


class Brevo(Provider):
    name, esp_name = "brevo", "Brevo"

    def provider_message_id(self) -> str:
        return f"<{uid('202603021000.')}@smtp-relay.mailin.fr>"

    def event(self, kind, at, ref, recipient="Ola@Example.org", **fields):
        seconds = int(at.timestamp())
        event = {
            "event": {
                "delivered": "delivered",
                "hard_bounce": "hard_bounce",
                "soft_bounce": "soft_bounce",
                "deferred": "deferred",
                "complaint": "spam",
            }.get(kind, kind),
            "email": recipient,
            "id": 9999999,  # the Brevo account's id, not the event's
            "date": at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "ts": seconds,
            "ts_event": seconds,
            "ts_epoch": seconds * 1000 + at.microsecond // 1000,
            "message-id": ref.get("message_id") or f"<{uid('202603020955.')}@smtp-relay.mailin.fr>",
            "subject": "Exam results",
            "tag": "exam",
            "sending_ip": "185.41.28.109",
        }
        if ref.get("metadata"):
            event["X-Mailin-custom"] = json.dumps(ref["metadata"])
        if kind == "hard_bounce":
            event["reason"] = f" RecipientError: {HARD_REPLY}"  # the leading space is Brevo's
        elif kind == "soft_bounce":
            event["reason"] = "undefined Unable to find MX of domain example.org"
        elif kind == "deferred":
            event["reason"] = FULL_REPLY
        return event | fields

    def hard_reply(self):
        return f" RecipientError: {HARD_REPLY}"

    def stored_event_id(self, event):
        return None  # Brevo gives no event id


class SendGrid(Provider):
    name, esp_name = "sendgrid", "SendGrid"

    def provider_message_id(self) -> str:
        return f"{uid('de212213-bb66-4302-8f3f-')}20acdb"

    def body(self, events):
        return json.dumps(events).encode()  # SendGrid posts its events in batches

    def signed_headers(self, body: bytes) -> dict:
        return sendgrid_headers(body)

    def ref_for(self, receiver, by):
        if by == "our message-id":
            # SendGrid echoes the Message-ID as "smtp-id"; anymail reads it when no anymail_id.
            return {"smtp_id": message_id_for(receiver)}
        return super().ref_for(receiver, by)

    def event(self, kind, at, ref, recipient="Ola@Example.org", **fields):
        event = {
            "email": recipient,
            "timestamp": int(at.timestamp()),
            "smtp-id": ref.get("smtp_id") or "<wrfRRvF7Q0GgwUo2CvDmEA@ismtpd0006p1sjc2.sendgrid.net>",
            "sg_event_id": uid("sg-event-"),
            "sg_message_id": "wrfRRvF7Q0GgwUo2CvDmEA.filter0425p1mdw1.13037.57168B4A1D.0",
            "category": ["exam"],
            # SendGrid merges custom args ("unique_args", anymail's metadata) into the event.
            **ref.get("metadata", {}),
        }
        if "smtp_id" not in ref:
            event["anymail_id"] = ref.get("message_id") or uid("ccf83222-0d7e-4542-8beb-")
        if kind == "delivered":
            event |= {"event": "delivered", "response": "250 2.0.0 OK 1461095248 - gsmtp", "tls": 1}
        elif kind == "hard_bounce":
            event |= {"event": "bounce", "type": "bounce", "status": "5.1.1", "reason": HARD_REPLY}
        elif kind == "soft_bounce":
            # A "block": SendGrid's own list of blocks is not a suppression list (its docs:
            # "Twilio SendGrid will not suppress future messages to blocked addresses").
            event |= {
                "event": "bounce",
                "type": "blocked",
                "status": "5.7.1",
                "reason": "550 5.7.1 Message rejected due to IP reputation (spam filter)",
                "bounce_classification": "Reputation",
            }
        elif kind == "deferred":
            event |= {"event": "deferred", "response": FULL_REPLY, "attempt": "1"}
        elif kind == "complaint":
            event |= {"event": "spamreport"}
        else:
            event |= {"event": kind}
        return event | fields

    def hard_reply(self):
        return HARD_REPLY

    def stored_event_id(self, event):
        return event["sg_event_id"]


MAILGUN, POSTMARK, BREVO, SENDGRID = Mailgun(), Postmark(), Brevo(), SendGrid()
PROVIDERS = [MAILGUN, POSTMARK, BREVO, SENDGRID]
by_provider = pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)


def by_metadata(receiver) -> dict:
    return {"metadata": {RECEIVER_METADATA_KEY: str(receiver.pk)}}


def nothing_stored() -> bool:
    return not DeliveryEvent.objects.exists() and not Suppression.objects.exists()


def reload(receiver) -> MessageReceiver:
    receiver.refresh_from_db()
    return receiver


# ---------------------------------------------------------------------------------------------
# What each event does


class TestDelivered:
    @by_provider
    def test_delivered_event_sets_the_outcome_and_is_stored_with_what_the_provider_said(
        self, client, provider, receiver
    ):
        event = provider.event("delivered", minutes(3), by_metadata(receiver))
        response = provider.post(client, event)

        assert response.status_code == 200
        receiver = reload(receiver)
        assert receiver.delivery_outcome == Outcome.DELIVERED
        assert receiver.outcome_datetime == minutes(3)
        stored = DeliveryEvent.objects.get()
        assert stored.receiver_id == receiver.pk
        assert stored.event_type == DeliveryEvent.Type.DELIVERED
        assert stored.provider == provider.esp_name
        assert stored.recipient == "Ola@Example.org"
        assert stored.occurred_datetime == minutes(3)
        assert stored.payload == event
        expected_id = provider.stored_event_id(event)
        if expected_id is None:
            assert stored.event_id.startswith("sha256:") and len(stored.event_id) == 7 + 64
        else:
            assert stored.event_id == expected_id
        expected_reply = {
            "mailgun": "OK",
            "postmark": "smtp;250 2.0.0 OK",
            "brevo": "",
            "sendgrid": "250 2.0.0 OK 1461095248 - gsmtp",
        }[provider.name]
        assert stored.mta_response == expected_reply
        assert receiver.outcome_detail == expected_reply
        assert not Suppression.objects.exists()


class TestBounces:
    @by_provider
    def test_hard_bounce_records_the_servers_reply_and_suppresses_the_lower_cased_address(
        self, client, provider, receiver
    ):
        event = provider.event("hard_bounce", minutes(4), by_metadata(receiver))
        assert provider.post(client, event).status_code == 200

        receiver = reload(receiver)
        assert receiver.delivery_outcome == Outcome.HARD_BOUNCE
        assert receiver.outcome_detail == provider.hard_reply().strip()
        assert "5.1.1 The email account that you tried to reach does not exist." in receiver.outcome_detail
        stored = DeliveryEvent.objects.get()
        # anymail's reject_reason: SendGrid's gets one for "dropped" events only.
        assert (stored.event_type, stored.reject_reason) == (
            "bounced",
            "" if provider is SENDGRID else "bounced",
        )
        assert stored.mta_response == provider.hard_reply()
        suppression = Suppression.objects.get()
        assert suppression.address == "ola@example.org"
        assert suppression.reason == Suppression.Reason.HARD_BOUNCE
        assert suppression.event_id == stored.pk
        assert "5.1.1" in suppression.detail

    @pytest.mark.parametrize(
        "provider",
        [
            MAILGUN,
            POSTMARK,
            BREVO,
            SENDGRID,
        ],
        ids=lambda p: p.name,
    )
    def test_soft_bounce_does_not_suppress_the_address(self, client, provider, receiver):
        assert (
            provider.post(
                client, provider.event("soft_bounce", minutes(4), by_metadata(receiver))
            ).status_code
            == 200
        )

        assert DeliveryEvent.objects.get().event_type == provider.soft_bounce_type
        assert reload(receiver).delivery_outcome == provider.soft_bounce_outcome
        assert not Suppression.objects.exists()

    @by_provider
    def test_deferral_sets_deferred_and_does_not_suppress(self, client, provider, receiver):
        assert (
            provider.post(client, provider.event("deferred", minutes(4), by_metadata(receiver))).status_code
            == 200
        )

        assert DeliveryEvent.objects.get().event_type == DeliveryEvent.Type.DEFERRED
        receiver = reload(receiver)
        assert receiver.delivery_outcome == Outcome.DEFERRED
        assert receiver.outcome_detail.endswith(
            "452 4.2.2 The email account that you tried to reach is over quota."
        )
        assert not Suppression.objects.exists()


class TestComplaints:
    @by_provider
    def test_complaint_sets_complained_and_suppresses_the_address(self, client, provider, receiver):
        assert (
            provider.post(client, provider.event("complaint", minutes(9), by_metadata(receiver))).status_code
            == 200
        )

        receiver = reload(receiver)
        assert receiver.delivery_outcome == Outcome.COMPLAINED
        assert receiver.outcome_datetime == minutes(9)
        stored = DeliveryEvent.objects.get()
        assert stored.event_type == DeliveryEvent.Type.COMPLAINED
        suppression = Suppression.objects.get()
        assert (suppression.address, suppression.reason) == ("ola@example.org", Suppression.Reason.COMPLAINT)
        assert suppression.event_id == stored.pk

    @by_provider
    def test_a_later_delivered_event_does_not_undo_a_complaint(self, client, provider, receiver):
        ref = by_metadata(receiver)
        assert provider.post(client, provider.event("complaint", minutes(9), ref)).status_code == 200
        assert provider.post(client, provider.event("delivered", minutes(20), ref)).status_code == 200

        receiver = reload(receiver)
        assert receiver.delivery_outcome == Outcome.COMPLAINED
        assert receiver.outcome_datetime == minutes(9)
        assert list(receiver.delivery_events.values_list("event_type", flat=True)) == [
            "complained",
            "delivered",
        ]
        assert Suppression.objects.get().reason == Suppression.Reason.COMPLAINT


# ---------------------------------------------------------------------------------------------
# Repeats and order


class TestRepeats:
    @pytest.mark.parametrize("kind", ["hard_bounce", "complaint"])
    @by_provider
    def test_the_same_post_three_times_is_stored_once(self, client, provider, receiver, kind):
        event = provider.event(kind, minutes(4), by_metadata(receiver))
        statuses = [provider.post(client, event).status_code for _ in range(3)]

        assert statuses == [200, 200, 200]
        assert DeliveryEvent.objects.count() == 1
        assert Suppression.objects.count() == 1
        assert reload(receiver).delivery_outcome == (
            Outcome.HARD_BOUNCE if kind == "hard_bounce" else Outcome.COMPLAINED
        )

    def test_a_repeated_brevo_complaint_without_ts_epoch_is_stored_once(self, client, receiver):
        # As anymail's tests show Brevo's "complaint": "ts" and "ts_event" only (account-local time).
        event = BREVO.event("complaint", minutes(9), by_metadata(receiver), event="complaint")
        del event["ts_epoch"]
        assert [BREVO.post(client, event).status_code for _ in range(3)] == [200, 200, 200]

        assert DeliveryEvent.objects.count() == 1

    def test_a_sendgrid_batch_repeating_an_event_stores_it_once(self, client, receiver):
        ref = by_metadata(receiver)
        delivered = SENDGRID.event("delivered", minutes(3), ref)
        complaint = SENDGRID.event("complaint", minutes(9), ref)
        response = SENDGRID.post(client, delivered, complaint, delivered, complaint)

        assert response.status_code == 200
        assert sorted(DeliveryEvent.objects.values_list("event_id", flat=True)) == sorted(
            [delivered["sg_event_id"], complaint["sg_event_id"]]
        )
        assert reload(receiver).delivery_outcome == Outcome.COMPLAINED
        assert Suppression.objects.count() == 1

        # SendGrid posts the batch again (it retries whatever it was not sure of): nothing new.
        assert SENDGRID.post(client, delivered, complaint).status_code == 200
        assert DeliveryEvent.objects.count() == 2

    @by_provider
    def test_a_replayed_old_event_changes_nothing(self, client, provider, receiver):
        ref = by_metadata(receiver)
        deferred = provider.event("deferred", minutes(2), ref)
        assert provider.post(client, deferred).status_code == 200
        assert provider.post(client, provider.event("delivered", minutes(7), ref)).status_code == 200
        before = list(
            DeliveryEvent.objects.values_list("id", "event_type", "occurred_datetime", "received_datetime")
        )

        assert provider.post(client, deferred).status_code == 200

        assert (
            list(
                DeliveryEvent.objects.values_list(
                    "id", "event_type", "occurred_datetime", "received_datetime"
                )
            )
            == before
        )
        receiver = reload(receiver)
        assert (receiver.delivery_outcome, receiver.outcome_datetime) == (Outcome.DELIVERED, minutes(7))
        assert not Suppression.objects.exists()

    def test_a_replayed_bounce_does_not_suppress_an_address_staff_lifted_again(
        self, client, make_user, receiver
    ):
        event = POSTMARK.event("hard_bounce", minutes(4), by_metadata(receiver))
        assert POSTMARK.post(client, event).status_code == 200
        assert suppressions.lift(Suppression.objects.get(), actor=make_user(is_staff=True))

        assert POSTMARK.post(client, event).status_code == 200

        assert not Suppression.objects.exists()
        assert DeliveryEvent.objects.count() == 1


class TestOrder:
    @by_provider
    def test_an_older_deferral_arriving_after_the_delivery_does_not_undo_it(self, client, provider, receiver):
        ref = by_metadata(receiver)
        assert provider.post(client, provider.event("delivered", minutes(7), ref)).status_code == 200
        assert provider.post(client, provider.event("deferred", minutes(2), ref)).status_code == 200

        receiver = reload(receiver)
        assert receiver.delivery_outcome == Outcome.DELIVERED
        assert receiver.outcome_datetime == minutes(7)
        timeline = list(receiver.delivery_events.values_list("event_type", "occurred_datetime"))
        assert timeline == [("deferred", minutes(2)), ("delivered", minutes(7))]

    @by_provider
    def test_a_newer_hard_bounce_replaces_an_older_deferral(self, client, provider, receiver):
        ref = by_metadata(receiver)
        assert provider.post(client, provider.event("deferred", minutes(2), ref)).status_code == 200
        assert provider.post(client, provider.event("hard_bounce", minutes(30), ref)).status_code == 200

        assert (reload(receiver).delivery_outcome, receiver.outcome_datetime) == (
            Outcome.HARD_BOUNCE,
            minutes(30),
        )


# ---------------------------------------------------------------------------------------------
# Finding the receiver


MATCHING = [
    (MAILGUN, "metadata"),
    (MAILGUN, "provider id"),
    (MAILGUN, "our message-id"),
    (POSTMARK, "metadata"),
    (POSTMARK, "provider id"),
    (BREVO, "metadata"),
    (BREVO, "provider id"),
    (BREVO, "our message-id"),
    (SENDGRID, "metadata"),
    (SENDGRID, "provider id"),
    (SENDGRID, "our message-id"),
]


class TestMatching:
    @pytest.mark.parametrize(("provider", "by"), MATCHING, ids=[f"{p.name}-{by}" for p, by in MATCHING])
    def test_event_finds_its_receiver(self, client, make_user, provider, by):
        user = make_user()
        others = [make_receiver(user, provider_message_id=provider.provider_message_id()) for _ in range(2)]
        wanted = make_receiver(user, provider_message_id=provider.provider_message_id())
        others.append(make_receiver(user, provider_message_id=provider.provider_message_id()))

        response = provider.post(
            client, provider.event("delivered", minutes(3), provider.ref_for(wanted, by))
        )

        assert response.status_code == 200
        assert DeliveryEvent.objects.get().receiver_id == wanted.pk
        assert reload(wanted).delivery_outcome == Outcome.DELIVERED
        assert {reload(r).delivery_outcome for r in others} == {""}

    @by_provider
    def test_metadata_wins_over_the_message_id(self, client, make_user, provider):
        user = make_user()
        named = make_receiver(user)
        other = make_receiver(user, provider_message_id=provider.provider_message_id())
        ref = {"metadata": by_metadata(named)["metadata"], "message_id": other.provider_message_id}

        assert provider.post(client, provider.event("delivered", minutes(3), ref)).status_code == 200

        assert DeliveryEvent.objects.get().receiver_id == named.pk

    @by_provider
    def test_event_for_an_unknown_email_is_acknowledged_and_not_stored(self, client, provider, receiver):
        event = provider.event("hard_bounce", minutes(4), {"message_id": provider.provider_message_id()})

        assert provider.post(client, event).status_code == 200

        assert nothing_stored()
        assert reload(receiver).delivery_outcome == ""

    @by_provider
    def test_event_naming_a_receiver_that_does_not_exist_is_acknowledged_and_not_stored(
        self, client, provider, receiver
    ):
        ref = {"metadata": {RECEIVER_METADATA_KEY: str(receiver.pk + 10_000)}}
        assert provider.post(client, provider.event("complaint", minutes(4), ref)).status_code == 200

        assert nothing_stored()

    @pytest.mark.parametrize("value", ["", "abc", "-5", "0", "1.0", str(2**63), "[1]"])
    def test_metadata_that_is_not_a_receiver_id_does_not_match_anything(self, client, receiver, value):
        ref = {"metadata": {RECEIVER_METADATA_KEY: value}}
        assert POSTMARK.post(client, POSTMARK.event("hard_bounce", minutes(4), ref)).status_code == 200

        assert nothing_stored()


# ---------------------------------------------------------------------------------------------
# Events we do not record


UNRECORDED = [
    (MAILGUN, {"event": "list_member_uploaded"}),
    (POSTMARK, {"RecordType": "SomethingNew"}),
    # A SubscriptionChange that re-enables sending is anymail's "subscribed": not ours to record.
    (
        POSTMARK,
        {"RecordType": "SubscriptionChange", "SuppressSending": False, "ChangedAt": "2026-03-02T10:04:00Z"},
    ),
    (POSTMARK, {"Type": "Unknown", "TypeCode": 1}),
    (BREVO, {"event": "list_addition"}),
    (BREVO, {"event": "something_new"}),
    (SENDGRID, {"event": "group_resubscribe"}),
    (SENDGRID, {"event": "something_new"}),
]


class TestUnrecordedEvents:
    @pytest.mark.parametrize(
        ("provider", "fields"), UNRECORDED, ids=[f"{p.name}-{next(iter(f.values()))}" for p, f in UNRECORDED]
    )
    def test_event_type_we_do_not_record_is_acknowledged_and_ignored(
        self, client, receiver, provider, fields
    ):
        kind = "hard_bounce" if fields.get("Type") == "Unknown" else "other"
        event = provider.event(kind, minutes(4), by_metadata(receiver), **fields)

        assert provider.post(client, event).status_code == 200

        assert nothing_stored()
        assert reload(receiver).delivery_outcome == ""

    def test_postmark_subscription_change_is_stored_as_unsubscribed_without_an_outcome(
        self, client, receiver
    ):
        # anymail maps it (SuppressSending + ManualSuppression) to "unsubscribed": on the timeline only.
        event = POSTMARK.event(
            "SubscriptionChange",
            minutes(4),
            by_metadata(receiver),
            ChangedAt="2026-03-02T10:04:00Z",
            Origin="Recipient",
            SuppressSending=True,
            SuppressionReason="ManualSuppression",
        )
        assert POSTMARK.post(client, event).status_code == 200

        assert DeliveryEvent.objects.get().event_type == DeliveryEvent.Type.UNSUBSCRIBED
        assert reload(receiver).delivery_outcome == ""
        assert not Suppression.objects.exists()


# ---------------------------------------------------------------------------------------------
# Refused posts: 401 without the secret or a valid signature, 400 for a post nobody can read;
# nothing stored, never a 500.


class TestAuthentication:
    @by_provider
    def test_a_post_without_basic_auth_is_refused(self, client, provider, receiver):
        event = provider.event("hard_bounce", minutes(4), by_metadata(receiver))
        response = client.post(provider.url, provider.body([event]), content_type="application/json")

        assert response.status_code == 401
        assert nothing_stored()

    @pytest.mark.parametrize(
        "authorization",
        [
            "Basic " + base64.b64encode(b"hook:wrong").decode(),
            "Basic " + base64.b64encode(b"hook:s3cret ").decode(),
            "Basic " + base64.b64encode(b"HOOK:s3cret").decode(),
            "Bearer " + base64.b64encode(SECRET.encode()).decode(),
            "Basic not-base64!",
            "Basic " + base64.b64encode(b"\xff\xfe").decode(),
            "Basic",
            "",
        ],
    )
    @by_provider
    def test_a_wrong_secret_is_refused(self, client, provider, receiver, authorization):
        event = provider.event("hard_bounce", minutes(4), by_metadata(receiver))
        response = provider.post(client, event, HTTP_AUTHORIZATION=authorization)

        assert response.status_code == 401
        assert nothing_stored()

    def test_the_secret_is_read_per_request(self, client, settings, receiver):
        event = POSTMARK.event("delivered", minutes(3), by_metadata(receiver))
        settings.ANYMAIL = {"WEBHOOK_SECRET": "hook:rotated"}
        assert POSTMARK.post(client, event).status_code == 401

        settings.ANYMAIL = {"WEBHOOK_SECRET": ["hook:rotated", SECRET]}
        assert POSTMARK.post(client, event).status_code == 200
        assert DeliveryEvent.objects.count() == 1

    @pytest.mark.parametrize(
        "tamper",
        [
            pytest.param(lambda e: e["signature"].update(signature="0" * 64), id="wrong-signature"),
            pytest.param(
                lambda e: e["signature"].update(
                    signature=mailgun_signature(
                        e["signature"]["timestamp"], e["signature"]["token"], "key-other"
                    )
                ),
                id="signed-with-another-key",
            ),
            pytest.param(lambda e: e["signature"].update(token="another-token"), id="token-changed"),
            pytest.param(lambda e: e["signature"].update(timestamp="1"), id="timestamp-changed"),
            pytest.param(lambda e: e.pop("signature"), id="no-signature"),
            pytest.param(lambda e: e["signature"].pop("signature"), id="signature-missing-from-block"),
            pytest.param(lambda e: e["signature"].update(token="tøken"), id="non-ascii-token"),
        ],
    )
    def test_mailgun_post_with_a_bad_signature_is_refused(self, client, receiver, tamper):
        event = MAILGUN.event("hard_bounce", minutes(4), by_metadata(receiver))
        tamper(event)

        # 401, or 400 where anymail cannot even read the signature (a non-ASCII token)
        assert MAILGUN.post(client, event).status_code in (400, 401)
        assert nothing_stored()

    def test_mailgun_signature_alone_is_not_enough_without_basic_auth(self, client, receiver):
        event = MAILGUN.event("hard_bounce", minutes(4), by_metadata(receiver))

        assert MAILGUN.post(client, event, HTTP_AUTHORIZATION="").status_code == 401
        assert nothing_stored()

    def test_mailgun_legacy_form_post_is_checked_and_recorded(self, client, receiver):
        """Mailgun's pre-2018 webhooks post form fields with the signature among them."""
        token, timestamp = "legacy" + "b" * 44, now_stamp()
        fields = {
            "event": "bounced",
            "recipient": "Ola@Example.org",
            "code": "550",
            "error": HARD_REPLY,
            "Message-Id": "<20260302.legacy@mg.example.org>",
            # Legacy bounce posts carry the metadata in the original headers only.
            "message-headers": json.dumps(
                [
                    ["Message-Id", "<20260302.legacy@mg.example.org>"],
                    ["X-Mailgun-Variables", json.dumps({RECEIVER_METADATA_KEY: str(receiver.pk)})],
                ]
            ),
            "timestamp": timestamp,
            "token": token,
            "signature": mailgun_signature(timestamp, token),
        }
        assert client.post(MAILGUN.url, {**fields, "signature": "0" * 64}, **AUTH).status_code == 401
        assert nothing_stored()

        assert client.post(MAILGUN.url, fields, **AUTH).status_code == 200

        stored = DeliveryEvent.objects.get()
        assert (stored.event_type, stored.event_id, stored.mta_response) == ("bounced", token, HARD_REPLY)
        assert stored.payload["event"] == ["bounced"]
        assert reload(receiver).delivery_outcome == Outcome.HARD_BOUNCE
        assert Suppression.objects.get().address == "ola@example.org"


class TestFailClosed:
    """Issue 23: nothing from outside can silence a student. Every refusal leaves no event, no
    outcome and no suppression behind."""

    @by_provider
    def test_without_configuration_the_webhooks_do_not_exist(self, client, settings, provider, receiver):
        del settings.MESSAGING_TRACKING_WEBHOOKS  # the default: the anymail mailer's, and we use SMTP
        event = provider.event("complaint", minutes(4), by_metadata(receiver))

        assert provider.post(client, event).status_code == 404
        assert nothing_stored()

    def test_an_anymail_mailer_mounts_its_own_providers_webhook_only(self, client, settings, receiver):
        del settings.MESSAGING_TRACKING_WEBHOOKS
        settings.MAILERS = {"default": {"BACKEND": "anymail.backends.postmark.EmailBackend", "OPTIONS": {}}}

        assert (
            MAILGUN.post(client, MAILGUN.event("complaint", minutes(4), by_metadata(receiver))).status_code
            == 404
        )
        assert (
            POSTMARK.post(client, POSTMARK.event("delivered", minutes(4), by_metadata(receiver))).status_code
            == 200
        )
        assert DeliveryEvent.objects.count() == 1

    @by_provider
    def test_without_a_webhook_secret_every_request_is_refused(self, client, settings, provider, receiver):
        settings.ANYMAIL = {key: value for key, value in settings.ANYMAIL.items() if key != "WEBHOOK_SECRET"}
        event = provider.event("complaint", minutes(4), by_metadata(receiver))

        response = provider.post(client, event)

        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Basic")
        assert client.head(provider.url).status_code == 401
        assert nothing_stored()
        assert reload(receiver).delivery_outcome == ""

    @by_provider
    def test_a_head_request_needs_the_secret_too(self, client, provider):
        assert client.head(provider.url).status_code == 401
        assert client.head(provider.url, **AUTH).status_code == 200

    @pytest.mark.parametrize(
        ("provider", "key"),
        [(MAILGUN, "MAILGUN_WEBHOOK_SIGNING_KEY"), (SENDGRID, "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY")],
        ids=["mailgun", "sendgrid"],
    )
    def test_a_signing_provider_without_its_key_is_refused_even_with_the_secret(
        self, client, settings, provider, key, receiver
    ):
        del settings.ANYMAIL[key]
        event = provider.event("hard_bounce", minutes(4), by_metadata(receiver))

        assert provider.post(client, event).status_code == 401
        assert nothing_stored()

    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param(
                lambda body: sendgrid_headers(body, key=ec.generate_private_key(ec.SECP256R1())),
                id="other-key",
            ),
            pytest.param(lambda body: sendgrid_headers(body + b" "), id="other-body"),
            pytest.param(
                lambda body: {
                    **sendgrid_headers(body),
                    "X-Twilio-Email-Event-Webhook-Timestamp": now_stamp(-1),
                },
                id="other-timestamp",
            ),
            pytest.param(
                lambda body: {**sendgrid_headers(body), "X-Twilio-Email-Event-Webhook-Signature": ""},
                id="no-signature",
            ),
            pytest.param(
                lambda body: {
                    "X-Twilio-Email-Event-Webhook-Signature": sendgrid_headers(body)[
                        "X-Twilio-Email-Event-Webhook-Signature"
                    ]
                },
                id="no-timestamp",
            ),
        ],
    )
    def test_sendgrid_post_with_a_bad_signature_is_refused(self, client, receiver, headers):
        body = SENDGRID.body([SENDGRID.event("complaint", minutes(4), by_metadata(receiver))])

        response = client.generic(
            "POST", SENDGRID.url, body, content_type="application/json", headers=headers(body), **AUTH
        )

        assert response.status_code == 401
        assert nothing_stored()

    @pytest.mark.parametrize(
        "offset", [-7200, -3700, 3600], ids=["two-hours-old", "just-over-an-hour-old", "an-hour-ahead"]
    )
    def test_a_validly_signed_mailgun_post_with_an_old_or_future_time_is_refused(
        self, client, receiver, offset
    ):
        event = MAILGUN.event("complaint", minutes(4), by_metadata(receiver))
        timestamp, token = now_stamp(offset), event["signature"]["token"]
        event["signature"] |= {"timestamp": timestamp, "signature": mailgun_signature(timestamp, token)}

        assert MAILGUN.post(client, event).status_code == 401
        assert nothing_stored()

    @pytest.mark.parametrize("offset", [-7200, 3600], ids=["two-hours-old", "an-hour-ahead"])
    def test_a_validly_signed_sendgrid_post_with_an_old_or_future_time_is_refused(
        self, client, receiver, offset
    ):
        body = SENDGRID.body([SENDGRID.event("complaint", minutes(4), by_metadata(receiver))])

        response = post_raw(client, SENDGRID, body, headers=sendgrid_headers(body, now_stamp(offset)), **AUTH)

        assert response.status_code == 401
        assert nothing_stored()

    def test_the_age_limit_is_a_setting(self, client, settings, receiver):
        settings.MESSAGING_WEBHOOK_MAX_AGE_SECONDS = 3 * 3600
        event = MAILGUN.event("complaint", minutes(4), by_metadata(receiver))
        timestamp, token = now_stamp(-7200), event["signature"]["token"]
        event["signature"] |= {"timestamp": timestamp, "signature": mailgun_signature(timestamp, token)}

        assert MAILGUN.post(client, event).status_code == 200
        assert Suppression.objects.count() == 1


def ses_notification(
    receiver, recipient="Ola@Example.org", timestamp: datetime | None = None
) -> tuple[dict, dict]:
    """An Amazon SES complaint as SNS posts it: (body, headers)."""
    sns_id = uid("sns-")
    event = {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": recipient}],
            "timestamp": "2026-03-02T10:04:00Z",
        },
        "mail": {
            "messageId": uid("ses-"),
            "destination": [recipient],
            "headers": [{"name": "X-Metadata", "value": json.dumps(by_metadata(receiver)["metadata"])}],
        },
    }
    stamp = (timestamp or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    body = {
        "Type": "Notification",
        "MessageId": sns_id,
        "TopicArn": "arn:aws:sns:eu-west-1:111122223333:ses-events",
        "Message": json.dumps(event),
        "Timestamp": stamp,
    }
    return body, {"x-amz-sns-message-type": "Notification", "x-amz-sns-message-id": sns_id}


class TestAmazonSes:
    """SES signs nothing anymail verifies: the secret guards it, and SNS's Timestamp limits
    replays of a captured post."""

    URL = "/anymail/amazon_ses/tracking/"

    @pytest.fixture(autouse=True)
    def ses_webhook(self, settings):
        settings.MESSAGING_TRACKING_WEBHOOKS = ["amazon_ses"]

    def post(self, client, body, headers, **extra):
        return client.generic(
            "POST",
            self.URL,
            json.dumps(body),
            content_type="text/plain",
            headers=headers,
            **{**AUTH, **extra},
        )

    def test_a_complaint_is_recorded(self, client, receiver):
        assert self.post(client, *ses_notification(receiver)).status_code == 200
        assert reload(receiver).delivery_outcome == Outcome.COMPLAINED

    @pytest.mark.parametrize(
        "age", [timedelta(hours=2), timedelta(hours=-1)], ids=["two-hours-old", "an-hour-ahead"]
    )
    def test_an_old_or_future_notification_is_refused(self, client, receiver, age):
        body, headers = ses_notification(receiver, timestamp=datetime.now(UTC) - age)

        assert self.post(client, body, headers).status_code == 401
        assert nothing_stored()

    def test_without_the_secret_it_is_refused(self, client, receiver):
        assert self.post(client, *ses_notification(receiver), HTTP_AUTHORIZATION="").status_code == 401
        assert nothing_stored()

    def test_a_complaint_about_another_address_changes_nothing(self, client, receiver):
        assert self.post(client, *ses_notification(receiver, recipient="x@example.org")).status_code == 200
        assert nothing_stored()
        assert UnmatchedBounce.objects.get().provider == "Amazon SES"


class TestOnlyTheReceiversAddress:
    """Issue 23: an event naming a receiver (its id is sequential, easy to guess) but another
    address than the one it was sent to is kept for staff and changes nothing."""

    @pytest.mark.parametrize("kind", ["complaint", "hard_bounce", "delivered"])
    @by_provider
    def test_an_event_about_another_address_is_kept_and_changes_nothing(
        self, client, provider, receiver, kind
    ):
        event = provider.event(kind, minutes(4), by_metadata(receiver), recipient="someone.else@example.org")

        assert provider.post(client, event).status_code == 200

        assert nothing_stored()
        assert reload(receiver).delivery_outcome == ""
        kept = UnmatchedBounce.objects.get()
        assert kept.provider == provider.esp_name
        assert kept.sender == "someone.else@example.org"
        assert "Ola@Example.org" in kept.reason and "someone.else@example.org" in kept.reason

    @by_provider
    def test_the_same_address_in_another_case_is_the_receivers(self, client, provider, receiver):
        event = provider.event("complaint", minutes(4), by_metadata(receiver), recipient="OLA@example.ORG")

        assert provider.post(client, event).status_code == 200

        assert reload(receiver).delivery_outcome == Outcome.COMPLAINED
        assert Suppression.objects.get().address == "ola@example.org"

    def test_a_kept_event_is_listed_for_staff_and_downloads_as_json(self, client, admin_client, receiver):
        event = POSTMARK.event("complaint", minutes(4), by_metadata(receiver), Email="x@example.org")
        assert POSTMARK.post(client, event).status_code == 200
        kept = UnmatchedBounce.objects.get()

        page = admin_client.get(reverse("messaging:suppression_list")).content.decode()
        assert "x@example.org" in page and "Postmark" in page

        download = admin_client.get(reverse("messaging:unmatched_bounce_download", args=[kept.pk]))
        assert download["Content-Type"] == "application/json"
        assert json.loads(download.content)["Email"] == "x@example.org"


def signed_mailgun(body: dict) -> dict:
    token, timestamp = "t" * 50, now_stamp()
    return {
        "signature": {
            "token": token,
            "timestamp": timestamp,
            "signature": mailgun_signature(timestamp, token),
        },
        **body,
    }


MALFORMED = [
    # (provider, body, expected status): anymail reads leniently, so a post with nothing it
    # needs is an event it does not know (200); one it cannot read is a 400.
    # A Mailgun body must carry its signature: one it cannot be found in is refused as unsigned.
    *[(p, b"{not json", 401 if p is MAILGUN else 400) for p in PROVIDERS],
    *[(p, b"", 401 if p is MAILGUN else 400) for p in PROVIDERS],
    *[(p, b"\xff\xfe{}", 401 if p is MAILGUN else 400) for p in PROVIDERS],
    *[(p, b'{"a": 1', 401 if p is MAILGUN else 400) for p in PROVIDERS],
    (MAILGUN, b"[]", 401),
    (MAILGUN, b"null", 401),
    (MAILGUN, json.dumps({"signature": "abc"}).encode(), 401),
    (MAILGUN, json.dumps(signed_mailgun({})).encode(), 400),
    (MAILGUN, json.dumps(signed_mailgun({"event-data": []})).encode(), 400),
    (MAILGUN, json.dumps(signed_mailgun({"event-data": {"event": "delivered"}})).encode(), 200),
    (
        MAILGUN,
        json.dumps(signed_mailgun({"event-data": {"event": "delivered", "timestamp": "soon"}})).encode(),
        400,
    ),
    (
        MAILGUN,
        json.dumps(signed_mailgun({"event-data": {"event": ["delivered"], "timestamp": 1}})).encode(),
        400,
    ),
    (
        MAILGUN,
        json.dumps(signed_mailgun({"event-data": {"event": "delivered", "timestamp": 1e300}})).encode(),
        400,
    ),
    (
        MAILGUN,
        json.dumps(
            signed_mailgun(
                {
                    "event-data": {
                        "event": "delivered",
                        "timestamp": 1,
                        "message": {"headers": {"message-id": 5}},
                    }
                }
            )
        ).encode(),
        400,
    ),
    (POSTMARK, b"[]", 400),
    (POSTMARK, b'"Delivery"', 400),
    (POSTMARK, b"null", 400),
    (POSTMARK, b"{}", 200),
    (POSTMARK, json.dumps({"RecordType": "Delivery", "DeliveredAt": 1772445600}).encode(), 400),
    (POSTMARK, json.dumps({"RecordType": "Delivery", "DeliveredAt": "2026-13-45T99:00:00Z"}).encode(), 400),
    (POSTMARK, json.dumps({"RecordType": "Bounce", "Type": ["HardBounce"]}).encode(), 400),
    (POSTMARK, json.dumps({"RecordType": ["Bounce"]}).encode(), 400),
    # anymail refuses the inbound webhook's post as a failed validation: wrong webhook set up
    (POSTMARK, json.dumps({"RecordType": "Inbound"}).encode(), 401),
    (BREVO, b"[]", 400),
    (BREVO, b"7", 400),
    (BREVO, b"{}", 200),
    (BREVO, json.dumps({"items": []}).encode(), 401),  # anymail: the inbound webhook's post
    (BREVO, json.dumps({"event": "delivered", "ts_epoch": "yesterday"}).encode(), 400),
    (BREVO, json.dumps({"event": ["delivered"]}).encode(), 400),
    (BREVO, json.dumps({"event": "delivered", "X-Mailin-custom": "{not json"}).encode(), 400),
    (SENDGRID, b"[]", 200),
    (SENDGRID, b"{}", 200),  # anymail iterates the (no) keys of the object: no events
    (SENDGRID, json.dumps({"event": "delivered"}).encode(), 400),
    (SENDGRID, b'"delivered"', 400),
    (SENDGRID, b"[{}]", 400),
    (SENDGRID, b"[1, 2]", 400),
    (SENDGRID, json.dumps([{"event": "delivered", "timestamp": "soon"}]).encode(), 400),
    (SENDGRID, json.dumps([{"event": "dropped", "reason": 5}]).encode(), 400),
]


class TestMalformedPosts:
    @pytest.mark.parametrize(
        ("provider", "body", "status"),
        MALFORMED,
        ids=[f"{p.name}-{i}" for i, (p, _, _) in enumerate(MALFORMED)],
    )
    def test_unreadable_post_is_answered_without_a_server_error_and_nothing_is_stored(
        self, client, receiver, provider, body, status
    ):
        response = post_raw(client, provider, body, **AUTH)

        assert response.status_code == status
        assert nothing_stored()
        assert reload(receiver).delivery_outcome == ""

    def test_a_sendgrid_batch_with_one_unreadable_event_stores_none_of_it(self, client, receiver):
        good = SENDGRID.event("hard_bounce", minutes(4), by_metadata(receiver))
        response = post_raw(
            client, SENDGRID, json.dumps([good, {"email": "ola@example.org"}]).encode(), **AUTH
        )

        assert response.status_code == 400
        assert nothing_stored()

    @by_provider
    def test_a_body_over_the_upload_limit_is_refused(self, client, settings, provider, receiver):
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
        event = provider.event("hard_bounce", minutes(4), by_metadata(receiver))
        padding = {"padding": "x" * 20_000}
        if provider is MAILGUN:
            event["event-data"] |= padding
        else:
            event |= padding

        response = provider.post(client, event)

        assert response.status_code == 400
        assert nothing_stored()
        # The same event without the padding goes through.
        if provider is MAILGUN:
            del event["event-data"]["padding"]
        else:
            del event["padding"]
        assert provider.post(client, event).status_code == 200
        assert DeliveryEvent.objects.count() == 1

    @by_provider
    def test_a_get_is_not_allowed(self, client, provider):
        assert client.get(provider.url, **AUTH).status_code == 405
        assert client.head(provider.url, **AUTH).status_code == 200  # providers' set-up check


# ---------------------------------------------------------------------------------------------
# PostgreSQL cannot store a NUL character in text (nor \u0000 in jsonb).


class TestNulCharacters:
    @by_provider
    def test_a_message_id_with_a_nul_character_is_not_a_server_error(self, client, provider, receiver):
        event = provider.event("hard_bounce", minutes(4), {"message_id": "<abc\x00def@example.org>"})
        response = post_raw(Client(raise_request_exception=False), provider, provider.body([event]), **AUTH)

        assert response.status_code in (200, 400)
        assert nothing_stored()

    @by_provider
    def test_a_matched_event_with_a_nul_character_is_not_a_server_error(self, client, provider, receiver):
        event = provider.event("hard_bounce", minutes(4), by_metadata(receiver))
        body = provider.body([event]).replace(b"5.1.1 The email", b"5.1.1 The\\u0000email")
        assert b"\\u0000" in body
        response = post_raw(Client(raise_request_exception=False), provider, body, **AUTH)

        assert response.status_code in (200, 400)
        assert DeliveryEvent.objects.count() == (1 if response.status_code == 200 else 0)


class TestLoneSurrogates:
    @by_provider
    def test_a_lone_surrogate_in_the_address_is_kept_for_staff_and_changes_nothing(
        self, client, provider, receiver
    ):
        event = provider.event("hard_bounce", minutes(4), by_metadata(receiver))
        body = provider.body([event]).replace(b'"Ola@Example.org"', b'"\\ud800ola@example.org"', 1)
        assert b"\\ud800" in body

        response = post_raw(client, provider, body, **AUTH)

        # Not the receiver's address: nothing applied, the report kept for staff as it came.
        assert response.status_code == 200
        assert nothing_stored()
        kept = UnmatchedBounce.objects.get()
        assert (kept.provider, kept.sender) == (provider.esp_name, "?ola@example.org")


class TestNotANumber:
    @pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
    @by_provider
    def test_a_matched_event_with_a_non_finite_number_is_stored_or_refused(self, provider, receiver, value):
        event = provider.event("hard_bounce", minutes(4), by_metadata(receiver), note="PLACEHOLDER")
        body = provider.body([event]).replace(b'"PLACEHOLDER"', value.encode(), 1)
        assert value.encode() in body
        response = post_raw(Client(raise_request_exception=False), provider, body, **AUTH)

        assert response.status_code in (200, 400)
        assert DeliveryEvent.objects.count() == (1 if response.status_code == 200 else 0)


# ---------------------------------------------------------------------------------------------
# Anything at all: never a 500, nothing stored without a receiver to match.

KNOWN_KEYS = [
    "signature", "event-data", "event", "timestamp", "token", "user-variables", "message", "headers",
    "message-id", "delivery-status", "severity", "reason", "recipient", "RecordType", "Type", "ID",
    "MessageID", "Metadata", "DeliveredAt", "BouncedAt", "Details", "Email", "SuppressSending",
    "SuppressionReason", "ts_epoch", "X-Mailin-custom", "email", "smtp-id", "anymail_id",
    "sg_event_id", "response", "type", "items", "FromFull", RECEIVER_METADATA_KEY,
]  # fmt: skip
EVENT_NAMES = [
    "delivered", "failed", "complained", "rejected", "Bounce", "Delivery", "SpamComplaint", "HardBounce",
    "SoftBounce", "Transient", "SubscriptionChange", "hard_bounce", "soft_bounce", "spam", "bounce",
    "deferred", "dropped", "spamreport", "permanent", "temporary",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(EVENT_NAMES)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def bodies(draw, provider):
    kind = draw(st.sampled_from(["json", "signed json", "text", "binary"]))
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "text":
        return draw(st.text(max_size=300)).encode()
    value = draw(json_values)
    if kind == "signed json" and provider is MAILGUN and isinstance(value, dict):
        value = signed_mailgun(value)  # past the signature check, into the parser
    return json.dumps(value).encode()


content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=latin-1",
        "application/json; charset=no-such-charset",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=BoUnDaRy",
        "multipart/form-data",
        "text/plain",
        "",
    ]
) | st.text(max_size=40)
header_values = st.text(max_size=60)
FUZZ = hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class TestAnything:
    @pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
    @FUZZ
    @given(data=st.data())
    def test_any_body_and_headers_with_correct_auth_never_make_a_server_error(self, client, provider, data):
        assert not MessageReceiver.objects.exists()
        body = data.draw(bodies(provider), label="body")
        headers = data.draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "X-Twilio-Email-Event-Webhook-Signature": header_values,
                    "X-Twilio-Email-Event-Webhook-Timestamp": header_values,
                    "X-Mailgun-Signature": header_values,
                    "X-Forwarded-For": header_values,
                    "Accept": header_values,
                    "Content-Encoding": st.sampled_from(["gzip", "deflate", "identity"]) | header_values,
                },
            ),
            label="headers",
        )
        content_type = data.draw(content_types, label="content type")

        response = post_raw(client, provider, body, content_type=content_type, headers=headers, **AUTH)
        hypothesis.event(f"status {response.status_code}")

        # 401: a body without a valid signature (the fuzzer's own Twilio headers, an unsigned
        # Mailgun body); else read (200) or refused as unreadable (400).
        assert response.status_code in (200, 400, 401)
        assert nothing_stored()

    @pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
    @hypothesis_settings(FUZZ, max_examples=60)
    @given(
        authorization=st.text(max_size=80)
        | st.binary(max_size=40).map(lambda b: "Basic " + base64.b64encode(b).decode())
    )
    def test_any_other_authorization_is_refused(self, client, provider, make_user, authorization):
        receiver = MessageReceiver.objects.first() or make_receiver(make_user())
        event = provider.event("hard_bounce", minutes(4), by_metadata(receiver))

        response = provider.post(client, event, HTTP_AUTHORIZATION=authorization)

        assert response.status_code == 401
        assert nothing_stored()


# Field values for provider-shaped events, for a receiver that exists. NUL is left out: see
# TestNulCharacters (PostgreSQL refuses it).
texts = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=40)
anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)  # see TestNotANumber
    | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
field_values = (
    anything | st.sampled_from(EVENT_NAMES) | st.floats(-1e13, 1e14) | st.integers(-(10**15), 10**15)
)

# The fields each provider's parser reads (the ones naming the email among them).
FIELDS = {
    "mailgun": ["event", "timestamp", "severity", "reason", "recipient", "delivery-status"],
    "postmark": ["RecordType", "Type", "ID", "BouncedAt", "DeliveredAt", "Details", "Email"],
    "brevo": ["event", "ts_epoch", "reason", "email", "tags", "tag"],
    "sendgrid": ["event", "timestamp", "reason", "response", "type", "email", "sg_event_id"],
}
FIELDS["mailgun"] += ["user-variables", "message"]
FIELDS["postmark"] += ["Metadata", "MessageID"]
FIELDS["brevo"] += ["X-Mailin-custom", "message-id"]
FIELDS["sendgrid"] += [RECEIVER_METADATA_KEY, "anymail_id", "smtp-id"]


class TestAnyFieldValues:
    @pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
    @FUZZ
    @given(data=st.data())
    def test_provider_shaped_event_with_any_field_values_never_makes_a_server_error(
        self, client, provider, make_user, data
    ):
        receiver = MessageReceiver.objects.first() or make_receiver(make_user())
        kind = data.draw(st.sampled_from(["delivered", "hard_bounce", "deferred", "complaint"]), label="kind")
        event = provider.event(kind, minutes(4), by_metadata(receiver))
        target = event["event-data"] if provider is MAILGUN else event
        changes = data.draw(
            st.dictionaries(st.sampled_from(FIELDS[provider.name]), field_values, min_size=1, max_size=3)
        )
        target |= changes
        events_before = DeliveryEvent.objects.count()
        suppressions_before = Suppression.objects.count()

        response = provider.post(client, event)
        stored = DeliveryEvent.objects.count() - events_before
        hypothesis.event(f"status {response.status_code}, {stored} stored")

        assert response.status_code in (200, 400)
        if response.status_code == 400:
            assert DeliveryEvent.objects.count() == events_before
            assert Suppression.objects.count() == suppressions_before
        else:
            assert stored in (0, 1)
