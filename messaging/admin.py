"""The Django admin for the messaging app (SPEC §3: "every message and receiver in the admin").

Content and status are read-only here: staff change state only through the actions, which
call `messaging.engine.resending` like every other caller does.
"""

from __future__ import annotations

import json
import zoneinfo

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import Count, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from messaging.compose import message_templates
from messaging.compose.forms import MessageTemplateAdminForm
from messaging.engine import channels, controlling, resending
from messaging.feedback import suppressions
from messaging.models import (
    AuditEvent,
    ContextTypeSetting,
    DeliveryEvent,
    Message,
    MessageAttachment,
    MessageReceiver,
    MessageTemplate,
    MessagingProfile,
    NotificationPreference,
    Suppression,
    UnmatchedBounce,
    UserEmail,
)
from messaging.preferences import context_types
from messaging.tracking import status_labels

RESENDABLE = MessageReceiver.RESENDABLE


def status_page_url(message_id: int) -> str | None:
    """The live status page of a message, once the staff UI provides it."""
    try:
        return reverse("messaging:message_status", args=[message_id])
    except NoReverseMatch:
        return None


def receiver_changelist_url(**filters) -> str:
    return f"{reverse('admin:messaging_messagereceiver_changelist')}?{urlencode(filters)}"


def receivers_link(count: int, **filters):
    """The count, linked to the receivers it counts (plain 0 when there are none)."""
    if not count:
        return 0
    return format_html('<a href="{}">{}</a>', receiver_changelist_url(**filters), count)


def receiver_count(**filters) -> Coalesce:
    """A correlated count of a message's receivers: evaluated only for the rows on the page,
    through the (message, status) index, instead of a GROUP BY over every receiver."""
    counts = (
        MessageReceiver.objects.filter(message=OuterRef("pk"), **filters)
        .order_by()
        .values("message")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counts, output_field=IntegerField()), Value(0))


def pretty_json(value) -> str:
    if not value:
        return "-"
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))


class LanguageListFilter(admin.SimpleListFilter):
    """The languages of settings.LANGUAGES, without a query for the choices."""

    title = _("language")
    parameter_name = "language"
    field_name = "language"

    def lookups(self, request, model_admin):
        return [*settings.LANGUAGES, ("-", _("(none)"))]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(**{self.field_name: "" if value == "-" else value})


class ProfileLanguageListFilter(LanguageListFilter):
    field_name = "languagecode"


class MessageTypeListFilter(admin.SimpleListFilter):
    """Message.message_type is a JSON list; match an element by its quoted JSON text."""

    title = _("message type")
    parameter_name = "message_type"

    def lookups(self, request, model_admin):
        return [(t, t) for t in channels.registered_types()]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(message_type__icontains=json.dumps(value))


class ReadOnlyAdminMixin:
    """Viewable and searchable, never added or edited by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        # Everything a fieldset shows is read-only; one list to keep up to date, not two.
        if self.fieldsets:
            return flatten_fieldsets(self.fieldsets)
        return super().get_readonly_fields(request, obj)


class JsonDataMixin:
    """status_data and metadata, shown pretty-printed (Message and MessageReceiver have both)."""

    @admin.display(description=_("status data"))
    def status_data_display(self, obj) -> str:
        return pretty_json(obj.status_data)

    @admin.display(description=_("metadata"))
    def metadata_display(self, obj) -> str:
        return pretty_json(obj.metadata)


class ResendPermissionMixin:
    def has_resend_permission(self, request) -> bool:
        return request.user.has_perm("messaging.resend_message")


class ReadOnlyTabularInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Rows to read, never edited: a table in which every column has a header, which Django's
    own tabular inline lacks (the template says more)."""

    extra = 0
    can_delete = False
    template = "admin/messaging/edit_inline/readonly_tabular.html"


