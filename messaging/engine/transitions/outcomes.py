"""What delivery feedback (bounces, complaints, webhooks) says happened to a receiver after it was sent."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q

from messaging.models import MessageReceiver


def record_outcome(receiver_id: int, outcome: str, occurred: datetime, detail: str = "") -> bool:
    """What the provider or the recipient's server reported about a sent email. Reports come
    out of order and repeat, so the newest event wins (an older one changes nothing), except
    that a complaint stays: nothing later makes it wanted. True if the outcome changed."""
    return bool(
        MessageReceiver.objects.filter(pk=receiver_id)
        .filter(Q(outcome_datetime__isnull=True) | Q(outcome_datetime__lte=occurred))
        .exclude(delivery_outcome=MessageReceiver.Outcome.COMPLAINED)
        .update(delivery_outcome=outcome, outcome_datetime=occurred, outcome_detail=detail[:255])
    )
