"""A real huey consumer process (SqliteHuey, or Redis under `make test-services`) sending a
staff-composed message end to end over real SMTP."""

import pytest
from django.db import transaction

from messaging.compose import composing
from messaging.models import Message, MessageReceiver
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_consumer_sends_a_message_end_to_end(make_user, huey_consumer, smtp_sink):
    users = [make_user(language="nb" if i % 2 else "en") for i in range(20)]
    users.append(make_user(email="nope@bounce.example"))
    message = Message.objects.create(
        composed_content={
            "en": {"subject": "Hello {{ recipient_first_name }}", "body": "<p>English body</p>"},
            "nb": {"subject": "Hei {{ recipient_first_name }}", "body": "<p>Norsk tekst</p>"},
        },
        virtual_message_receivers={"chosen_user_ids": [u.pk for u in users]},
    )
    with transaction.atomic():
        assert composing.queue_send(message) == 21

    def finished():
        message.refresh_from_db()
        return message.status in {Message.Status.SENT, Message.Status.ERROR}

    wait_until(finished, timeout=60, message="the consumer to finish the message")
    assert message.status == Message.Status.ERROR  # the bounce.example receiver failed
    statuses = dict(message.receivers.values_list("user_id", "status"))
    assert statuses.pop(users[-1].pk) == MessageReceiver.Status.FAILED
    assert set(statuses.values()) == {MessageReceiver.Status.SENT}
    subjects = sorted(m.message["Subject"] for m in smtp_sink.received)
    assert len(subjects) == 20
    assert f"Hei {users[1].first_name}" in subjects and f"Hello {users[0].first_name}" in subjects
    nb_mail = next(m.message for m in smtp_sink.received if m.rcpt_tos == (users[1].email,))
    assert "Norsk tekst" in nb_mail.get_body(("plain",)).get_content()