class AuditEventInline(ReadOnlyTabularInline):
    model = AuditEvent
    fields = ["created_datetime", "action", "actor", "receiver", "details"]
    readonly_fields = fields
    ordering = ["-created_datetime", "-id"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor", "receiver")


class MessageAttachmentInline(ReadOnlyTabularInline):
    """A message's files, read-only; the name links to the staff download view."""

    model = MessageAttachment
    fields = ["download", "content_type", "size", "sha256", "created_datetime"]
    readonly_fields = fields

    @admin.display(description=_("file name"))
    def download(self, obj: MessageAttachment) -> str:
        url = reverse("messaging:attachment_download", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.filename)


@admin.register(Message)
class MessageAdmin(JsonDataMixin, ResendPermissionMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "subject",
        "status",
        "blocked_reason",
        "send_at",
        "expires_at",
        "context_type",
        "created_by",
        "created_datetime",
        "receiver_total",
        "receiver_sent",
        "receiver_failed",
        "status_page",
    ]
    list_display_links = ["id", "subject"]
    list_filter = [
        "status",
        "context_type",
        MessageTypeListFilter,
        ("created_datetime", admin.DateFieldListFilter),
    ]
    # composed_content and status_data are JSON: icontains searches their text (subjects,
    # bodies, error messages).
    search_fields = ["=id", "composed_content", "status_data", "created_by__username"]
    list_select_related = ["created_by"]
    list_per_page = 50
    actions = ["resend_failed_receivers", "pause_sending", "resume_sending", "cancel_sending"]
    inlines = [MessageAttachmentInline, AuditEventInline]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "subject",
                    "status",
                    "blocked_reason",
                    "send_at",
                    "expires_at",
                    "status_page",
                    "context_type",
                    "ignore_preferences",
                    "message_type",
                    "created_by",
                    "created_datetime",
                    "receiver_summary",
                ]
            },
        ),
        (_("Content"), {"fields": ["composed_content_display"]}),
        (
            _("Data"),
            {
                "fields": [
                    "virtual_message_receivers_display",
                    "status_data_display",
                    "metadata_display",
                ],
                "classes": ["collapse"],
            },
        ),
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_receivers=receiver_count(),
                n_sent=receiver_count(status=MessageReceiver.Status.SENT),
                n_failed=receiver_count(status__in=RESENDABLE),
            )
        )

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        # SQLite stores JSON with non-ASCII characters escaped ("ø" as "\u00f8"): search for that
        # spelling too, so "Første" finds Norwegian content on every database.
        escaped = json.dumps(search_term)[1:-1]
        if escaped != search_term and not search_term.isascii():
            more, more_duplicates = super().get_search_results(request, queryset, escaped)
            results = results | more
            may_have_duplicates = may_have_duplicates or more_duplicates
        return results, may_have_duplicates

    def view_on_site(self, obj):
        return status_page_url(obj.pk)

    @admin.display(description=_("delivery blocked because"))
    def blocked_reason(self, obj: Message) -> str:
        return obj.blocked_reason

    @admin.display(description=_("subject"))
    def subject(self, obj: Message) -> str:
        return obj.display_subject

    @admin.display(description=_("receivers"), ordering="n_receivers")
    def receiver_total(self, obj: Message):
        return receivers_link(obj.n_receivers, message__id__exact=obj.pk)

    @admin.display(description=_("sent"), ordering="n_sent")
    def receiver_sent(self, obj: Message) -> int:
        return obj.n_sent

    @admin.display(description=_("failed/error"), ordering="n_failed")
    def receiver_failed(self, obj: Message):
        return receivers_link(obj.n_failed, message__id__exact=obj.pk, status__in=",".join(RESENDABLE))

    @admin.display(description=_("status page"))
    def status_page(self, obj: Message):
        url = status_page_url(obj.pk)
        if url is None:
            return "-"
        return format_html('<a href="{}">{}</a>', url, _("live status"))

    @admin.display(description=_("receivers"))
    def receiver_summary(self, obj: Message) -> str:
        return _("%(total)s in total, %(sent)s sent, %(failed)s failed or error") % {
            "total": obj.n_receivers,
            "sent": obj.n_sent,
            "failed": obj.n_failed,
        }

    @admin.display(description=_("content"))
    def composed_content_display(self, obj: Message) -> str:
        return pretty_json(obj.composed_content)

    @admin.display(description=_("virtual message receivers"))
    def virtual_message_receivers_display(self, obj: Message) -> str:
        return pretty_json(obj.virtual_message_receivers)

    @admin.action(description=_("Resend failed, error or bounced receivers"), permissions=["resend"])
    def resend_failed_receivers(self, request, queryset):
        queued = 0
        messages_with_failures = 0
        for message in queryset.order_by("pk"):
            moved = resending.resend_failed(message, actor=request.user)
            queued += moved
            messages_with_failures += bool(moved)
        skipped = queryset.count() - messages_with_failures
        text = ngettext(
            "Queued %(queued)d receiver for resending",
            "Queued %(queued)d receivers for resending",
            queued,
        ) % {"queued": queued}
        text += ngettext(" from %(n)d message; ", " from %(n)d messages; ", messages_with_failures) % {
            "n": messages_with_failures
        }
        text += ngettext(
            "skipped %(n)d message with no failed or error receivers.",
            "skipped %(n)d messages with no failed or error receivers.",
            skipped,
        ) % {"n": skipped}
        self.message_user(request, text, messages.SUCCESS if queued else messages.WARNING)

    def has_send_permission(self, request) -> bool:
        return request.user.has_perm("messaging.send_message")

    def _control(self, request, queryset, action: str, done: str) -> None:
        changed, refusals = 0, []
        for message in queryset.order_by("pk"):
            try:
                controlling.ACTIONS[action](message, actor=request.user)
                changed += 1
            except controlling.ControlRefused as refused:
                refusals.append(f"#{message.pk}: {status_labels.refusal_text(refused)}")
        if changed:
            self.message_user(request, done % {"n": changed}, messages.SUCCESS)
        for refusal in refusals:
            self.message_user(request, refusal, messages.WARNING)

    @admin.action(description=_("Pause sending"), permissions=["send"])
    def pause_sending(self, request, queryset):
        self._control(request, queryset, "pause", _("Paused %(n)d message(s)."))

    @admin.action(description=_("Resume sending"), permissions=["send"])
    def resume_sending(self, request, queryset):
        self._control(request, queryset, "resume", _("Resumed %(n)d message(s)."))

    @admin.action(description=_("Cancel sending"), permissions=["send"])
    def cancel_sending(self, request, queryset):
        self._control(request, queryset, "cancel", _("Cancelled %(n)d message(s)."))


