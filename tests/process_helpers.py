"""Shared by the tests that drive real `run_huey` consumers against an in-process SMTP sink."""

from __future__ import annotations

import collections

from django.db import transaction

from messaging.compose import composing
from messaging.feedback import signatures
from messaging.models import Message, MessageReceiver
from messaging.operations.mailsink import MailSink

# The system check (messaging.checks) needs a lease of at least 2 x (2 x mail timeout): a lease
# of 4 s passes with a mail timeout of 1 s.
LEASE_SECONDS = 4
ENGINE_ENV = {
    "MESSAGING_LEASE_SECONDS": LEASE_SECONDS,
    "MESSAGING_RETRY_BASE_SECONDS": 1,
    # Enough helper tasks that every worker thread of every consumer joins a send.
    "MESSAGING_DELIVERY_HELPERS": 3,
    # Each worker sends over this many SMTP connections at once (so as many may be in flight).
    "MESSAGING_SMTP_CONNECTIONS": 2,
}
CONNECTIONS = ENGINE_ENV["MESSAGING_SMTP_CONNECTIONS"]


def email_url(sink: MailSink) -> str:
    return f"{sink.url}/?timeout=1"


def draft(django_user_model, receivers: int, prefix: str) -> Message:
    """A staff-composed draft to `receivers` new users named <prefix><n>."""
    django_user_model.objects.bulk_create(
        django_user_model(username=f"{prefix}{i}", email=f"{prefix}{i}@uni.example") for i in range(receivers)
    )
    return Message.objects.create(
        composed_content={"en": {"subject": f"{prefix} test", "body": "<p>Hi {{ recipient_name }}</p>"}},
        virtual_message_receivers={
            "chosen_user_ids": list(
                django_user_model.objects.filter(username__startswith=prefix).values_list("pk", flat=True)
            )
        },
    )


def queue_message(django_user_model, receivers: int, prefix: str) -> Message:
    message = draft(django_user_model, receivers, prefix)
    with transaction.atomic():
        assert composing.queue_send(message) == receivers
    return message


def message_ids(message: Message) -> dict[str, MessageReceiver]:
    return {
        signatures.message_id(r.pk, message.pk, "messaging.local"): r
        for r in MessageReceiver.objects.filter(message=message)
    }


def deliveries(sink: MailSink) -> collections.Counter:
    return collections.Counter(m.message["Message-ID"] for m in list(sink.received))
