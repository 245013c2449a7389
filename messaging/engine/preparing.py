"""Preparing receivers: one per distinct user and message type, rendered in the user's language,
and delivered as the user's preference for the message's context type says: now, held for a
digest, or skipped (messaging.preferences.modes)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from messaging.engine import transitions
from messaging.engine.recipients import iter_users_in_batches, notification_address, preferred_language
from messaging.engine.rendering import ContentRenderer
from messaging.models import DeliveryMode, Message, MessageReceiver
from messaging.preferences import digests
from messaging.preferences import modes as preferences

BATCH_SIZE = 500


def build_receiver(
    renderer: ContentRenderer,
    user,
    message: Message,
    message_type: str,
    mode: str = DeliveryMode.IMMEDIATELY,
    now: datetime | None = None,
):
    language = preferred_language(user)
    content = renderer.render(user, language)
    receiver = MessageReceiver(
        message=message,
        user=user,
        message_type=message_type,
        language=language,
        send_to=notification_address(user),
        subject=content.subject,
        message_content_html=content.html,
        message_content_plain=content.plain,
        status=transitions.initial_status(mode),
    )
    if receiver.status == MessageReceiver.Status.HELD:
        receiver.next_attempt_datetime = digests.due_at(mode, digests.user_zone(user), now or timezone.now())
    # Foreign keys come from loaded objects; validating them would cost a query per receiver.
    receiver.full_clean(exclude=["message", "user"], validate_unique=False, validate_constraints=False)
    return receiver


def create_receiver(
    user, message, message_type, subject_generator, template_name, template_context
) -> MessageReceiver:
    renderer = ContentRenderer(subject_generator, template_name, template_context)
    return build_receiver(renderer, user, message, message_type)


def distinct_user_ids(message: Message) -> list[int]:
    return list(dict.fromkeys(message.virtual_message_receivers["user_ids"]))


def iter_receiver_batches(
    message: Message, subject_generator, template_name, template_context
) -> Iterator[list[MessageReceiver]]:
    """Yield unsaved receivers batch by batch; ids of users that do not exist are recorded
    in message.status_data["skipped_user_ids"] once every batch has been yielded."""
    renderer = ContentRenderer(subject_generator, template_name, template_context)
    user_ids = distinct_user_ids(message)
    found: set[int] = set()
    now = timezone.now()
    for users in iter_users_in_batches(user_ids, BATCH_SIZE):
        found.update(u.pk for u in users)
        modes = preferences.modes_for(
            [u.pk for u in users], message.context_type, ignore_preferences=message.ignore_preferences
        )
        yield [
            build_receiver(renderer, user, message, message_type, modes[user.pk], now)
            for user in users
            for message_type in message.message_type
        ]
    skipped = [uid for uid in user_ids if uid not in found]
    if skipped:
        message.status_data = {**message.status_data, "skipped_user_ids": skipped}


def create_message_receivers(message: Message, **kwargs) -> int:
    """Bulk-create what prepare_message_receivers returns, in one transaction, batch by batch."""
    prepared = message.prepare_message_receivers(**kwargs)
    batches = [prepared] if isinstance(prepared, list) else prepared
    created = 0
    with transaction.atomic():
        for batch in batches:
            MessageReceiver.objects.bulk_create(batch, batch_size=BATCH_SIZE)
            created += len(batch)
    return created
