"""Notification preferences: how each user gets the messages of each context type.

Resolution, in order: an enforced type (or a message marked important) is delivered
immediately; else the user's own choice for the type; else the type's default
(messaging.preferences.context_types, where staff's admin setting wins over the code's).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from messaging.models import DeliveryMode, NotificationPreference
from messaging.preferences import context_types


class PreferenceRefused(ValueError):
    """The choice is not allowed: an unknown context type or mode, or an enforced type."""


def modes_for(
    user_ids: Iterable[int], context_type: str, *, ignore_preferences: bool = False
) -> dict[int, str]:
    """{user id: delivery mode} for a message of `context_type`, in one query."""
    user_ids = list(user_ids)
    config = context_types.get(context_type)
    if config.enforced or ignore_preferences:
        return dict.fromkeys(user_ids, DeliveryMode.IMMEDIATELY)
    chosen = dict(
        NotificationPreference.objects.filter(user_id__in=user_ids, context_type=context_type).values_list(
            "user_id", "mode"
        )
    )
    return {user_id: chosen.get(user_id, config.default_mode) for user_id in user_ids}


def mode_counts(
    user_ids: Iterable[int], context_type: str, *, ignore_preferences: bool = False
) -> dict[str, int]:
    """How many of the users get a message of `context_type` in each mode (every mode listed)."""
    counts = dict.fromkeys(DeliveryMode.values, 0)
    for mode in modes_for(user_ids, context_type, ignore_preferences=ignore_preferences).values():
        counts[mode] += 1
    return counts


def choices_of(user) -> list[tuple[context_types.ContextTypeConfig, str]]:
    """(type, the user's mode for it) for every type a recipient can see, enforced ones included
    (shown as always immediate)."""
    chosen = dict(NotificationPreference.objects.filter(user=user).values_list("context_type", "mode"))
    return [
        (config, DeliveryMode.IMMEDIATELY if config.enforced else chosen.get(config.key, config.default_mode))
        for config in context_types.composable()
    ]


def set_mode(user, context_type: str, mode: str) -> bool:
    """The user's choice for one type; True if it changed. Refuses an unknown type or mode, and
    any change to an enforced type."""
    if not context_types.is_registered(context_type):
        raise PreferenceRefused(f"Unknown context type {context_type!r}.")
    if mode not in DeliveryMode.values:
        raise PreferenceRefused(f"Unknown delivery mode {mode!r}.")
    config = context_types.get(context_type)
    if config.enforced and mode != DeliveryMode.IMMEDIATELY:
        raise PreferenceRefused(f"{context_type!r} is enforced: it is always delivered immediately.")
    with transaction.atomic():
        current = (
            NotificationPreference.objects.select_for_update()
            .filter(user=user, context_type=context_type)
            .first()
        )
        if current is not None and current.mode == mode:
            return False
        if current is None and mode == config.default_mode:
            return False
        NotificationPreference.objects.update_or_create(
            user=user, context_type=context_type, defaults={"mode": mode, "updated_datetime": timezone.now()}
        )
    return True


def turn_off(user, types: Iterable[str]) -> list[str]:
    """One-click unsubscribe: every given type that may be turned off is off for the user
    (idempotent: again changes nothing). Returns the types that changed; enforced or unknown
    ones are left as they are (set_mode refuses them)."""
    changed = []
    for context_type in dict.fromkeys(types):
        try:
            if set_mode(user, context_type, DeliveryMode.OFF):
                changed.append(context_type)
        except PreferenceRefused:
            continue
    return changed
