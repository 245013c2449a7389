"""Staff control of a send: pause, resume, cancel (from the status page, the admin and the
command line). Each is a guarded transition; a refusal says why in words staff can act on,
and changes nothing."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from messaging.engine import queue, transitions
from messaging.models import AuditEvent, Message
from messaging.operations.audit import record


class ControlRefused(Exception):
    """The message is not in a state that allows this; nothing was changed.

    `template` names the message's status as %(status)s. `text` (and str()) fill in the status's
    name in the data, for API callers; pages and commands that show the refusal to staff call
    describe() with what their badges call it (messaging.tracking.status_labels.refusal_text),
    which the engine cannot know: it depends on counts and reports the read side adds up."""

    def __init__(self, message: Message, template) -> None:
        self.message = message
        self.template = template
        self.text = self.describe(message.get_status_display())
        super().__init__(self.text)

    def describe(self, status_label) -> str:
        """The refusal naming the message's status as `status_label`."""
        return self.template % {"status": status_label}


def _current(message: Message) -> Message:
    message.refresh_from_db(fields=["status", "status_data", "send_at", "expires_at"])
    return message


def _refuse(message: Message, template) -> None:
    raise ControlRefused(message, template)


def pause(message: Message, actor=None) -> Message:
    if not transitions.pause(message.pk, actor_id=getattr(actor, "pk", None)):
        _refuse(_current(message), _("Only a message that is sending can be paused; this one is %(status)s."))
    record(message, AuditEvent.Action.PAUSED, actor)
    return _current(message)


def resume(message: Message, actor=None) -> Message:
    if not transitions.resume(message.pk):
        _refuse(_current(message), _("Only a paused message can be resumed; this one is %(status)s."))
    record(message, AuditEvent.Action.RESUMED, actor)
    # robust: the sweeper delivers a sending message anyway, should the queue be down.
    queue.after_commit(queue.deliver_message, message.pk)
    return _current(message)


def cancel(message: Message, actor=None) -> Message:
    outcome = transitions.cancel(message.pk)
    if outcome is None:
        current = _current(message)
        if current.status == Message.Status.PREPARING:
            _refuse(current, _("The message is being prepared right now; try again in a moment."))
        _refuse(
            current, _("This message is %(status)s; only a message that has not finished can be cancelled.")
        )
    record(message, AuditEvent.Action.CANCELLED, actor, **outcome)
    return _current(message)


def expire(message_id: int) -> bool:
    """The message's expiry has passed: what was not delivered is cancelled ("expired")."""
    outcome = transitions.expire(message_id)
    if outcome is None:
        return False
    record(message_id, AuditEvent.Action.EXPIRED, None, **outcome)
    return True


def auto_pause(message_id: int, tripped: dict) -> bool:
    """A delivering worker's failure watch tripped (status.FailureWatch): pause, and say why."""
    if not transitions.pause(message_id, tripped=tripped):
        return False
    record(message_id, AuditEvent.Action.AUTO_PAUSED, None, **tripped)
    return True


ACTIONS = {"pause": pause, "resume": resume, "cancel": cancel}
