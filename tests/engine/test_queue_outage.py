"""The task queue is unreachable when staff press Send: a clear error, nothing half-done."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from huey.contrib.djhuey import HUEY

from messaging.compose import composing
from messaging.models import AuditEvent, Message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queue_down(monkeypatch) -> list[str]:
    """Every enqueue fails as it does with Redis down; returns the names of the tasks tried."""
    tried = []

    def unreachable(task):
        tried.append(task.name.rpartition(".")[2])
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(HUEY, "enqueue", unreachable)
    return tried


def test_send_with_the_queue_down_keeps_the_draft(client, make_user, queue_down):
    staff = make_user(is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="messaging"))
    client.force_login(staff)
    draft = composing.save_draft(
        Message(
            composed_content={"en": {"subject": "s", "body": "<p>b</p>"}},
            virtual_message_receivers={"chosen_user_ids": [make_user().pk]},
        ),
        staff,
    )
    url = reverse("messaging:message_send", args=[draft.pk])
    response = client.post(url, follow=True)

    assert response.redirect_chain[-1][0] == url
    assert b"task queue could not be reached" in response.content
    assert queue_down == ["send_composed_message"]
    draft.refresh_from_db()
    assert draft.is_draft and not draft.receivers.exists()
    assert not AuditEvent.objects.filter(message=draft, action=AuditEvent.Action.SENT).exists()


def test_resend_with_the_queue_down_is_picked_up_by_the_sweeper(make_user, queue_down):
    from messaging.engine import maintenance, resending
    from messaging.models import MessageReceiver

    message = Message.objects.create(status=Message.Status.ERROR)
    receiver = MessageReceiver.objects.create(
        message=message, user=make_user(), send_to="r@x.org", status=MessageReceiver.Status.ERROR
    )
    assert resending.resend_receiver(receiver)  # no exception reaches staff
    assert queue_down == ["deliver_message"]
    receiver.refresh_from_db()
    assert receiver.status == MessageReceiver.Status.NOT_SENT
    assert maintenance.messages_needing_delivery() == [message.pk]
