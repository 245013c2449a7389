"""Digests: a user's held receivers go out together, one email per period, at the local digest
time (MESSAGING_DIGEST_TIME in the user's time zone; weekly ones on MESSAGING_DIGEST_WEEKDAY).

A digest is an ordinary message of the engine (context type "digest", one receiver per user), so
it is claimed, leased, retried and recovered exactly like any other: `assemble_due` makes it and
its receivers, and points each held receiver at its user's digest receiver, in one transaction
(a worker killed meanwhile leaves nothing half made, and no held receiver can go into two
digests: the held receivers are locked, SKIP LOCKED on PostgreSQL, SQLite's IMMEDIATE
transaction on SQLite). Once a digest receiver is sent, `transitions.settle_digests` marks its
held receivers sent (the sweeper, the periodic task and the end of a digest's delivery run do).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import ngettext

from messaging import conf
from messaging.engine import delivery, recipients, sending, transitions
from messaging.engine.rendering import body_of, validate_subject
from messaging.models import DeliveryMode, Message, MessageReceiver
from messaging.preferences import context_types, links
from messaging.preferences import modes as preferences

# Users per digest message: each one is made in one transaction, which holds SQLite's write lock
# while it renders, so a large run becomes several digest messages rather than one long lock.
USERS_PER_DIGEST_MESSAGE = 500
HTML_TEMPLATE = "messaging/email/digest.html"
TEXT_TEMPLATE = "messaging/email/digest.txt"
LAST_SPACE_RE = re.compile(r"\s\S*\Z")


def user_zone(user) -> ZoneInfo:
    """The user's time zone (their messaging profile's), else TIME_ZONE; an unknown zone name
    falls back too."""
    profile = getattr(user, "messaging_profile", None)
    name = (profile.time_zone if profile else "") or settings.TIME_ZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(settings.TIME_ZONE)


def due_at(mode: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first digest time of `mode` strictly after `after`, in UTC. Local wall-clock time: a
    daily digest at 07:00 is at 07:00 on both sides of a DST change (23 or 25 hours apart)."""
    hour, minute = conf.digest_time()
    day = after.astimezone(zone).date()
    while True:
        candidate = datetime.combine(day, time(hour, minute), tzinfo=zone).astimezone(ZoneInfo("UTC"))
        if candidate > after and (mode == DeliveryMode.DAILY or day.weekday() == conf.digest_weekday()):
            return candidate
        day += timedelta(days=1)


def send_due(now: datetime) -> list[Message]:
    """What the periodic task does: settle the digests that went out, cancel held receivers whose
    message expired, then put every held receiver due by `now` into its user's digest. Returns
    the digest messages made (queued for delivery once committed)."""
    transitions.settle_digests()
    transitions.expire_held(now)
    made = []
    while (digest := assemble_due(now)) is not None:
        made.append(digest)
    return made


def due_held(now: datetime):
    """Held receivers due by `now`, in no digest yet, whose message may still be delivered."""
    return MessageReceiver.objects.filter(
        status=MessageReceiver.Status.HELD, digest__isnull=True, next_attempt_datetime__lte=now
    ).exclude(message__expires_at__lte=now)


def assemble_due(now: datetime) -> Message | None:
    """One digest message for (up to USERS_PER_DIGEST_MESSAGE) users with due held receivers: one
    receiver per user carrying all of that user's due items, made sending, with its delivery
    queued after commit. None when nothing is due (or every due receiver is being assembled by
    someone else)."""
    preparer = delivery.new_worker_id()
    with transaction.atomic():
        user_ids = list(
            due_held(now)
            .order_by("user_id")
            .values_list("user_id", flat=True)
            .distinct()[:USERS_PER_DIGEST_MESSAGE]
        )
        held = list(
            due_held(now)
            .filter(user_id__in=user_ids)
            .select_for_update(skip_locked=True, of=("self",))
            .select_related("message")
            .only(
                "id",
                "user_id",
                "subject",
                "message_content_html",
                "message_content_plain",
                "created_datetime",
                "message__context_type",
            )
            .order_by("-created_datetime", "-id")
        )
        if not held:
            return None
        by_user: dict[int, list[MessageReceiver]] = defaultdict(list)
        for receiver in held:
            by_user[receiver.user_id].append(receiver)
        message = Message.objects.create(
            context_type=Message.ContextType.DIGEST,
            created_by=None,
            message_type=["email"],
            virtual_message_receivers={"user_ids": sorted(by_user)},
            metadata={"digest": {"items": len(held), "users": len(by_user), "due_by": now.isoformat()}},
        )
        sending.start_preparing(message, preparer)
        if not transitions.lock_preparation(message, preparer):
            raise sending.PreparationTakenOver
        composer = DigestComposer(held)
        receivers = [
            composer.receiver(message, user, by_user[user.pk])
            for user in recipients.users_with_recipient_data(by_user)
        ]
        MessageReceiver.objects.bulk_create(receivers)
        for receiver in receivers:
            transitions.attach_to_digest([item.pk for item in by_user[receiver.user_id]], receiver.pk)
        if not transitions.finish_preparing(message, preparer, receiver_count=len(receivers)):
            raise sending.PreparationTakenOver
        transitions.roll_up(message.pk)  # publish the counts the status page shows
        sending.queue_deliveries(message, 1 + conf.delivery_helpers())
    return message


