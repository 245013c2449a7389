"""The data model (SPEC §2), one module per concern; every model is importable from here.

Models hold fields, choices, querysets and the methods the contract names; those methods
delegate to the engine (messaging.engine), where every status transition lives.
"""

from messaging.models.compose import MessageAttachment, MessageTemplate, attachment_upload_to
from messaging.models.engine import (
    Message,
    MessageQuerySet,
    MessageReceiver,
    MessageReceiverQuerySet,
    RateLimitSlot,
    is_suppressed,
)
from messaging.models.feedback import DeliveryEvent, Suppression, UnmatchedBounce
from messaging.models.operations import AuditEvent, Heartbeat
from messaging.models.preferences import ContextTypeSetting, NotificationPreference
from messaging.models.recipients import MessagingProfile, UserEmail
from messaging.preferences.context_type_registry import ContextType, DeliveryMode
from messaging.preferences.context_type_registry import choices as context_type_choices

__all__ = [
    "AuditEvent",
    "ContextType",
    "ContextTypeSetting",
    "DeliveryEvent",
    "DeliveryMode",
    "Heartbeat",
    "Message",
    "MessageAttachment",
    "MessageQuerySet",
    "MessageReceiver",
    "MessageReceiverQuerySet",
    "MessageTemplate",
    "MessagingProfile",
    "NotificationPreference",
    "RateLimitSlot",
    "Suppression",
    "UnmatchedBounce",
    "UserEmail",
    "attachment_upload_to",
    "context_type_choices",
    "is_suppressed",
]
