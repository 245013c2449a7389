"""Context types as configuration: what each is called, what it is for, how recipients get it by
default (immediately, daily or weekly digest, off) and whether it is enforced (always delivered
immediately: recipients cannot turn it off or delay it).

The code registers each type with its defaults (the built-in ones below; a project registers its
own from its AppConfig.ready with `register`); staff override label, default and enforced flag in
the admin (ContextTypeSetting), and those rows win.
"""

from __future__ import annotations

from dataclasses import replace

from django.utils.functional import Promise

from messaging.models import ContextTypeSetting
from messaging.preferences.context_type_registry import (
    ContextType,
    ContextTypeConfig,
    DeliveryMode,
    choices,
    code_config,
    code_configs,
    explanations,
    is_registered,
    register,
    unregister,
)

__all__ = [
    "ContextType",
    "ContextTypeConfig",
    "DeliveryMode",
    "all_configs",
    "choices",
    "composable",
    "composable_choices",
    "explanations",
    "get",
    "is_registered",
    "register",
    "unregister",
]


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
    config = code_config(key)
    if config is None:
        return ContextTypeConfig(key, key, enforced=True, composable=False)
    return _with_setting(config, ContextTypeSetting.objects.filter(context_type=key).first())


def all_configs() -> list[ContextTypeConfig]:
    """Every registered type, staff's settings applied (one query), in registration order."""
    settings = {s.context_type: s for s in ContextTypeSetting.objects.all()}
    return [_with_setting(config, settings.get(config.key)) for config in code_configs()]


def composable() -> list[ContextTypeConfig]:
    return [config for config in all_configs() if config.composable]


def composable_choices() -> list[tuple[str, str | Promise]]:
    return [(config.key, config.label) for config in composable()]
