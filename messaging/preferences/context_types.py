"""Context types as configuration: what each is called, what it is for, how recipients get it by
default (immediately, daily or weekly digest, off) and whether it is enforced (always delivered
immediately: recipients cannot turn it off or delay it).

The code registers each type with its defaults (the built-in ones below; a project registers its
own from its AppConfig.ready with `register`); staff override label, default and enforced flag in
the admin (ContextTypeSetting), and those rows win.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from messaging.models import ContextTypeSetting, DeliveryMode, Message

ContextType = Message.ContextType


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


def choices() -> list[tuple[str, str | Promise]]:
    """Every registered type with its code label (the model fields' choices: no query)."""
    return [(config.key, config.label) for config in _REGISTRY.values()]


def is_registered(key: str) -> bool:
    return key in _REGISTRY


def _with_setting(config: ContextTypeConfig, setting: ContextTypeSetting | None) -> ContextTypeConfig:
    if setting is None:
        return config
    return replace(
        config,
        label=setting.label or config.label,
        default_mode=setting.default_mode,
        enforced=setting.enforced,
    )


def get(key: str) -> ContextTypeConfig:
    """A type's configuration with staff's setting applied. A type nobody registered (an app
    that sends with a key of its own) is delivered immediately and cannot be turned off."""
    config = _REGISTRY.get(key)
    if config is None:
        return ContextTypeConfig(key, key, enforced=True, composable=False)
    return _with_setting(config, ContextTypeSetting.objects.filter(context_type=key).first())


def all_configs() -> list[ContextTypeConfig]:
    """Every registered type, staff's settings applied (one query), in registration order."""
    settings = {s.context_type: s for s in ContextTypeSetting.objects.all()}
    return [_with_setting(config, settings.get(key)) for key, config in _REGISTRY.items()]


def composable() -> list[ContextTypeConfig]:
    return [config for config in all_configs() if config.composable]


def composable_choices() -> list[tuple[str, str | Promise]]:
    return [(config.key, config.label) for config in composable()]


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
