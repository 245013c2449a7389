"""Preparing receivers: one per distinct user and message type, rendered in the user's language,
and delivered as the user's preference for the message's context type says: now, held for a
digest, or skipped (messaging.preferences.modes).

Receivers are rendered outside any transaction and committed in batches
(MESSAGING_PREPARATION_BATCH_SIZE), each in a short transaction of its own that first renews the
preparation's lease (transitions.renew_preparation). So no other writer waits for more than one
batch (SQLite has one write lock for the whole database), a preparation the sweeper took over
commits nothing more, and one resumed after its worker died adds only the receivers still
missing: a user who has a receiver of a type never gets a second one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from messaging import conf
from messaging.engine import transitions
from messaging.engine.outages import persistently
from messaging.engine.recipients import iter_users_in_batches, notification_address, preferred_language
from messaging.engine.rendering import ContentRenderer
from messaging.models import DeliveryMode, Message, MessageReceiver
from messaging.preferences import digests
from messaging.preferences import modes as preferences

ReceiverKey = tuple[int, str]  # (user id, message type): a message has one receiver for each


class PreparationTakenOver(Exception):
    """The preparation is no longer this worker's (its lease ran out and the sweeper took it
    over); it commits nothing more."""


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


def existing_receivers(message: Message) -> set[ReceiverKey]:
    """The (user, message type) pairs the message has receivers for already: those a resumed
    preparation committed before its worker died. Empty for a first preparation."""
    return set(MessageReceiver.objects.filter(message=message).values_list("user_id", "message_type"))


def iter_receiver_batches(
    message: Message, subject_generator, template_name, template_context
) -> Iterator[list[MessageReceiver]]:
    """Yield unsaved receivers batch by batch; ids of users that do not exist are recorded
    in message.status_data["skipped_user_ids"] once every batch has been yielded. Receivers the
    message has already (a resumed preparation) are not rendered again."""
    renderer = ContentRenderer(subject_generator, template_name, template_context)
    user_ids = distinct_user_ids(message)
    existing = existing_receivers(message)
    found: set[int] = set()
    now = timezone.now()
    for users in iter_users_in_batches(user_ids, conf.preparation_batch_size()):
        found.update(u.pk for u in users)
        missing = [(user, t) for user in users for t in message.message_type if (user.pk, t) not in existing]
        modes = preferences.modes_for(
            {user.pk for user, _type in missing},
            message.context_type,
            ignore_preferences=message.ignore_preferences,
        )
        yield [build_receiver(renderer, user, message, t, modes[user.pk], now) for user, t in missing]
    skipped = [uid for uid in user_ids if uid not in found]
    if skipped:
        message.status_data = {**message.status_data, "skipped_user_ids": skipped}


def create_message_receivers(
    message: Message, *, after_batch: Callable[[int], None] | None = None, **kwargs
) -> int:
    """Bulk-create what prepare_message_receivers returns, batch by batch, each batch committed
    on its own; returns how many were created. A user who has a receiver of a type already gets
    no second one. While the message is preparing, each batch is committed only while the
    preparation recorded on the instance (status_data["preparing_by"]) still owns it, else
    PreparationTakenOver. `after_batch(created so far)` runs after each committed batch (a staff
    send starts delivering after the first: sending.Streaming)."""
    preparing = message.status == Message.Status.PREPARING or message.status_data.get("still_preparing")
    preparer = message.status_data.get("preparing_by", "") if preparing else ""
    prepared = message.prepare_message_receivers(**kwargs)
    existing = existing_receivers(message)
    created = 0
    for batch in chunked([prepared] if isinstance(prepared, list) else prepared):
        # A database that is briefly gone is waited for: discarding what was made would be worse.
        created += persistently(
            lambda batch=batch: commit_batch(message, batch, preparer, existing), "Committing receivers"
        )
        if after_batch is not None:
            after_batch(created)
    return created


def chunked(batches: Iterable[list[MessageReceiver]]) -> Iterator[list[MessageReceiver]]:
    """The batches, none larger than MESSAGING_PREPARATION_BATCH_SIZE (a subclass's
    prepare_message_receivers may return one list of any length)."""
    size = conf.preparation_batch_size()
    for batch in batches:
        for start in range(0, max(len(batch), 1), size):
            yield batch[start : start + size]


def commit_batch(
    message: Message, batch: list[MessageReceiver], preparer: str, existing: set[ReceiverKey]
) -> int:
    """Commit the receivers of `batch` the message does not have yet, renewing `preparer`'s
    lease in the same short transaction (even for an empty batch: it shows the preparation is
    alive). `existing` is updated with what was committed."""
    new: dict[ReceiverKey, MessageReceiver] = {}
    for receiver in batch:
        key = (receiver.user_id, receiver.message_type)
        if key not in existing:
            new.setdefault(key, receiver)
    with transaction.atomic():
        if preparer and not transitions.renew_preparation(message.pk, preparer):
            raise PreparationTakenOver(f"Message #{message.pk} is no longer prepared by {preparer}.")
        MessageReceiver.objects.bulk_create(new.values())
    existing.update(new)
    return len(new)


def discard_receivers(message: Message, preparer: str) -> bool:
    """Delete the receivers of a preparation that cannot finish (it raised, or its worker died
    and nobody can render the rest), batch by batch, each batch committed with a renewal of
    `preparer`'s lease. False if the preparation was taken over meanwhile: its new owner decides."""
    size = conf.preparation_batch_size()
    while True:
        with transaction.atomic():
            if not transitions.renew_preparation(message.pk, preparer):
                return False
            ids = list(message.receivers.order_by("id").values_list("pk", flat=True)[:size])
            if not ids:
                return True
            MessageReceiver.objects.filter(pk__in=ids).delete()
