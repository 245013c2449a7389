"""The audit trail: who did what to a message, and when."""

from __future__ import annotations

from messaging.models import AuditEvent, Message


def record(message: Message | int, action: str, actor=None, **details) -> AuditEvent:
    message_id = message if isinstance(message, int) else message.pk
    return AuditEvent.objects.create(message_id=message_id, actor=actor, action=action, details=details)
