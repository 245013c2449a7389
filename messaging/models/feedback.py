"""What mail servers and providers told us after delivery, and the addresses we no longer send to."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class DeliveryEvent(models.Model):
    """One report about a sent email after it left us: a provider's webhook event (through
    django-anymail) or a bounce message from a mail server. Stored once per provider and event
    id (providers repeat their webhooks), kept beside the receiver as its timeline."""

    class Type(models.TextChoices):
        # anymail's normalised event types (anymail.signals.EventType) that concern delivery.
        QUEUED = "queued", _("Queued by the provider")
        SENT = "sent", _("Sent by the provider")
        REJECTED = "rejected", _("Rejected by the provider")
        FAILED = "failed", _("Provider could not send it")
        BOUNCED = "bounced", _("Bounced")
        DEFERRED = "deferred", _("Deferred")
        DELIVERED = "delivered", _("Delivered")
        AUTORESPONDED = "autoresponded", _("Automatic reply")
        OPENED = "opened", _("Opened")
        CLICKED = "clicked", _("Clicked")
        COMPLAINED = "complained", _("Marked as spam")
        UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")

    receiver = models.ForeignKey(
        "messaging.MessageReceiver",
        verbose_name=_("receiver"),
        on_delete=models.CASCADE,
        related_name="delivery_events",
    )
    # "SendGrid", "Mailgun", ... (anymail's esp_name), or BOUNCE_MAILBOX.
    provider = models.CharField(_("reported by"), max_length=50)
    event_id = models.CharField(_("event id"), max_length=255)
    event_type = models.CharField(_("event"), max_length=20, choices=Type)
    reject_reason = models.CharField(_("reason"), max_length=20, blank=True)
    description = models.TextField(_("description"), blank=True)
    mta_response = models.TextField(_("mail server's reply"), blank=True)
    recipient = models.CharField(_("recipient"), max_length=255, blank=True)
    occurred_datetime = models.DateTimeField(_("when"))
    received_datetime = models.DateTimeField(_("received"), default=timezone.now)
    payload = models.JSONField(_("as received"), default=dict, blank=True)

    BOUNCE_MAILBOX = "bounce mailbox"

    class Meta:
        verbose_name = _("delivery event")
        verbose_name_plural = _("delivery events")
        ordering = ["occurred_datetime", "id"]
        constraints = [models.UniqueConstraint(fields=["provider", "event_id"], name="delivery_event_once")]
        indexes = [models.Index(fields=["receiver", "occurred_datetime"], name="delivery_event_timeline")]

    def __str__(self) -> str:
        return f"{self.get_event_type_display()} ({self.provider})"


class Suppression(models.Model):
    """An address no email is sent to: it bounced for good, or its owner marked our email as
    spam. Sends record its receivers as permanent failures instead (messaging.feedback.suppressions)."""

    class Reason(models.TextChoices):
        HARD_BOUNCE = "hard_bounce", _("bounced")
        COMPLAINT = "complaint", _("marked as spam")
        REJECTED = "rejected", _("rejected by the provider")

    address = models.CharField(_("address"), max_length=255, unique=True)  # lower-case
    reason = models.CharField(_("reason"), max_length=20, choices=Reason)
    detail = models.CharField(_("detail"), max_length=255, blank=True)
    created_datetime = models.DateTimeField(_("since"), default=timezone.now)
    event = models.ForeignKey(
        DeliveryEvent,
        verbose_name=_("caused by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        verbose_name = _("suppressed address")
        verbose_name_plural = _("suppressed addresses")
        ordering = ["-created_datetime", "-id"]
        permissions = [("lift_suppression", _("Can lift suppressions"))]

    def __str__(self) -> str:
        return self.address

    def describe(self) -> str:
        """ "suppressed: bounced on 2026-11-01 (550 5.1.1 …)": why a receiver was not sent to."""
        day = timezone.localdate(self.created_datetime).isoformat()
        text = _("suppressed: %(reason)s on %(day)s") % {"reason": self.get_reason_display(), "day": day}
        return f"{text} ({self.detail})" if self.detail else text


class UnmatchedBounce(models.Model):
    """A report that changed nothing, kept for staff to look at, never dropped: a message from
    the bounce mailbox that could not be read as a bounce report or names no receiver of ours,
    or a provider's event about an address that is not the receiver's."""

    received_datetime = models.DateTimeField(_("received"), default=timezone.now, db_index=True)
    # Empty: the bounce mailbox; else the provider whose webhook posted it (raw is its JSON).
    provider = models.CharField(_("provider"), max_length=50, blank=True)
    sender = models.CharField(_("from"), max_length=255, blank=True)
    subject = models.CharField(_("subject"), max_length=255, blank=True)
    reason = models.CharField(_("why it was not recorded"), max_length=255)
    raw = models.BinaryField(_("message"))

    class Meta:
        verbose_name = _("unmatched report")
        verbose_name_plural = _("unmatched reports")
        ordering = ["-received_datetime", "-id"]

    def __str__(self) -> str:
        return self.subject or self.reason
