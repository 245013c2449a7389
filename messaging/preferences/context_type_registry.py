"""The context types the code registers: each one's key, label, explanation and defaults.

A leaf: the models' `context_type` fields take their choices from here, so it imports no model.
Staff's overrides (ContextTypeSetting) are applied by messaging.preferences.context_types.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _


class DeliveryMode(models.TextChoices):
    """How a user gets the messages of one context type (messaging.preferences.modes)."""

    IMMEDIATELY = "immediately", _("Immediately")
    DAILY = "daily", _("Daily digest")
    WEEKLY = "weekly", _("Weekly digest")
    OFF = "off", _("Off")


class ContextType(models.TextChoices):
    OTHER = "other", _("Other")
    COMMENT = "comment", _("Comment")
    DEADLINE_MOVED = "deadline_moved", _("Deadline moved")
    FEEDBACK = "feedback", _("Feedback")
    FEEDBACK_UPDATED = "feedback_updated", _("Feedback updated")
    # Sent by the engine to a message's sender (messaging.operations.reporting).
    SENDING_REPORT = "sending_report", _("Sending report")
    # Sent by the engine: a user's held messages in one email (messaging.preferences.digests).
    DIGEST = "digest", _("Digest")


@dataclass(frozen=True)
class ContextTypeConfig:
    key: str
    label: str | Promise
    explanation: str | Promise = ""
    default_mode: str = DeliveryMode.IMMEDIATELY
    enforced: bool = False
    # Offered to staff on the compose and template pages (engine-made types are not).
    composable: bool = True

    @property
    def mode_choices(self) -> list[tuple[str, str]]:
        """The delivery modes a recipient may choose for this type."""
        return (
            [(DeliveryMode.IMMEDIATELY, DeliveryMode.IMMEDIATELY.label)]
            if self.enforced
            else DeliveryMode.choices
        )


_REGISTRY: dict[str, ContextTypeConfig] = {}


def register(
    key: str,
    label: str | Promise,
    *,
    explanation: str | Promise = "",
    default_mode: str = DeliveryMode.IMMEDIATELY,
    enforced: bool = False,
    composable: bool = True,
) -> ContextTypeConfig:
    """Register (or re-register) a context type. Keys are at most 30 characters."""
    if not key or len(key) > 30:
        raise ValueError(f"A context type key must be 1-30 characters: {key!r}.")
    if default_mode not in DeliveryMode.values:
        raise ValueError(f"Unknown delivery mode {default_mode!r}; one of {DeliveryMode.values}.")
    config = ContextTypeConfig(key, label, explanation, default_mode, enforced, composable)
    _REGISTRY[key] = config
    return config


def unregister(key: str) -> None:
    """Forget a type the code registered (staff's setting for it, if any, is kept)."""
    _REGISTRY.pop(key, None)


def choices() -> list[tuple[str, str | Promise]]:
    """Every registered type with its code label (the model fields' choices: no query)."""
    return [(config.key, config.label) for config in _REGISTRY.values()]


def code_config(key: str) -> ContextTypeConfig | None:
    """A registered type as the code registered it (without staff's setting)."""
    return _REGISTRY.get(key)


def code_configs() -> list[ContextTypeConfig]:
    """Every registered type as the code registered it, in registration order."""
    return list(_REGISTRY.values())


def is_registered(key: str) -> bool:
    return key in _REGISTRY


def explanations() -> dict[str, str | Promise]:
    """The one-line explanation shown under the context type on the compose and template pages."""
    return {config.key: config.explanation for config in _REGISTRY.values() if config.composable}


register(
    ContextType.OTHER, ContextType.OTHER.label, explanation=_("Anything that fits none of the other types.")
)
register(
    ContextType.COMMENT,
    ContextType.COMMENT.label,
    explanation=_("A teacher or examiner commented on a student's work."),
)
register(
    ContextType.DEADLINE_MOVED,
    ContextType.DEADLINE_MOVED.label,
    explanation=_("A deadline was moved: say what it applies to and the new date."),
    enforced=True,
)
register(
    ContextType.FEEDBACK,
    ContextType.FEEDBACK.label,
    explanation=_("Feedback or a grade on a delivery was published."),
)
register(
    ContextType.FEEDBACK_UPDATED,
    ContextType.FEEDBACK_UPDATED.label,
    explanation=_("Feedback or a grade that was already published has changed."),
)
# Made by the engine only, so neither offered to staff on compose nor listed on recipients'
# preference pages. A digest is never held for a digest.
register(ContextType.SENDING_REPORT, ContextType.SENDING_REPORT.label, enforced=True, composable=False)
register(ContextType.DIGEST, ContextType.DIGEST.label, enforced=True, composable=False)
