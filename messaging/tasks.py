"""huey tasks: thin shells that load by id and call a service. No decisions here.

Services queue these through messaging.engine.queue, never by importing this module (it
imports them): each task queued by a service is registered there with `@queue.runs(name)`.
MessagingConfig.ready() imports this module in every process."""

from django.utils import timezone
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task

from messaging import conf
from messaging.compose import composing
from messaging.engine import delivery, maintenance, queue, resending, sending
from messaging.feedback import bounces
from messaging.models import Message
from messaging.operations import reporting, retention
from messaging.preferences import digests

# A delivery task that failed (the database was unavailable for longer than a worker rides
# out: messaging.engine.outages) runs again a few seconds later, so sending resumes
# soon after the database is back rather than at the next sweep. Every task is idempotent.
# Read once, when the consumer starts.
_RETRIES, _RETRY_SECONDS = conf.task_retries()
retried = db_task(retries=_RETRIES, retry_delay=_RETRY_SECONDS)


@queue.runs("send_composed_message")
@retried
def send_composed_message(message_id: int) -> None:
    message = Message.objects.filter(pk=message_id).first()
    if message is not None:
        composing.send_composed(message)


@queue.runs("deliver_message")
@retried
def deliver_message(message_id: int) -> None:
    delivery.deliver_message(message_id)


@db_task()
def resend_failed_receivers(message_id: int) -> None:
    message = Message.objects.filter(pk=message_id).first()
    if message is not None:
        resending.resend_failed(message)


@queue.runs("retry_failed_receivers_of")
@retried
def retry_failed_receivers_of(message_id: int) -> None:
    """Scheduled for when a message's first automatic retry is due."""
    resending.retry_due_receivers(message_id)


@queue.runs("retry_blocked_message")
@retried
def retry_blocked_message(message_id: int) -> None:
    """Scheduled for when a blocked message's mail server is to be tried again."""
    maintenance.retry_blocked(message_id)


@queue.runs("start_scheduled_message")
@retried
def start_scheduled_message(message_id: int) -> None:
    """Scheduled for a message's send_at (the sweeper starts it should this task be lost)."""
    message = Message.objects.due_to_start().filter(pk=message_id).first()
    if message is not None:
        sending.start_scheduled(message)


@queue.runs("report_to_sender")
@db_task()
def report_to_sender(message_id: int, event: str) -> None:
    reporting.report_to_sender(message_id, event)


# Read once, when the consumer starts: huey's periodic schedule is fixed at import.
@queue.runs("sweep")
@db_periodic_task(crontab(minute=f"*/{conf.sweep_minutes()}"))
def sweep() -> None:
    maintenance.sweep()


@db_periodic_task(crontab(minute=f"*/{conf.digest_poll_minutes()}"))
def send_digests() -> None:
    digests.send_due(timezone.now())


@db_periodic_task(crontab(minute=f"*/{conf.bounce_poll_minutes()}"))
def read_bounce_mailbox() -> None:
    bounces.read_configured_mailbox()


# No huey lock_task anywhere: a lock left by a killed consumer would block its task forever,
# and every task here is idempotent.
@db_periodic_task(crontab(minute="17", hour="3"))
def apply_retention() -> None:
    retention.apply_retention()
