"""Delivery over a real SMTP conversation with an in-process aiosmtpd sink."""

from email.utils import parseaddr

import pytest

from messaging.engine import maintenance
from messaging.feedback import signatures
from messaging.models import Message, MessageReceiver
from messaging.operations.mailsink import MailSink, free_port
from tests.engine_helpers import SEND_ARGS, LanguageSubject

pytestmark = pytest.mark.django_db


def send(users):
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    message.prepare_and_send(LanguageSubject(prefix="Exam"), **SEND_ARGS)
    message.refresh_from_db()
    return message


def test_accepted_and_refused_addresses(make_user, smtp_mailer):
    ok = make_user(language="nb", first_name="Kari", emails=["kari@uni.example"], primary="kari@uni.example")
    later = make_user(email="busy@tempfail.example")
    never = make_user(email="ghost@bounce.example")
    message = send([ok, later, never])

    (mail,) = smtp_mailer.received
    assert mail.rcpt_tos == ("kari@uni.example",)
    email = mail.message
    assert parseaddr(email["To"])[1] == "kari@uni.example"
    assert email["Subject"] == "Exam [nb]"
    receiver = message.receivers.get(user=ok)
    assert email["Message-ID"] == signatures.message_id(receiver.pk, message.pk, "messaging.local")
    assert email.get_content_type() == "multipart/alternative"
    plain = email.get_body(("plain",)).get_content()
    html = email.get_body(("html",)).get_content()
    assert "Hello Kari," in plain and "[the page](https://example.org/x)" in plain
    assert "Language: nb." in html and "<a href=" in html
    assert receiver.status == MessageReceiver.Status.SENT

    temporary = message.receivers.get(user=later)
    assert temporary.status == MessageReceiver.Status.FAILED
    assert not temporary.permanent_failure
    assert temporary.next_attempt_datetime is not None
    assert temporary.errors[0]["code"] == 451
    assert "Try again later" in temporary.errors[0]["error_message"]

    permanent = message.receivers.get(user=never)
    assert permanent.status == MessageReceiver.Status.FAILED
    assert permanent.permanent_failure and permanent.next_attempt_datetime is None
    assert permanent.errors[0]["code"] == 550
    assert message.status == Message.Status.ERROR
    assert message.status_data["summary"]["receiver_counts"] == {
        "cancelled": 0,
        "skipped": 0,
        "held": 0,
        "not_sent": 0,
        "error": 0,
        "failed": 2,
        "sent": 1,
    }


def test_server_down_blocks_the_message_charges_nobody_and_completes_when_back(make_user, settings):
    port = free_port()
    settings.MESSAGING_RETRY_BASE_SECONDS = 0  # the next try is due at once
    settings.MAILERS = {
        "default": {
            "BACKEND": "messaging.engine.channels.smtp_backend.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": port, "timeout": 5},
        }
    }
    users = [make_user() for _ in range(3)]
    message = send(users)
    assert message.status == Message.Status.BLOCKED
    assert "Cannot connect to the mail server" in message.blocked_reason
    assert set(message.receivers.values_list("status", "sending_failed_count", "claimed_by")) == {
        ("not_sent", 0, "")
    }

    with MailSink(port=port) as sink:
        maintenance.sweep()  # what the periodic task does; huey runs inline in tests
    message.refresh_from_db()
    assert message.status == Message.Status.SENT
    assert "blocked" not in message.status_data
    assert sorted(m.rcpt_tos[0] for m in sink.received) == sorted(u.email for u in users)


def test_connection_reused_for_a_batch(make_user, smtp_mailer):
    users = [make_user() for _ in range(5)]
    message = send(users)
    assert message.status == Message.Status.SENT
    assert len(smtp_mailer.received) == 5
    assert smtp_mailer.handler.sessions == 1
