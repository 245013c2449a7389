"""huey tasks: thin shells that load by id and call a service. No decisions here."""

from django.conf import settings
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task

from messaging.models import Message
from messaging.services import composing, delivery, maintenance, resending


@db_task()
def send_composed_message(message_id: int) -> None:
    message = Message.objects.filter(pk=message_id).first()
    if message is not None:
        composing.send_composed(message)


@db_task()
def deliver_message(message_id: int) -> None:
    delivery.deliver_message(message_id)


@db_task()
def resend_failed_receivers(message_id: int) -> None:
    message = Message.objects.filter(pk=message_id).first()
    if message is not None:
        resending.resend_failed(message)


@db_periodic_task(crontab(minute="*"))
def retry_failed_receivers() -> None:
    resending.retry_due_receivers()


@db_periodic_task(crontab(minute="*"))
def resume_stalled_messages() -> None:
    for message_id in maintenance.messages_needing_delivery():
        deliver_message(message_id)
    for message in maintenance.stale_preparing_messages():
        if maintenance.recover_stale_preparing(message):
            send_composed_message(message.pk)
    for message in maintenance.lost_queued_messages():
        send_composed_message(message.pk)


# No huey lock_task anywhere: a lock left by a killed consumer would block its task forever,
# and every task here is idempotent.
@db_periodic_task(crontab(minute="17", hour="3"))
def delete_old_receivers() -> None:
    days = settings.MESSAGING_RECEIVER_RETENTION_DAYS
    if days:
        maintenance.delete_old_receivers(days)
        maintenance.delete_messages_without_receivers()