@admin.register(MessageReceiver)
class MessageReceiverAdmin(JsonDataMixin, ResendPermissionMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "message_link",
        "user",
        "send_to",
        "language",
        "status",
        "delivery_outcome",
        "sending_failed_count",
        "sending_success_count",
        "sent_datetime",
    ]
    list_filter = [
        "status",
        "delivery_outcome",
        "message_type",
        LanguageListFilter,
        "permanent_failure",
        "message__context_type",
        ("created_datetime", admin.DateFieldListFilter),
    ]
    search_fields = [
        "send_to",
        "subject",
        "user__username",
        "user__email",
        "user__first_name",
        "user__last_name",
        "=message__id",
    ]
    list_select_related = ["message", "user"]
    list_per_page = 100
    # A message may have hundreds of thousands of receivers: skip the unfiltered count.
    show_full_result_count = False
    actions = ["resend_receivers"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "message",
                    "user",
                    "send_to",
                    "language",
                    "message_type",
                    "status",
                    "created_datetime",
                    "sent_datetime",
                    "sending_failed_count",
                    "sending_success_count",
                    "permanent_failure",
                    "next_attempt_datetime",
                ]
            },
        ),
        (
            _("After sending"),
            {"fields": ["delivery_outcome", "outcome_detail", "outcome_datetime", "provider_message_id"]},
        ),
        (_("Content"), {"fields": ["subject", "message_content_plain", "message_content_html"]}),
        (_("Errors"), {"fields": ["errors_display", "status_data_display", "metadata_display"]}),
    ]

    def view_on_site(self, obj):
        return status_page_url(obj.message_id)

    @admin.display(description=_("message"), ordering="message_id")
    def message_link(self, obj: MessageReceiver):
        url = reverse("admin:messaging_message_change", args=[obj.message_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.message))

    @admin.display(description=_("errors"))
    def errors_display(self, obj: MessageReceiver) -> str:
        errors = obj.errors
        if not errors:
            return "-"
        lines = [f"{e.get('timestamp', '')}  {e.get('error_message', '')}" for e in errors]
        return format_html("<pre>{}</pre>", "\n".join(lines))

    @admin.action(description=_("Resend failed, error or bounced receivers"), permissions=["resend"])
    def resend_receivers(self, request, queryset):
        queued = skipped = 0
        for receiver in queryset.order_by("pk"):
            if resending.resend_receiver(receiver, actor=request.user):
                queued += 1
            else:
                skipped += 1
        text = ngettext(
            "Queued %(queued)d receiver for resending; ",
            "Queued %(queued)d receivers for resending; ",
            queued,
        ) % {"queued": queued}
        text += ngettext(
            "skipped %(skipped)d that was not failed, error or bounced, or whose address is suppressed.",
            "skipped %(skipped)d that were not failed, error or bounced, or whose address is suppressed.",
            skipped,
        ) % {"skipped": skipped}
        self.message_user(request, text, messages.SUCCESS if queued else messages.WARNING)


