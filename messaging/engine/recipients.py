"""Who receives a message: addresses, languages and group resolution (SPEC §2)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Prefetch, QuerySet

from messaging.models import Message, UserEmail

User = get_user_model()


def supported_languages() -> list[str]:
    return [code for code, _name in settings.LANGUAGES]


def resolve_language(code: str | None) -> str:
    """The language to render in: the code when it is in LANGUAGES, else LANGUAGE_CODE."""
    return code if code in supported_languages() else settings.LANGUAGE_CODE


def preferred_language(user) -> str:
    profile = getattr(user, "messaging_profile", None)
    return resolve_language(profile.languagecode if profile else None)


def _notification_emails(user) -> list[UserEmail]:
    cached = getattr(user, "notification_emails", None)
    if cached is not None:
        return cached
    return list(user.messaging_emails.filter(use_for_notifications=True).order_by("id"))


def notification_address(user) -> str:
    """Primary notification address, else the first notification address, else user.email."""
    emails = _notification_emails(user)
    for email in emails:
        if email.is_primary:
            return email.email
    if emails:
        return emails[0].email
    return getattr(user, "email", "") or ""


def users_with_recipient_data(user_ids: Iterable[int]) -> QuerySet:
    """Users with their profile and notification addresses loaded in a constant number of queries."""
    return (
        User.objects.filter(pk__in=list(user_ids))
        .select_related("messaging_profile")
        .prefetch_related(
            Prefetch(
                "messaging_emails",
                queryset=UserEmail.objects.filter(use_for_notifications=True).order_by("id"),
                to_attr="notification_emails",
            )
        )
        .order_by("pk")
    )


def iter_users_in_batches(user_ids: list[int], batch_size: int) -> Iterator[list]:
    for start in range(0, len(user_ids), batch_size):
        yield list(users_with_recipient_data(user_ids[start : start + batch_size]))


def resolve_user_ids(user_ids: Iterable[int] = (), group_ids: Iterable[int] = ()) -> list[int]:
    """Distinct ids of the active users chosen directly or through a group, in id order."""
    ids = set(User.objects.filter(pk__in=list(user_ids), is_active=True).values_list("pk", flat=True))
    if group_ids:
        ids |= set(
            User.objects.filter(
                groups__in=Group.objects.filter(pk__in=list(group_ids)), is_active=True
            ).values_list("pk", flat=True)
        )
    return sorted(ids)


# A staff-composed message keeps who was chosen (users, groups) until it is queued, when they
# are resolved to user ids (again when a scheduled one starts: a group may have changed).


def chosen_user_ids(message: Message) -> list[int]:
    return list(message.virtual_message_receivers.get("chosen_user_ids", []))


def chosen_group_ids(message: Message) -> list[int]:
    return list(message.virtual_message_receivers.get("group_ids", []))


def resolved_user_ids(message: Message) -> list[int]:
    """The active users a composed message goes to now: those chosen and the groups' members."""
    return resolve_user_ids(chosen_user_ids(message), chosen_group_ids(message))
