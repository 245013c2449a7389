"""Refusals to pause, resume or cancel name the message's status as its badge does (issue 30):
"this one is “Sent, 1 not delivered”", not the data's "Error", on the status page, in the admin
and from the commands; API callers still get the engine's text (str(ControlRefused))."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from messaging.engine import controlling, delivery, transitions
from messaging.engine.channels import DeliveryResult
from messaging.models import Message
from messaging.tracking import status_labels
from tests.engine_helpers import SEND_ARGS, LanguageSubject

pytestmark = pytest.mark.django_db

Status = Message.Status
PAUSE_REFUSED = "Only a message that is sending can be paused; this one is “Sent, 1 not delivered”."
NO_SUCH_USER = DeliveryResult(delivered=False, permanent=True, reason="550 5.1.1 No such user")


def sending_message(users) -> Message:
    """Prepared, its receivers waiting for a worker (scheduled, then started without one)."""
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    send_at = timezone.now() + timedelta(days=1)
    message.prepare_and_send(LanguageSubject(), **SEND_ARGS, send_at=send_at)
    Message.objects.filter(pk=message.pk).update(send_at=timezone.now())
    assert transitions.start_scheduled_delivery(message.pk)
    message.refresh_from_db()
    assert message.status == Status.SENDING, message.status
    return message


def finished_message(users) -> Message:
    message = sending_message(users)
    delivery.deliver_message(message.pk)
    message.refresh_from_db()
    return message


def refusal(action: str, message: Message) -> controlling.ControlRefused:
    with pytest.raises(controlling.ControlRefused) as refused:
        controlling.ACTIONS[action](message)
    return refused.value


@pytest.fixture
def partly_failed(make_user, scripted_channel) -> Message:
    """Finished: two of three receivers sent, one failed for good (status "error")."""
    users = [make_user(), make_user(), make_user()]
    scripted_channel.answers[users[0].email] = NO_SUCH_USER
    message = finished_message(users)
    assert message.status == Status.ERROR
    return message


def test_pausing_a_finished_send_with_failures_says_what_its_badge_says(partly_failed):
    refused = refusal("pause", partly_failed)
    text = status_labels.refusal_text(refused)
    assert text == PAUSE_REFUSED
    assert "Error" not in text
    # API callers keep the engine's own text.
    assert str(refused) == refused.text
    assert str(refused) == "Only a message that is sending can be paused; this one is Error."


def test_the_label_is_the_status_pages(partly_failed, admin_client):
    """The same words as the badge on the status page, which computes them itself."""
    label = status_labels.current_message_label(partly_failed)
    page = admin_client.get(reverse("messaging:message_status", args=[partly_failed.pk])).content.decode()
    assert f'data-label="{label.key}">{label.text}</span>' in page


def test_resuming_a_sending_one(make_user):
    message = sending_message([make_user()])
    text = status_labels.refusal_text(refusal("resume", message))
    assert text == "Only a paused message can be resumed; this one is “Sending”."


def test_cancelling_a_sent_one(make_user, scripted_channel):
    message = finished_message([make_user(), make_user()])
    assert message.status == Status.SENT
    text = status_labels.refusal_text(refusal("cancel", message))
    assert text == "This message is “Sent”; only a message that has not finished can be cancelled."


def test_cancelling_a_send_where_everyone_failed(make_user, scripted_channel):
    scripted_channel.default = NO_SUCH_USER
    message = finished_message([make_user(), make_user()])
    text = status_labels.refusal_text(refusal("cancel", message))
    assert text == "This message is “Failed”; only a message that has not finished can be cancelled."


def test_a_refusal_without_a_status_is_told_as_it_is(make_user):
    message = Message.objects.create(
        virtual_message_receivers={"user_ids": [make_user().pk]}, status=Status.PREPARING
    )
    refused = refusal("cancel", message)
    assert status_labels.refusal_text(refused) == str(refused)
    assert str(refused) == "The message is being prepared right now; try again in a moment."


def test_in_norwegian(partly_failed):
    from django.utils import translation

    with translation.override("nb"):
        text = status_labels.refusal_text(refusal("pause", partly_failed))
    assert "Sendt, 1 ikke levert" in text and "Feil" not in text, text


# Where staff read them -------------------------------------------------------------------------------


def test_the_status_page(partly_failed, admin_client):
    response = admin_client.post(reverse("messaging:message_pause", args=[partly_failed.pk]))
    (shown,) = [str(m) for m in get_messages(response.wsgi_request)]
    assert shown == PAUSE_REFUSED


def test_the_admin_action(partly_failed, admin_client):
    response = admin_client.post(
        reverse("admin:messaging_message_changelist"),
        {"action": "pause_sending", "_selected_action": [partly_failed.pk]},
        follow=True,
    )
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert shown == [f"#{partly_failed.pk}: {PAUSE_REFUSED}"]


def test_the_commands(partly_failed, make_user, capsys):
    with pytest.raises(CommandError):
        call_command("messaging_pause", str(partly_failed.pk))
    assert f"#{partly_failed.pk}: {PAUSE_REFUSED}" in capsys.readouterr().err
    sending = sending_message([make_user()])
    call_command("messaging_pause", str(sending.pk))
    assert capsys.readouterr().out.strip() == f"#{sending.pk}: Paused"