def validate_time_zone(value: str) -> None:
    if value and value not in zoneinfo.available_timezones():
        raise forms.ValidationError(
            _("“%(zone)s” is not a time zone name; use one such as Europe/Oslo or America/New_York."),
            code="unknown_time_zone",
            params={"zone": value},
        )


class MessagingProfileAdminForm(forms.ModelForm):
    class Meta:
        model = MessagingProfile
        fields = ["time_zone"]
        help_texts = {
            "time_zone": _(
                "An IANA time zone name, such as Europe/Oslo; digests go out at the digest time in this "
                "zone. Blank: the site's time zone."
            )
        }

    def clean_time_zone(self) -> str:
        value = self.cleaned_data["time_zone"].strip()
        validate_time_zone(value)
        return value


@admin.register(MessagingProfile)
class MessagingProfileAdmin(admin.ModelAdmin):
    """The language comes from the user system and stays read-only; the time zone of digests is
    the messaging app's own and may be set here."""

    form = MessagingProfileAdminForm
    list_display = ["id", "user", "languagecode", "time_zone"]
    list_filter = [ProfileLanguageListFilter]
    search_fields = ["user__username", "user__email", "user__first_name", "user__last_name"]
    list_select_related = ["user"]
    fields = ["user", "languagecode", "time_zone"]
    readonly_fields = ["user", "languagecode"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ContextTypeSettingForm(forms.ModelForm):
    """The choices are read when the form is made, so types a project registers are offered.
    Engine-made types (the digest) are left out: a digest held for a digest would never go out."""

    class Meta:
        model = ContextTypeSetting
        fields = ["context_type", "label", "default_mode", "enforced"]
        help_texts = {
            "context_type": _(
                "A row here overrides the default the code gives this type: its label, how recipients "
                "who chose nothing get it, and whether it is enforced."
            ),
            "default_mode": _("How recipients who have not chosen get messages of this type."),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        composable = {config.key for config in context_types.composable()}
        self.fields["context_type"].choices = [
            (key, label) for key, label in context_types.choices() if key in composable
        ]


@admin.register(ContextTypeSetting)
class ContextTypeSettingAdmin(admin.ModelAdmin):
    form = ContextTypeSettingForm
    list_display = ["context_type", "label", "default_mode", "enforced"]
    list_filter = ["default_mode", "enforced"]
    search_fields = ["context_type", "label"]


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(admin.ModelAdmin):
    list_display = ["user", "context_type", "mode", "updated_datetime"]
    list_filter = ["context_type", "mode", ("updated_datetime", admin.DateFieldListFilter)]
    search_fields = ["user__username", "user__email", "user__first_name", "user__last_name"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    readonly_fields = ["updated_datetime"]

    def save_model(self, request, obj: NotificationPreference, form, change: bool) -> None:
        obj.updated_datetime = timezone.now()
        super().save_model(request, obj, form, change)


@admin.register(UserEmail)
class UserEmailAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "email", "user", "is_primary", "use_for_notifications"]
    list_filter = ["is_primary", "use_for_notifications"]
    search_fields = ["email", "user__username", "user__email"]
    list_select_related = ["user"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "created_datetime",
        "action",
        "message_number",
        "message_subject",
        "receiver",
        "actor",
    ]
    list_filter = ["action", ("created_datetime", admin.DateFieldListFilter)]
    search_fields = ["=message_number", "message_subject", "actor__username"]
    list_select_related = ["message", "receiver", "actor"]

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DeliveryEvent)
class DeliveryEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "occurred_datetime",
        "event_type",
        "provider",
        "recipient",
        "reject_reason",
        "receiver",
    ]
    list_filter = ["event_type", "provider", "reject_reason"]
    search_fields = ["recipient", "event_id", "mta_response", "=receiver__id"]
    list_select_related = ["receiver"]
    show_full_result_count = False
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "receiver",
                    "event_type",
                    "provider",
                    "event_id",
                    "recipient",
                    "reject_reason",
                    "description",
                    "mta_response",
                    "occurred_datetime",
                    "received_datetime",
                    "payload_display",
                ]
            },
        )
    ]

    @admin.display(description=_("as received"))
    def payload_display(self, obj: DeliveryEvent) -> str:
        return pretty_json(obj.payload)


