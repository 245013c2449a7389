"""messaging.api, the front door for other apps: send, schedule, steer and resend through it,
and bad input changes nothing. Mail goes to Django's locmem outbox."""

from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from messaging import api
from messaging.engine import transitions
from messaging.engine.channels import DeliveryResult
from messaging.models import Message, MessageReceiver
from messaging.preferences import context_types
from tests.engine_helpers import SEND_ARGS, LanguageSubject

pytestmark = pytest.mark.django_db


def test_send_reaches_every_user_in_their_language(make_user):
    en, nb = make_user(language="en"), make_user(language="nb")
    message = api.send([en.pk, nb.pk], LanguageSubject(), **SEND_ARGS, context_type="comment")
    message.refresh_from_db()
    assert message.status == Message.Status.SENT
    assert message.context_type == "comment"
    assert sorted(r.subject for r in message.receivers.all()) == ["Subject [en]", "Subject [nb]"]
    assert sorted(m.to[0] for m in mail.outbox) == sorted([en.email, nb.email])


def test_schedule_prepares_now_and_waits(make_user):
    send_at = timezone.now() + timedelta(hours=2)
    message = api.schedule([make_user().pk], LanguageSubject(), **SEND_ARGS, send_at=send_at)
    message.refresh_from_db()
    assert message.status == Message.Status.SCHEDULED
    assert message.send_at == send_at
    assert message.receivers.count() == 1
    assert mail.outbox == []


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"user_ids": []}, ValueError),
        ({"user_ids": ["3"]}, ValueError),
        ({"context_type": "x" * 31}, ValueError),
        ({"message_types": ["pigeon"]}, ValidationError),
        ({"expires_at": timezone.now() - timedelta(minutes=1)}, ValueError),
        ({"send_at": timezone.now().replace(tzinfo=None) + timedelta(days=1)}, ValueError),
    ],
)
def test_bad_input_is_refused_and_stores_nothing(make_user, arguments, error):
    arguments = {"user_ids": [make_user().pk], **arguments}
    with pytest.raises(error):
        api.send(arguments.pop("user_ids"), LanguageSubject(), **SEND_ARGS, **arguments)
    assert not Message.objects.exists()
    assert mail.outbox == []


@pytest.mark.django_db(transaction=True)
def test_a_send_inside_an_open_transaction_is_refused_and_changes_nothing(make_user):
    """It commits each step as it goes; inside the caller's transaction none of that could hold
    (a test case's own transaction, as in the tests above, is allowed)."""
    user = make_user()
    with transaction.atomic():
        with pytest.raises(api.InsideTransaction, match=r"transaction\.on_commit"):
            api.send([user.pk], LanguageSubject(), **SEND_ARGS)
        assert not Message.objects.exists()
    draft = Message.objects.create(virtual_message_receivers={"user_ids": [user.pk]})
    with transaction.atomic(), pytest.raises(api.InsideTransaction):
        draft.prepare_and_send(LanguageSubject(), **SEND_ARGS)
    draft.refresh_from_db()
    assert draft.status == Message.Status.DRAFT and not draft.receivers.exists()
    assert mail.outbox == []
    api.send([user.pk], LanguageSubject(), **SEND_ARGS)  # outside one: sent
    assert len(mail.outbox) == 1


def test_schedule_needs_a_time(make_user):
    with pytest.raises(ValueError, match="send_at"):
        api.schedule([make_user().pk], LanguageSubject(), **SEND_ARGS, send_at=None)
    assert not Message.objects.exists()


def start_when_due(message: Message) -> None:
    """Its time comes, and the sweeper would start it."""
    with time_machine.travel(message.send_at + timedelta(minutes=1)):
        assert transitions.start_scheduled_delivery(message.pk)


def test_pause_resume_and_cancel_a_send(make_user):
    message = api.schedule(
        [make_user().pk], LanguageSubject(), **SEND_ARGS, send_at=timezone.now() + timedelta(hours=1)
    )
    with pytest.raises(api.ControlRefused):
        api.pause(message)  # only a sending message pauses
    start_when_due(message)
    assert api.pause(message).status == Message.Status.PAUSED
    assert mail.outbox == []
    assert api.cancel(message).status == Message.Status.CANCELLED
    with pytest.raises(api.ControlRefused):
        api.resume(message)
    assert mail.outbox == []
    assert message.receivers.get().status == MessageReceiver.Status.CANCELLED


def test_resume_delivers_what_was_not_sent(make_user, django_capture_on_commit_callbacks):
    message = api.schedule(
        [make_user().pk], LanguageSubject(), **SEND_ARGS, send_at=timezone.now() + timedelta(hours=1)
    )
    start_when_due(message)
    api.pause(message)
    with django_capture_on_commit_callbacks(execute=True):
        api.resume(message)  # the delivery task runs at once here (huey's immediate mode)
    assert Message.objects.get(pk=message.pk).status == Message.Status.SENT
    assert len(mail.outbox) == 1


def test_resend_failed_receivers(make_user, django_capture_on_commit_callbacks):
    message = api.send([make_user().pk], LanguageSubject(), **SEND_ARGS)
    receiver = message.receivers.get()
    transitions.record_result(receiver, DeliveryResult(delivered=False, permanent=True, reason="550"), "")
    assert MessageReceiver.objects.get(pk=receiver.pk).status == MessageReceiver.Status.FAILED
    with django_capture_on_commit_callbacks(execute=True):
        assert api.resend_failed(message) == 1
    assert MessageReceiver.objects.get(pk=receiver.pk).status == MessageReceiver.Status.SENT
    assert len(mail.outbox) == 2
    assert api.resend_receiver(MessageReceiver.objects.get(pk=receiver.pk)) is False  # delivered


def test_register_context_type():
    config = api.register_context_type("course_news", "Course news", default_mode=api.DeliveryMode.WEEKLY)
    try:
        assert context_types.get("course_news").default_mode == api.DeliveryMode.WEEKLY
        assert ("course_news", "Course news") in context_types.choices()
    finally:
        context_types.unregister(config.key)