@dataclass(frozen=True)
class DigestItem:
    subject: str
    label: str
    created: datetime
    html: SafeString  # the held receiver's own (sanitised) HTML; empty when it was shortened
    plain: str
    shortened: bool
    read_url: str


class DigestComposer:
    """Renders each user's digest in their language and time zone. Context types are looked up
    once per assembly, and each type's delivery mode once for all its users."""

    def __init__(self, held: list[MessageReceiver]):
        types = {receiver.message.context_type for receiver in held}
        self.configs = {key: context_types.get(key) for key in types}
        user_ids_of: dict[str, set[int]] = defaultdict(set)
        for receiver in held:
            user_ids_of[receiver.message.context_type].add(receiver.user_id)
        self.modes = {
            (user_id, key): mode
            for key, user_ids in user_ids_of.items()
            for user_id, mode in preferences.modes_for(user_ids, key).items()
        }
        self.max_chars = conf.digest_item_max_chars()

    def receiver(self, message: Message, user, items: list[MessageReceiver]) -> MessageReceiver:
        language = recipients.preferred_language(user)
        types = sorted({item.message.context_type for item in items})
        period = period_of({self.modes.get((user.pk, key), "") for key in types})
        with translation.override(language), timezone.override(user_zone(user)):
            subject = validate_subject(subject_for(period, len(items)))
            context = {
                "subject": subject,
                "period": period,
                "count": len(items),
                "items": [self.item(held) for held in items],
                "preferences_url": links.preferences_url(user.pk),
            }
            html = render_to_string(HTML_TEMPLATE, context).strip()
            plain = render_to_string(TEXT_TEMPLATE, context).strip()
        return MessageReceiver(
            message=message,
            user=user,
            message_type="email",
            language=language,
            send_to=recipients.notification_address(user),
            subject=subject,
            message_content_html=html,
            message_content_plain=plain,
            # What the digest is about: the email channel offers one-click unsubscribe from these.
            metadata={"context_types": types},
        )

    def item(self, held: MessageReceiver) -> DigestItem:
        plain, shortened = shorten(held.message_content_plain, self.max_chars)
        return DigestItem(
            subject=held.subject,
            label=str(self.configs[held.message.context_type].label),
            created=held.created_datetime,
            html=mark_safe("" if shortened else body_of(held.message_content_html)),
            plain=plain,
            shortened=shortened,
            read_url=links.read_url(held.user_id, held.pk) if shortened else "",
        )


def period_of(modes: set[str]) -> str:
    """daily or weekly when every item of the digest came in that mode; "" for a mix."""
    if len(modes) == 1 and (mode := next(iter(modes))) in (DeliveryMode.DAILY, DeliveryMode.WEEKLY):
        return mode
    return ""


def subject_for(period: str, count: int) -> str:
    if period == DeliveryMode.DAILY:
        text = ngettext(
            "Your daily digest: %(count)d message", "Your daily digest: %(count)d messages", count
        )
    elif period == DeliveryMode.WEEKLY:
        text = ngettext(
            "Your weekly digest: %(count)d message", "Your weekly digest: %(count)d messages", count
        )
    else:
        text = ngettext("Your digest: %(count)d message", "Your digest: %(count)d messages", count)
    return text % {"count": count}


def shorten(text: str, limit: int) -> tuple[str, bool]:
    """`text` cut to at most `limit` characters at a word boundary (a single longer word is cut
    where the limit falls), with an ellipsis; and whether it was cut."""
    if len(text) <= limit:
        return text, False
    head = text[: limit + 1]
    space = LAST_SPACE_RE.search(head)
    cut = head[: space.start()].rstrip() if space else ""
    return (cut or text[:limit].rstrip()) + "…", True