@admin.register(Suppression)
class SuppressionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Lifting is deleting, done by the service so that it is audited."""

    list_display = ["address", "reason", "detail", "created_datetime"]
    list_filter = ["reason", ("created_datetime", admin.DateFieldListFilter)]
    search_fields = ["address", "detail"]
    fieldsets = [(None, {"fields": ["address", "reason", "detail", "created_datetime", "event"]})]
    actions = ["lift"]

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("messaging.lift_suppression")

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # not audited; "lift" is
        return actions

    def delete_model(self, request, obj: Suppression) -> None:
        suppressions.lift(obj, actor=request.user)

    @admin.action(
        description=_("Lift the suppression (send to these addresses again)"), permissions=["delete"]
    )
    def lift(self, request, queryset):
        lifted = sum(suppressions.lift(suppression, actor=request.user) for suppression in queryset)
        text = ngettext("Lifted %(count)d suppression.", "Lifted %(count)d suppressions.", lifted)
        self.message_user(request, text % {"count": lifted}, messages.SUCCESS)


@admin.register(UnmatchedBounce)
class UnmatchedBounceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "received_datetime", "sender", "subject", "reason"]
    search_fields = ["sender", "subject", "reason"]
    fieldsets = [(None, {"fields": ["received_datetime", "sender", "subject", "reason", "raw_display"]})]

    @admin.display(description=_("message"))
    def raw_display(self, obj: UnmatchedBounce) -> str:
        return format_html("<pre>{}</pre>", bytes(obj.raw).decode("utf-8", "replace"))


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    """Templates staff start messages from; saved through the service, as in the staff UI."""

    form = MessageTemplateAdminForm
    list_display = ["name", "context_type", "languages", "updated_datetime", "created_by"]
    list_filter = ["context_type"]
    search_fields = ["name"]
    list_select_related = ["created_by"]
    readonly_fields = ["created_by", "created_datetime", "updated_datetime"]
    fields = ["name", "context_type", "composed_content", *readonly_fields]

    @admin.display(description=_("languages"))
    def languages(self, obj: MessageTemplate) -> str:
        return ", ".join(message_templates.content_languages(obj.composed_content)) or "-"

    def save_model(self, request, obj: MessageTemplate, form, change: bool) -> None:
        message_templates.save_template(obj, actor=request.user)
