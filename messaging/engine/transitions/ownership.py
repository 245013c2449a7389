"""Who owns a receiver: claims in batches, leases and their renewal, release."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from messaging import conf
from messaging.models import Message, MessageReceiver

CLAIM_BATCH_SIZE = 100

Status = Message.Status


def lease_seconds() -> int:
    return conf.lease_seconds()


@dataclass
class Claim:
    """Receivers a worker owns, and until when (by this process's monotonic clock, measured
    from before the claim was written, so it never overestimates the lease)."""

    worker_id: str
    receivers: list[MessageReceiver]
    lease_deadline: float
    lost: set[int] = field(default_factory=set)
    # Why the worker stops handing this claim's receivers over (the message's new status).
    halted: str = ""

    @property
    def ids(self) -> list[int]:
        return [r.pk for r in self.receivers]

    def seconds_left(self) -> float:
        return self.lease_deadline - time.monotonic()


def claim_batch(message_id: int, worker_id: str, limit: int = CLAIM_BATCH_SIZE) -> Claim | None:
    """Claim up to `limit` unowned not-sent receivers of a sending message.

    PostgreSQL: FOR UPDATE SKIP LOCKED keeps concurrent claimers disjoint. SQLite: the
    IMMEDIATE transaction holds the write lock, so the select and update are one step."""
    started = time.monotonic()
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            MessageReceiver.objects.filter(message_id=message_id, message__status=Status.SENDING)
            .exclude(message__expires_at__lte=now)
            .claimable(now)
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("id")
            .values_list("id", "claimed_by")[:limit]
        )
        if not rows:
            return None
        ids = [pk for pk, _previous in rows]
        MessageReceiver.objects.filter(id__in=ids).update(
            claimed_by=worker_id, lease_expires_datetime=now + timedelta(seconds=lease_seconds())
        )
    receivers = list(MessageReceiver.objects.filter(id__in=ids).order_by("id"))
    _flag_abandoned(receivers, dict(rows))
    return Claim(worker_id, receivers, started + lease_seconds())


def _flag_abandoned(receivers: list[MessageReceiver], previous_claims: dict[int, str]) -> None:
    """The first receiver of each abandoned claim may have been handed to the server just
    before its worker died (each claim is sent in id order, each result recorded before the
    next send), so it is flagged: it will be sent again with the same Message-ID."""
    flagged: set[str] = set()
    for receiver in receivers:
        previous = previous_claims.get(receiver.pk)
        if not previous or previous in flagged:
            continue
        flagged.add(previous)
        receiver.status_data = {
            **receiver.status_data,
            "delivery_uncertain": {"timestamp": timezone.now().isoformat(), "abandoned_by": previous},
        }
        MessageReceiver.objects.filter(pk=receiver.pk, claimed_by=receiver.claimed_by).update(
            status_data=receiver.status_data
        )


def renew_leases(claim: Claim, ids: list[int]) -> set[int]:
    """Extend the lease on `ids` (receivers of the claim not yet recorded); returns those
    still owned. A receiver lost meanwhile (our lease ran out and another worker claimed it)
    is not ours to send any more."""
    started = time.monotonic()
    expires = timezone.now() + timedelta(seconds=lease_seconds())
    with transaction.atomic():
        MessageReceiver.objects.filter(id__in=ids, claimed_by=claim.worker_id).update(
            lease_expires_datetime=expires
        )
        kept = set(
            MessageReceiver.objects.filter(id__in=ids, claimed_by=claim.worker_id).values_list(
                "id", flat=True
            )
        )
    claim.lease_deadline = started + lease_seconds()
    claim.lost.update(set(ids) - kept)
    return kept


def claim_one(receiver: MessageReceiver, worker_id: str) -> bool:
    """Own one receiver for a direct send() (any status: send() also resends). False if a
    worker holds a live claim on it. The instance is reloaded, so counters are current."""
    now = timezone.now()
    owned = (
        MessageReceiver.objects.filter(pk=receiver.pk)
        .filter(Q(lease_expires_datetime__isnull=True) | Q(lease_expires_datetime__lt=now))
        .update(claimed_by=worker_id, lease_expires_datetime=now + timedelta(seconds=lease_seconds()))
    )
    if owned:
        receiver.refresh_from_db()
    return bool(owned)


def release(ids: Iterable[int], worker_id: str) -> int:
    """Give receivers back unrecorded (not charged); anyone may claim them at once."""
    return MessageReceiver.objects.filter(pk__in=list(ids), claimed_by=worker_id).update(
        claimed_by="", lease_expires_datetime=None
    )
