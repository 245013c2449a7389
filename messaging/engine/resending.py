"""Resending: staff resends (one receiver or all failed ones) and automatic retries.

A resend only moves failed/error receivers (and sent emails that bounced afterwards) back to
not_sent with one conditional UPDATE; delivery then claims them like any other. A delivered
receiver is never touched, a second click finds nothing left to move, and a receiver whose
(current) address is suppressed stays as it is: it would only fail again.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from messaging.engine import queue, transitions
from messaging.engine.recipients import notification_address, users_with_recipient_data
from messaging.feedback import suppressions
from messaging.models import AuditEvent, Message, MessageReceiver


def _changed_addresses(receivers) -> list[MessageReceiver]:
    """The receivers whose user's current address differs from the one they were sent to,
    carrying the new address (unsaved)."""
    receivers = list(receivers.select_related(None).only("id", "user_id", "send_to"))
    users = {u.pk: u for u in users_with_recipient_data({r.user_id for r in receivers})}
    changed = []
    for receiver in receivers:
        address = notification_address(users[receiver.user_id]) if receiver.user_id in users else ""
        if address != receiver.send_to:
            receiver.send_to = address
            changed.append(receiver)
    return changed


def _refresh_addresses(receivers) -> set[int]:
    """A resend goes to the user's current address (it may have been fixed since); returns the
    ids of the receivers whose address changed."""
    changed = _changed_addresses(receivers)
    MessageReceiver.objects.bulk_update(changed, ["send_to"], batch_size=500)
    return {receiver.pk for receiver in changed}


@dataclass(frozen=True)
class ResendPlan:
    """What "Resend failed" would do, for the confirmation staff see first."""

    temporary: int  # failed for a passing reason (451, timeout, soft bounce): may work now
    permanent_address_changed: int  # failed for good, but the user's address changed since
    permanent: int  # failed for good at the address it would go to again: fails again
    suppressed: int  # the address is suppressed: never resent

    @property
    def can_succeed(self) -> int:
        return self.temporary + self.permanent_address_changed


def resend_plan(message: Message) -> ResendPlan:
    resendable = MessageReceiver.objects.filter(message=message).resendable()
    candidates = resendable.unsuppressed()
    permanent = candidates.failed_permanently()
    changed = len(_changed_addresses(permanent))
    return ResendPlan(
        temporary=candidates.count() - permanent.count(),
        permanent_address_changed=changed,
        permanent=permanent.count() - changed,
        suppressed=resendable.suppressed().count(),
    )


def _queue_delivery(message_ids) -> None:
    for message_id in set(message_ids):
        transitions.roll_up(message_id)
        # after_commit is robust: if the queue is down the receivers still wait as not_sent,
        # and the sweeper delivers them once it is back.
        queue.after_commit(queue.deliver_message, message_id)


def resend_allowed(message: Message) -> bool:
    """A cancelled or expired message (or one past its expiry) is never sent to again."""
    return message.status not in (Message.Status.CANCELLED, Message.Status.EXPIRED) and not message.is_expired


def resend_refusal(receiver: MessageReceiver) -> str:
    """Why staff cannot resend this receiver now, or "" if they can."""
    if not resend_allowed(receiver.message):
        return _("This message was cancelled or has expired; duplicate it to send it again.")
    if not receiver.is_resendable:
        return _("Only failed or bounced receivers can be resent.")
    user = users_with_recipient_data([receiver.user_id]).first()
    address = notification_address(user) if user else ""
    suppression = suppressions.suppression_of(address)
    if suppression is None:
        return ""
    return _("%(address)s is %(why)s. Change the user's address or lift the suppression, then resend.") % {
        "address": address,
        "why": suppression.describe(),
    }


def resend_receiver(receiver: MessageReceiver, actor=None) -> bool:
    """Queue one failed/error (or bounced) receiver again. False if it was not resendable
    (e.g. delivered, its address is suppressed, or its message was cancelled or has expired)."""
    if not resend_allowed(receiver.message):
        return False
    with transaction.atomic():
        resendable = MessageReceiver.objects.resendable().filter(pk=receiver.pk)
        _refresh_addresses(resendable)
        moved = transitions.reset_for_resend(resendable.unsuppressed())
        if not moved:
            return False
        AuditEvent.objects.create(
            message_id=receiver.message_id, receiver=receiver, actor=actor, action=AuditEvent.Action.RESENT
        )
        _queue_delivery([receiver.message_id])
    receiver.refresh_from_db()
    return True


def resend_failed(message: Message, actor=None, *, include_permanent: bool = True) -> int:
    """Queue every failed/error (or bounced) receiver of a message again, but those whose address
    is suppressed; returns how many (none for a cancelled or expired message).

    include_permanent=False leaves out the permanent failures whose address did not change:
    they would only fail again (the staff UI's default)."""
    if not resend_allowed(message):
        return 0
    with transaction.atomic():
        resendable = MessageReceiver.objects.filter(message=message).resendable()
        changed = _refresh_addresses(resendable)
        chosen = resendable.unsuppressed()
        if not include_permanent:
            chosen = chosen.exclude(
                pk__in=resendable.failed_permanently().exclude(pk__in=changed).values("pk")
            )
        moved = transitions.reset_for_resend(chosen)
        if moved:
            AuditEvent.objects.create(
                message=message,
                actor=actor,
                action=AuditEvent.Action.RESENT_ALL,
                details={"receivers": moved, "include_permanent": include_permanent},
            )
            _queue_delivery([message.pk])
    message.refresh_from_db(fields=["status", "status_data"])
    return moved


def retry_due_receivers(message_id: int | None = None) -> int:
    """Automatic retries (of one message, or all): failed, not permanent, backoff over (and so
    within the resend limit, because receivers past it are error, not failed)."""
    now = timezone.now()
    with transaction.atomic():
        due = MessageReceiver.objects.due_for_retry(now)
        if message_id is not None:
            due = due.filter(message_id=message_id)
        message_ids = list(due.order_by().values_list("message_id", flat=True).distinct())
        moved = transitions.reset_for_resend(due)
        if moved:
            _queue_delivery(message_ids)
    return moved
