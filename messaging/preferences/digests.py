"""Digests: a user's held receivers go out together, one email per period, at the local digest
time (MESSAGING_DIGEST_TIME in the user's time zone; weekly ones on MESSAGING_DIGEST_WEEKDAY).

A digest is an ordinary message of the engine (context type "digest", one receiver per user), so
it is claimed, leased, retried and recovered exactly like any other. `assemble_due` makes one in
two steps, so that no writer waits while digests render:

1. Claim (one short transaction): a digest message, `preparing` under the assembler's lease, one
   empty receiver per user, and each user's due held receivers attached to it. Concurrent
   assemblers claim different users: on PostgreSQL each skips the users another is claiming (an
   advisory lock per user, SKIP LOCKED style); on SQLite the IMMEDIATE transaction runs claims
   one after another, each seeing what the one before attached. No held receiver can be in two
   digests: attaching is a conditional update (`digest IS NULL`).
2. Render outside any transaction, and write the content in small committed steps, each
   renewing the lease; then the digest becomes `sending`. An assembler that dies leaves a digest
   whose lease runs out: the sweeper discards it, unsent, and its items wait for the next run.

Once a digest receiver is sent, `transitions.settle_digests` marks its held receivers sent (the
sweeper, the periodic task and the end of a digest's delivery run do).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import ngettext

from messaging import conf
from messaging.engine import delivery, queue, recipients, transitions
from messaging.engine.rendering import body_of, validate_subject
from messaging.models import DeliveryMode, Message, MessageReceiver
from messaging.preferences import context_types, links
from messaging.preferences import modes as preferences

# Users per digest message: one assembler claims this many users at a time.
USERS_PER_DIGEST_MESSAGE = 500
# Rendered digests written per transaction (each renews the assembler's lease).
RENDERED_PER_COMMIT = 100
RENDERED_FIELDS = [
    "language",
    "send_to",
    "subject",
    "message_content_html",
    "message_content_plain",
    "metadata",
]
# The advisory locks of users being claimed (PostgreSQL), apart from every other lock's key.
CLAIM_LOCK_NAMESPACE = "messaging-digest-user"
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
    queued. None when nothing is left to claim (every due receiver is in a digest, or being
    claimed by another assembler)."""
    while (claim := claim_due_users(now)) is not None:
        if (digest := compose_claimed(claim)) is not None:
            return digest
    return None


@dataclass(frozen=True)
class DigestClaim:
    message: Message
    assembler: str


def claim_due_users(now: datetime) -> DigestClaim | None:
    """Step 1 (see the module's docstring): claim up to USERS_PER_DIGEST_MESSAGE users, in one
    short transaction. None when no user is left to claim."""
    assembler = delivery.new_worker_id()
    with transaction.atomic():
        user_ids = lock_due_users(now, USERS_PER_DIGEST_MESSAGE)
        if not user_ids:
            return None
        message = Message.objects.create(
            context_type=Message.ContextType.DIGEST,
            created_by=None,
            message_type=["email"],
            virtual_message_receivers={"user_ids": user_ids},
        )
        transitions.start_preparing(message, assembler)
        MessageReceiver.objects.bulk_create(
            MessageReceiver(message=message, user_id=user_id, message_type="email") for user_id in user_ids
        )
        items = transitions.attach_due_to_digest(message.pk, due_held(now).filter(user_id__in=user_ids))
        message.metadata = {"digest": {"items": items, "users": len(user_ids), "due_by": now.isoformat()}}
        Message.objects.filter(pk=message.pk).update(metadata=message.metadata)
    return DigestClaim(message, assembler)


def lock_due_users(now: datetime, limit: int) -> list[int]:
    """Up to `limit` users with due held receivers that no other assembler is claiming, lowest
    ids first, inside the caller's transaction."""
    due_users = due_held(now).order_by("user_id").values_list("user_id", flat=True).distinct()
    if connection.vendor != "postgresql":
        return list(due_users[:limit])  # SQLite: this transaction holds the write lock
    sql, params = due_users.query.sql_with_params()
    for _attempt in range(3):
        with connection.cursor() as cursor:
            # The outer filter runs row by row over the ordered users and stops at `limit`: users
            # another assembler holds are skipped, not waited for (the lock is the transaction's).
            cursor.execute(
                f"SELECT due.user_id FROM ({sql}) AS due "
                "WHERE pg_try_advisory_xact_lock(hashtext(%s), (due.user_id %% 2147483647)::int) LIMIT %s",
                [*params, CLAIM_LOCK_NAMESPACE, limit],
            )
            locked = [user_id for (user_id,) in cursor.fetchall()]
        # Read again under the locks: an assembler that committed its claim since our query
        # began released its locks, and its users are no longer due. If that took them all,
        # look again (a fresh statement sees what it committed), rather than stop early.
        claimed = list(due_users.filter(user_id__in=locked))
        if claimed or not locked:
            return claimed
    return []


def compose_claimed(claim: DigestClaim) -> Message | None:
    """Step 2: render each claimed user's digest outside any transaction, write them in small
    committed steps, then make the digest sending and queue its delivery. None if the claim was
    taken over meanwhile (the sweeper found its lease run out and discarded it). An exception
    discards the claim, so its items wait for the next run, and is raised."""
    message, assembler = claim.message, claim.assembler
    try:
        rendered = rendered_receivers(message)
        for start in range(0, max(len(rendered), 1), RENDERED_PER_COMMIT):
            if not write_rendered(message, assembler, rendered[start : start + RENDERED_PER_COMMIT]):
                return None
        if not rendered:  # every claimed user was deleted meanwhile: nothing to send
            transitions.discard_digest_assembly(message.pk, assembler)
            return None
        if not transitions.finish_preparing(message, assembler, receiver_count=len(rendered)):
            return None
    except Exception:
        transitions.discard_digest_assembly(message.pk, assembler)
        raise
    transitions.roll_up(message.pk)  # publish the counts the status page shows
    queue.deliver_message_by(message.pk, 1 + conf.delivery_helpers())
    return message


def rendered_receivers(message: Message) -> list[MessageReceiver]:
    """The claimed receivers of `message`, each with its user's digest rendered (not saved)."""
    held = list(
        MessageReceiver.objects.filter(digest__message=message)
        .select_related("message")
        .only(
            "id",
            "user_id",
            "digest_id",
            "subject",
            "message_content_html",
            "message_content_plain",
            "created_datetime",
            "message__context_type",
        )
        .order_by("-created_datetime", "-id")
    )
    by_user: dict[int, list[MessageReceiver]] = defaultdict(list)
    for receiver in held:
        by_user[receiver.user_id].append(receiver)
    composer = DigestComposer(held)
    rendered = []
    for user in recipients.users_with_recipient_data(by_user):
        receiver = composer.receiver(message, user, by_user[user.pk])
        receiver.pk = by_user[user.pk][0].digest_id  # the empty receiver the claim made
        rendered.append(receiver)
    return rendered


def write_rendered(message: Message, assembler: str, rendered: list[MessageReceiver]) -> bool:
    """Write rendered digests in one short transaction that renews the assembler's lease; the
    first also drops receivers left without items (a cancel took them between claim and render).
    False if the assembly is no longer this assembler's."""
    with transaction.atomic():
        if not transitions.renew_preparation(message.pk, assembler):
            return False
        MessageReceiver.objects.bulk_update(rendered, RENDERED_FIELDS)
        message.receivers.filter(~Exists(MessageReceiver.objects.filter(digest=OuterRef("pk")))).delete()
    return True


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
