"""Revoking every signed link of a user at once (messaging.preferences.links), when one leaked: the
preference, unsubscribe and read links in every email sent so far stop working; the next email
carries new ones. Audited with who did it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from messaging.models import AuditEvent, MessagingProfile


def revoke_links(user, actor=None, **details) -> datetime:
    """Every link made for `user` up to now stops working. `actor`: the staff member, or None
    (a command; say where from in `details`). Returns the moment recorded."""
    now = timezone.now()
    with transaction.atomic():
        MessagingProfile.objects.update_or_create(user=user, defaults={"links_revoked_at": now})
        AuditEvent.objects.create(
            actor=actor,
            action=AuditEvent.Action.LINKS_REVOKED,
            details={"user_id": user.pk, "username": user.get_username(), **details},
        )
    return now


def revoke_links_of_all(users: Iterable, actor=None, **details) -> None:
    """revoke_links for each of `users`, all or none."""
    with transaction.atomic():
        for user in users:
            revoke_links(user, actor, **details)
