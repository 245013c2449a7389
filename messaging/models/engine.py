"""What the engine moves: messages, their receivers (SPEC §2) and the rate-limit slots it takes."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower, Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from messaging.engine import channels
from messaging.models.feedback import Suppression
from messaging.preferences.context_type_registry import ContextType
from messaging.preferences.context_type_registry import choices as context_type_choices


class MessageQuerySet(models.QuerySet):
    def filter_message_with_no_message_receivers(self) -> MessageQuerySet:
        return self.filter(~models.Exists(MessageReceiver.objects.filter(message=models.OuterRef("pk"))))

    def drafts(self) -> MessageQuerySet:
        return self.filter(status=Message.Status.DRAFT)

    def due_to_start(self, now: datetime | None = None) -> MessageQuerySet:
        """Scheduled messages whose send time has come."""
        return self.filter(status=Message.Status.SCHEDULED, send_at__lte=now or timezone.now())

    def past_expiry(self, now: datetime | None = None) -> MessageQuerySet:
        """Messages that still hold undelivered receivers (or have not started) after their expiry."""
        return self.filter(status__in=Message.EXPIRABLE, expires_at__lte=now or timezone.now())

    def in_progress(self) -> MessageQuerySet:
        return self.filter(status__in=Message.IN_PROGRESS)

    def finished(self) -> MessageQuerySet:
        return self.filter(status__in=Message.FINISHED)


class Message(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        # Waits for send_at; the sweeper starts it (staff may reschedule or take it back).
        SCHEDULED = "scheduled", _("Scheduled")
        # Handed to the task queue; no worker has started preparing it yet.
        QUEUED = "queued", _("Queued")
        PREPARING = "preparing", _("Preparing")
        SENDING = "sending", _("Sending")
        # The mail server refuses every delivery (authentication, TLS, unreachable): nothing is
        # charged to receivers; the sweeper tries again with backoff (status_data["blocked"]).
        BLOCKED = "blocked", _("Delivery blocked")
        # Staff (or the failure watch: status_data["paused"]) stopped the claiming of receivers.
        PAUSED = "paused", _("Paused")
        ERROR = "error", _("Error")
        SENT = "sent", _("Sent")
        # Final: stopped by staff, or its expiry passed; undelivered receivers are cancelled.
        CANCELLED = "cancelled", _("Cancelled")
        EXPIRED = "expired", _("Expired")

    # The built-in types (SPEC §2); they live with the registry of context types
    # (messaging.preferences.context_type_registry), which must not import this module.
    ContextType = ContextType

    # The status groups every rule uses; messaging.engine.transitions moves between them.
    IN_PROGRESS = (Status.QUEUED, Status.PREPARING, Status.SENDING, Status.BLOCKED, Status.PAUSED)
    FINISHED = (Status.SENT, Status.ERROR, Status.CANCELLED, Status.EXPIRED)
    # Statuses whose roll-up follows the receivers' counts (a status in HOLDING is kept while
    # receivers wait; cancelled and expired are kept for good).
    DELIVERING = (
        Status.SCHEDULED,
        Status.SENDING,
        Status.BLOCKED,
        Status.PAUSED,
        Status.SENT,
        Status.ERROR,
        Status.CANCELLED,
        Status.EXPIRED,
    )
    HOLDING = (Status.SCHEDULED, Status.BLOCKED, Status.PAUSED)
    PAUSABLE = (Status.SENDING, Status.BLOCKED)
    # A staff send's preparation goes on in these once its first receivers are being delivered
    # (status_data["still_preparing"]; transitions.start_streaming).
    STREAMING = (Status.SENDING, Status.BLOCKED, Status.PAUSED)
    CANCELLABLE = (Status.SCHEDULED, Status.QUEUED, Status.SENDING, Status.BLOCKED, Status.PAUSED)
    # An error message may still hold receivers awaiting an automatic retry.
    EXPIRABLE = (*CANCELLABLE, Status.ERROR)

    created_datetime = models.DateTimeField(_("created"), default=timezone.now, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    status = models.CharField(_("status"), max_length=30, choices=Status, default=Status.DRAFT, db_index=True)
    status_data = models.JSONField(_("status data"), default=dict, blank=True)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    virtual_message_receivers = models.JSONField(_("virtual message receivers"), default=dict, blank=True)
    context_type = models.CharField(
        _("context type"),
        max_length=30,
        choices=context_type_choices,
        default=ContextType.OTHER,
        db_index=True,
    )
    # "Important": delivered immediately to everyone, whatever their preferences (needs the
    # ignore_preferences permission; audited).
    ignore_preferences = models.BooleanField(_("important: ignore preferences"), default=False)
    message_type = models.JSONField(_("message type"), default=list, blank=True)
    # Staff-composed content: {language: {"subject": str, "body": str}}; empty for messages
    # created by other apps, whose content comes from a template.
    composed_content = models.JSONField(_("content"), default=dict, blank=True)
    # Sending control (UTC): not started before send_at; nothing delivered after expires_at.
    send_at = models.DateTimeField(_("send at"), null=True, blank=True, db_index=True)
    expires_at = models.DateTimeField(_("do not deliver after"), null=True, blank=True, db_index=True)
    # Chosen by staff from MESSAGING_ALLOWED_SENDERS; empty: DEFAULT_FROM_EMAIL.
    from_email = models.CharField(_("from"), max_length=255, blank=True)
    reply_to = models.CharField(_("reply to"), max_length=255, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        ordering = ["-created_datetime", "-id"]
        permissions = [
            ("compose_message", _("Can compose and edit draft messages")),
            ("send_message", _("Can send messages")),
            ("resend_message", _("Can resend failed receivers")),
            ("ignore_preferences", _("Can send messages that ignore recipients' preferences")),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.display_subject}"

    @property
    def display_subject(self) -> str:
        content = self.composed_content.get(settings.LANGUAGE_CODE) or next(
            iter(self.composed_content.values()), {}
        )
        return content.get("subject") or self.get_context_type_display()

    @property
    def from_address(self) -> str:
        """The From of this message's emails: the sender staff chose, else DEFAULT_FROM_EMAIL."""
        return self.from_email or settings.DEFAULT_FROM_EMAIL

    @property
    def is_draft(self) -> bool:
        return self.status == self.Status.DRAFT

    @property
    def is_queued(self) -> bool:
        return self.status == self.Status.QUEUED

    @property
    def is_editable(self) -> bool:
        return self.is_draft

    @property
    def is_scheduled(self) -> bool:
        return self.status == self.Status.SCHEDULED

    @property
    def is_paused(self) -> bool:
        return self.status == self.Status.PAUSED

    @property
    def can_pause(self) -> bool:
        return self.status in self.PAUSABLE

    @property
    def can_cancel(self) -> bool:
        return self.status in self.CANCELLABLE

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_in_progress(self) -> bool:
        return self.status in self.IN_PROGRESS

    @property
    def blocked_reason(self) -> str:
        return (
            self.status_data.get("blocked", {}).get("reason", "")
            if self.status == self.Status.BLOCKED
            else ""
        )

    def clean_message_type(self) -> None:
        if not self.message_type:
            self.message_type = ["email"]
        if not isinstance(self.message_type, list):
            raise ValidationError({"message_type": _("Must be a list of message types.")})
        unknown = [t for t in self.message_type if t not in channels.registered_types()]
        if unknown:
            raise ValidationError(
                {
                    "message_type": _("Unknown message type(s): %(types)s.")
                    % {"types": ", ".join(map(str, unknown))}
                }
            )

    def clean(self) -> None:
        self.clean_message_type()

    def validate_virtual_message_receivers(self) -> None:
        data = self.virtual_message_receivers
        if not isinstance(data, dict) or "user_ids" not in data:
            raise ValueError('virtual_message_receivers must be a dict with a "user_ids" key.')
        user_ids = data["user_ids"]
        if not isinstance(user_ids, list):
            raise ValueError('virtual_message_receivers["user_ids"] must be a list.')
        if not user_ids:
            raise ValueError('virtual_message_receivers["user_ids"] must not be empty.')
        bad = [v for v in user_ids if isinstance(v, bool) or not isinstance(v, int)]
        if bad:
            raise ValueError(f'virtual_message_receivers["user_ids"] holds non-integer values: {bad[:5]!r}.')

    def prepare_message_receivers(self, subject_generator, template_name, template_context):
        from messaging.engine import preparing

        return preparing.iter_receiver_batches(self, subject_generator, template_name, template_context)

    def create_message_receivers(self, **kwargs) -> int:
        from messaging.engine import preparing

        return preparing.create_message_receivers(self, **kwargs)

    def prepare_and_send(
        self,
        subject_generator,
        template_name,
        template_context,
        *,
        send_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """Create the receivers now and deliver them; with `send_at` in the future the message
        waits as `scheduled` until then; with `expires_at` nothing is delivered after it."""
        from messaging.engine import sending

        sending.prepare_and_send(
            self, subject_generator, template_name, template_context, send_at=send_at, expires_at=expires_at
        )


def is_suppressed() -> models.Exists:
    """Whether a receiver's address is on the suppression list (as a query expression)."""
    return models.Exists(Suppression.objects.filter(address=Lower(models.OuterRef("send_to"))))


class MessageReceiverQuerySet(models.QuerySet):
    def create_receiver(
        self, user, message, message_type, subject_generator, template_name, template_context
    ) -> MessageReceiver:
        from messaging.engine import preparing

        return preparing.create_receiver(
            user, message, message_type, subject_generator, template_name, template_context
        )

    def filter_old_receivers(self, datetime_obj: datetime) -> MessageReceiverQuerySet:
        return self.filter(created_datetime__lt=datetime_obj)

    def resendable(self) -> MessageReceiverQuerySet:
        """Receivers staff may resend by hand: every failure, and a sent email that bounced
        (or was rejected or complained about) afterwards; never one that was delivered."""
        return self.filter(
            Q(status__in=MessageReceiver.RESENDABLE)
            | Q(status=MessageReceiver.Status.SENT, delivery_outcome__in=MessageReceiver.UNDELIVERED)
        )

    def failed_permanently(self) -> MessageReceiverQuerySet:
        """Failures that will repeat at the same address: a 5xx reply, no or an invalid address,
        a hard bounce, a complaint or a provider's rejection (temporary ones can succeed)."""
        return self.filter(
            Q(permanent_failure=True)
            | Q(status=MessageReceiver.Status.SENT, delivery_outcome__in=MessageReceiver.PERMANENT_OUTCOMES)
        )

    def suppressed(self) -> MessageReceiverQuerySet:
        """Receivers whose address is on the suppression list (now)."""
        return self.filter(is_suppressed())

    def unsuppressed(self) -> MessageReceiverQuerySet:
        return self.exclude(is_suppressed())

    def final(self) -> MessageReceiverQuerySet:
        """Receivers no worker will touch again by itself (sent, or retries exhausted)."""
        return self.filter(status__in=MessageReceiver.FINAL)

    def awaiting_retry(self) -> MessageReceiverQuerySet:
        """Failed receivers the engine will retry by itself (temporary failure, retries left)."""
        return self.filter(
            status=MessageReceiver.Status.FAILED, permanent_failure=False, next_attempt_datetime__isnull=False
        )

    def due_for_retry(self, now: datetime | None = None) -> MessageReceiverQuerySet:
        """Receivers awaiting a retry whose backoff is over (never past their message's expiry)."""
        now = now or timezone.now()
        return (
            self.awaiting_retry()
            .filter(next_attempt_datetime__lte=now)
            .exclude(message__expires_at__lte=now)
            .exclude(message__status__in=(Message.Status.CANCELLED, Message.Status.EXPIRED))
        )

    def with_uncertain_flag(self) -> MessageReceiverQuerySet:
        """Annotate `uncertain_flag`: whether status_data holds "delivery_uncertain" (for pages
        that defer status_data, which holds every error)."""
        return self.annotate(
            uncertain_flag=models.ExpressionWrapper(
                Q(status_data__has_key="delivery_uncertain"), output_field=models.BooleanField()
            )
        )

    # Leases are compared on the database's clock (messaging.engine.transitions.ownership).
    def claimable(self, worker_id: str = "") -> MessageReceiverQuerySet:
        """Not sent, and owned by nobody (no lease, or it ran out) or already by `worker_id`
        (its claim committed but the answer was lost)."""
        free = Q(lease_expires_datetime__isnull=True) | Q(lease_expires_datetime__lt=Now())
        if worker_id:
            free |= Q(claimed_by=worker_id)
        return self.filter(free, status=MessageReceiver.Status.NOT_SENT)

    def leased(self) -> MessageReceiverQuerySet:
        """Receivers a worker holds a live claim on."""
        return self.filter(lease_expires_datetime__gte=Now())


class MessageReceiver(models.Model):
    class Status(models.TextChoices):
        NOT_SENT = "not_sent", _("Not sent")
        ERROR = "error", _("Error")
        FAILED = "failed", _("Failed")
        SENT = "sent", _("Sent")
        # Never handed to the server: its message was cancelled or expired (cancel_reason).
        CANCELLED = "cancelled", _("Cancelled")
        # Final, never sent: the user turned this context type off (not a failure).
        SKIPPED = "skipped", _("Skipped by preference")
        # Waits for the user's digest (due at next_attempt_datetime); sent with it (digest).
        HELD = "held", _("Held for digest")

    class CancelReason(models.TextChoices):
        CANCELLED = "cancelled", _("Cancelled by staff")
        EXPIRED = "expired", _("Expired")

    class Outcome(models.TextChoices):
        """What became of a sent email afterwards, as the provider or the recipient's mail
        server reported it (messaging.feedback.reports), beside the contract's status."""

        DELIVERED = "delivered", _("Delivered")
        DEFERRED = "deferred", _("Deferred")
        SOFT_BOUNCE = "soft_bounce", _("Bounced (temporary)")
        HARD_BOUNCE = "hard_bounce", _("Bounced")
        COMPLAINED = "complained", _("Marked as spam")
        REJECTED = "rejected", _("Rejected by the provider")
        # Never handed over: the address is on the suppression list.
        SUPPRESSED = "suppressed", _("Suppressed")

    RESENDABLE = (Status.FAILED, Status.ERROR)
    # `failed` is not final: the sweeper retries it unless the failure was permanent.
    FINAL = (Status.SENT, Status.ERROR, Status.CANCELLED, Status.SKIPPED)
    # A sent email that did not reach its recipient after all: staff may resend it (to an
    # address that is not suppressed).
    UNDELIVERED = (Outcome.SOFT_BOUNCE, Outcome.HARD_BOUNCE, Outcome.COMPLAINED, Outcome.REJECTED)
    # Reports that say the address itself is wrong or unwilling: sending there again fails again.
    PERMANENT_OUTCOMES = (Outcome.HARD_BOUNCE, Outcome.COMPLAINED, Outcome.REJECTED)

    created_datetime = models.DateTimeField(_("created"), default=timezone.now, db_index=True)
    status = models.CharField(_("status"), max_length=10, choices=Status, default=Status.NOT_SENT)
    status_data = models.JSONField(_("status data"), default=dict, blank=True)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    subject = models.CharField(_("subject"), max_length=255, blank=True)
    message_content_plain = models.TextField(_("plain text content"), blank=True)
    message_content_html = models.TextField(_("HTML content"), blank=True)
    message = models.ForeignKey(
        Message,
        verbose_name=_("message"),
        on_delete=models.CASCADE,
        related_name="receivers",
        db_index=False,  # the (message, id) index below leads with it
    )
    message_type = models.CharField(_("message type"), max_length=30, default="email")
    send_to = models.CharField(_("send to"), max_length=255, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.CASCADE,
        related_name="+",
    )
    language = models.CharField(_("language"), max_length=10, blank=True)
    sent_datetime = models.DateTimeField(_("sent"), null=True, blank=True)
    sending_failed_count = models.PositiveIntegerField(_("failed attempts"), default=0)
    sending_success_count = models.PositiveIntegerField(_("successful attempts"), default=0)
    # Delivery bookkeeping: a worker owns a receiver while its lease runs; a failed receiver
    # is retried automatically after next_attempt_datetime unless the failure was permanent;
    # a held receiver goes into its user's digest once next_attempt_datetime has come.
    lease_expires_datetime = models.DateTimeField(null=True, blank=True, editable=False)
    claimed_by = models.CharField(max_length=64, blank=True, editable=False)
    # Set (durably) just before the receiver is handed to the channel and cleared with its
    # result: a receiver that has it but no owner may have reached the server or provider, so
    # whoever takes it over flags it "delivery_uncertain" (engine/transitions/ownership.py).
    in_flight_since = models.DateTimeField(null=True, blank=True, editable=False)
    next_attempt_datetime = models.DateTimeField(null=True, blank=True, editable=False)
    permanent_failure = models.BooleanField(_("permanent failure"), default=False)
    # The newest error's message, as a column so the status page can group failures in SQL.
    last_error = models.CharField(_("last error"), max_length=255, blank=True)
    cancel_reason = models.CharField(_("cancelled because"), max_length=20, choices=CancelReason, blank=True)
    # Delivery feedback: the newest outcome reported (events come out of order: the time of
    # the event that set it decides), the server's reply, and the provider's id for this email.
    delivery_outcome = models.CharField(_("delivery outcome"), max_length=20, choices=Outcome, blank=True)
    outcome_datetime = models.DateTimeField(_("outcome reported"), null=True, blank=True)
    outcome_detail = models.CharField(_("outcome detail"), max_length=255, blank=True)
    provider_message_id = models.CharField(_("provider's message id"), max_length=255, blank=True)
    # A held receiver: the digest email (a receiver of a digest message) it went out in.
    digest = models.ForeignKey(
        "self",
        verbose_name=_("sent in digest"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="digested",
    )

    objects = MessageReceiverQuerySet.as_manager()

    class Meta:
        verbose_name = _("message receiver")
        verbose_name_plural = _("message receivers")
        ordering = ["id"]
        indexes = [
            # Equality columns first, then id: counts per status read only the index, and a
            # filtered page (ORDER BY id LIMIT 26) reads just its rows.
            models.Index(fields=["message", "id"], name="receiver_message_page"),
            models.Index(fields=["message", "status", "id"], name="receiver_message_status"),
            models.Index(fields=["status", "next_attempt_datetime"], name="receiver_retry_due"),
            # Failures by reason read the index alone (permanent or not is in it too).
            models.Index(
                fields=["message", "status", "last_error", "permanent_failure"],
                name="receiver_failure_reason",
            ),
            models.Index(fields=["message", "language", "id"], name="receiver_message_language"),
            # Sends per minute (operations page, /metrics).
            models.Index(fields=["sent_datetime"], name="receiver_sent_datetime"),
            models.Index(fields=["message", "delivery_outcome", "outcome_detail"], name="receiver_outcome"),
            models.Index(
                fields=["provider_message_id"],
                name="receiver_provider_message_id",
                condition=~Q(provider_message_id=""),
            ),
            # "N sent in digests" on the status page: a message without any reads no row.
            models.Index(fields=["message"], name="receiver_digested", condition=Q(digest__isnull=False)),
            # Few rows each: receivers handed over without a result yet, and owned ones (the
            # sweeper settles those of cancelled messages: engine.transitions.settle_stopped).
            models.Index(
                fields=["message"], name="receiver_in_flight", condition=Q(in_flight_since__isnull=False)
            ),
            models.Index(fields=["message"], name="receiver_owned", condition=~Q(claimed_by="")),
            # Whether the engine will retry a receiver of a finished message (its status page
            # keeps polling): none of its thousands of permanent failures is read to say no.
            models.Index(
                fields=["message"],
                name="receiver_awaiting_retry",
                condition=Q(status="failed", permanent_failure=False, next_attempt_datetime__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.send_to or self.user_id} ({self.get_status_display()})"

    def clean_message_content_fields(self) -> None:
        from messaging.engine.rendering import html_to_text

        if self.message_content_html and not self.message_content_plain:
            self.message_content_plain = html_to_text(self.message_content_html)
        self.subject = (self.subject or "").strip()
        self.message_content_plain = (self.message_content_plain or "").strip()

    def clean_message_type(self) -> None:
        if not self.message_type:
            self.message_type = "email"

    def clean(self) -> None:
        self.clean_message_content_fields()
        self.clean_message_type()

    def send(self):
        """One attempt now (SPEC §2); returns the channel's DeliveryResult, or why nothing was sent."""
        from messaging.engine import delivery

        return delivery.send_one(self)

    @property
    def errors(self) -> list[dict]:
        return self.status_data.get("errors", [])

    @property
    def is_resendable(self) -> bool:
        return self.status in self.RESENDABLE or (
            self.status == self.Status.SENT and self.delivery_outcome in self.UNDELIVERED
        )


class RateLimitSlot(models.Model):
    """One send counted against one sending limit (messaging/engine/rate_limits.py), when the limits'
    shared state is the database (no Redis). `frees_at` is a Unix time: while the send is in
    flight, its reservation time plus the longest a send may take plus the window; once its
    result came, that time plus the window."""

    key = models.CharField(max_length=300)
    token = models.CharField(max_length=32)
    frees_at = models.FloatField()
    in_flight = models.BooleanField(default=True)

    class Meta:
        indexes = [models.Index(fields=["key", "frees_at"]), models.Index(fields=["token"])]

    def __str__(self) -> str:
        return f"{self.key} {self.token}"
