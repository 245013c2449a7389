"""The audit trail and the workers' heartbeats."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class AuditEvent(models.Model):
    """Who did what to a message, and when (created, edited, sent, resent, ...).

    The trail outlives its message: retention deletes old messages, and their events keep the
    message's number and subject (and a "deleted" event its counts)."""

    class Action(models.TextChoices):
        CREATED = "created", _("Created")
        EDITED = "edited", _("Edited")
        DUPLICATED = "duplicated", _("Duplicated")
        SENT = "sent", _("Sent")
        TEST_SENT = "test_sent", _("Test sent")
        RESENT = "resent", _("Resent")
        RESENT_ALL = "resent_all", _("Resent all failed")
        DELETED = "deleted", _("Deleted by retention")
        SCHEDULED = "scheduled", _("Scheduled")
        UNSCHEDULED = "unscheduled", _("Taken back to draft")
        STARTED = "started", _("Started (scheduled time reached)")
        PAUSED = "paused", _("Paused")
        AUTO_PAUSED = "auto_paused", _("Paused automatically")
        RESUMED = "resumed", _("Resumed")
        CANCELLED = "cancelled", _("Cancelled")
        EXPIRED = "expired", _("Expired")
        SENDER_NOTIFIED = "sender_notified", _("Sender notified")
        SUPPRESSION_LIFTED = "suppression_lifted", _("Suppression lifted")
        MARKED_IMPORTANT = "important", _("Marked important (ignores preferences)")
        UNMARKED_IMPORTANT = "not_important", _("No longer marked important")
        LINKS_REVOKED = "links_revoked", _("Email links revoked")
        SIGN_IN_FAILED = "sign_in_failed", _("Sign-in failed")
        LOCKED_OUT = "locked_out", _("Locked out after failed sign-ins")

    message = models.ForeignKey(
        "messaging.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    message_number = models.PositiveBigIntegerField(_("message number"), default=0, db_index=True)
    message_subject = models.CharField(_("message subject"), max_length=255, blank=True)
    # SET_NULL: deleting old receivers (retention) keeps the audit trail.
    receiver = models.ForeignKey(
        "messaging.MessageReceiver", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    action = models.CharField(_("action"), max_length=20, choices=Action)
    created_datetime = models.DateTimeField(_("when"), default=timezone.now)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["-created_datetime", "-id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} #{self.message_number}"

    def save(self, *args, **kwargs) -> None:
        if self.message_id is not None:
            self.message_number = self.message_id
            self.message_subject = self.message_subject or str(self.message.display_subject)[:255]
        super().save(*args, **kwargs)


class Heartbeat(models.Model):
    """Proof of life: each huey consumer writes one row every few seconds, and so does the
    sweeper after each run (name "sweeper"). Read by the operations page, /metrics and
    `manage.py messaging_health`."""

    class Kind(models.TextChoices):
        CONSUMER = "consumer", _("Consumer")
        SWEEPER = "sweeper", _("Sweeper")

    name = models.CharField(_("name"), max_length=128, unique=True)
    kind = models.CharField(_("kind"), max_length=20, choices=Kind)
    started_datetime = models.DateTimeField(_("started"), default=timezone.now)
    seen_datetime = models.DateTimeField(_("last seen"), default=timezone.now, db_index=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("heartbeat")
        verbose_name_plural = _("heartbeats")
        ordering = ["kind", "name"]

    def __str__(self) -> str:
        return self.name
