"""The one module other Django apps import: send and schedule messages, steer a send (pause,
resume, cancel), resend failed receivers, and register a context type of their own.

Everything else in `messaging` is private to the app and may move; the SPEC's model names
(`messaging.models.Message`, …) and `messaging.subject_generator.SubjectTextGenerator` stay too.
Bad input raises ValueError (ValidationError for a message type no channel sends) with a clear
message and changes nothing; a refused pause, resume or cancel raises ControlRefused; a send
started inside an open database transaction raises InsideTransaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.utils.functional import Promise

from messaging.engine import controlling, resending, sending
from messaging.engine.controlling import ControlRefused
from messaging.engine.sending import InsideTransaction
from messaging.models import Message, MessageReceiver
from messaging.preferences import context_types
from messaging.preferences.context_types import ContextTypeConfig, DeliveryMode
from messaging.subject_generator import SubjectTextGenerator

__all__ = [
    "ContextTypeConfig",
    "ControlRefused",
    "DeliveryMode",
    "InsideTransaction",
    "Message",
    "SubjectTextGenerator",
    "cancel",
    "pause",
    "register_context_type",
    "resend_failed",
    "resend_receiver",
    "resume",
    "schedule",
    "send",
]


def send(
    user_ids: Iterable[int],
    subject_generator: SubjectTextGenerator,
    template_name: str,
    template_context: dict | None = None,
    *,
    context_type: str = Message.ContextType.OTHER,
    message_types: Iterable[str] = ("email",),
    send_at: datetime | None = None,
    expires_at: datetime | None = None,
    metadata: dict | None = None,
    created_by=None,
) -> Message:
    """Create a message for these users and send it: each gets the subject and the template
    rendered in their own language. Returns when every receiver was attempted (call it from a
    huey task for large sends). With `send_at` in the future the receivers are prepared now
    and the message waits as `scheduled`; nothing is delivered after `expires_at`. Not inside
    a database transaction (it commits as it goes): raises InsideTransaction there."""
    sending.refuse_inside_transaction()
    if not isinstance(context_type, str) or not 1 <= len(context_type) <= 30:
        raise ValueError(f"A context type is 1-30 characters, got {context_type!r}.")
    sending.validate_schedule(send_at, expires_at)
    message = Message(
        context_type=context_type,
        message_type=list(message_types),
        virtual_message_receivers={"user_ids": list(user_ids)},
        metadata=metadata or {},
        created_by=created_by,
    )
    message.validate_virtual_message_receivers()
    message.clean_message_type()
    message.save()
    message.prepare_and_send(
        subject_generator, template_name, template_context or {}, send_at=send_at, expires_at=expires_at
    )
    return message


def schedule(
    user_ids: Iterable[int],
    subject_generator: SubjectTextGenerator,
    template_name: str,
    template_context: dict | None = None,
    *,
    send_at: datetime,
    **options,
) -> Message:
    """`send` at `send_at` (an aware datetime): prepared now, delivered from then on."""
    if send_at is None:
        raise ValueError("schedule() needs send_at, an aware datetime.")
    return send(user_ids, subject_generator, template_name, template_context, send_at=send_at, **options)


def pause(message: Message, actor=None) -> Message:
    """Stop handing receivers to the mail server; raises ControlRefused unless it is sending."""
    return controlling.pause(message, actor)


def resume(message: Message, actor=None) -> Message:
    """Go on with the receivers not sent yet; raises ControlRefused unless it is paused."""
    return controlling.resume(message, actor)


def cancel(message: Message, actor=None) -> Message:
    """Cancel every receiver not yet handed over; raises ControlRefused once it is finished."""
    return controlling.cancel(message, actor)


def resend_failed(message: Message, actor=None, *, include_permanent: bool = True) -> int:
    """Queue the message's failed (and bounced) receivers again; returns how many were queued."""
    return resending.resend_failed(message, actor, include_permanent=include_permanent)


def resend_receiver(receiver: MessageReceiver, actor=None) -> bool:
    """Queue one failed (or bounced) receiver again; False if it is not resendable."""
    return resending.resend_receiver(receiver, actor)


def register_context_type(
    key: str,
    label: str | Promise,
    *,
    explanation: str | Promise = "",
    default_mode: str = DeliveryMode.IMMEDIATELY,
    enforced: bool = False,
) -> ContextTypeConfig:
    """Register a context type of your app (from its AppConfig.ready): recipients choose how
    they get it (immediately, daily or weekly digest, off) unless it is enforced."""
    return context_types.register(
        key, label, explanation=explanation, default_mode=default_mode, enforced=enforced
    )
