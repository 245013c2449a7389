"""The suppression list: addresses that bounced for good or complained are not sent to again
until staff lift the suppression (audited)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.utils import timezone

from messaging.models import AuditEvent, DeliveryEvent, Suppression


def normalise(address: str) -> str:
    return address.strip().lower()


def suppress(address: str, reason: str, detail: str = "", event: DeliveryEvent | None = None) -> bool:
    """Add an address (once: the first cause is kept). True if it was not suppressed yet."""
    address = normalise(address)
    if not address:
        return False
    try:
        with transaction.atomic():
            Suppression.objects.create(
                address=address[:255],
                reason=reason,
                detail=detail[:255],
                event=event,
                created_datetime=event.occurred_datetime if event else timezone.now(),
            )
    except IntegrityError:
        return False
    return True


def suppressions_for(addresses: Iterable[str]) -> dict[str, Suppression]:
    """The suppressions among `addresses`, by lower-case address (one query)."""
    wanted = {normalise(a) for a in addresses if a}
    if not wanted:
        return {}
    return {s.address: s for s in Suppression.objects.filter(address__in=wanted)}


def suppression_of(address: str) -> Suppression | None:
    return suppressions_for([address]).get(normalise(address))


def lift(suppression: Suppression, actor) -> bool:
    """Send to the address again. Recorded in the audit trail with who, and what was lifted."""
    with transaction.atomic():
        deleted, _ = Suppression.objects.filter(pk=suppression.pk).delete()
        if not deleted:
            return False
        AuditEvent.objects.create(
            actor=actor,
            action=AuditEvent.Action.SUPPRESSION_LIFTED,
            details={
                "address": suppression.address,
                "reason": suppression.reason,
                "detail": suppression.detail,
                "since": suppression.created_datetime.isoformat(),
            },
        )
    return True
