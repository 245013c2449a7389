"""django-tables2 tables for the staff UI."""

from __future__ import annotations

import django_tables2 as tables
from django.urls import reverse
from django.utils.functional import lazy
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from messaging.compose import message_templates
from messaging.models import Message, MessageReceiver, MessageTemplate, Suppression
from messaging.templatetags.messaging_format import language_label, when
from messaging.tracking import status_labels

# Columns a phone-width screen leaves out (the receiver's page has them all).
WIDE_ONLY = {"th": {"class": "d-none d-md-table-cell"}, "td": {"class": "d-none d-md-table-cell"}}


def _visually_hidden(text) -> SafeString:
    return format_html('<span class="visually-hidden">{}</span>', text)


# A header that screen readers read but that takes no room (a column of buttons needs no visible
# title, but an empty <th> leaves its cells unlabelled). Lazy: translated when rendered.
visually_hidden = lazy(_visually_hidden, SafeString)
ACTIONS_HEADER = visually_hidden(_("Actions"))


def actions_column(cell_class: str = "text-end") -> tables.Column:
    """A row's buttons, under a header only screen readers read."""
    return tables.Column(
        verbose_name=ACTIONS_HEADER, empty_values=(), orderable=False, attrs={"td": {"class": cell_class}}
    )


def outcome_badge(receiver: MessageReceiver) -> str:
    return format_html(
        '<span class="badge outcome-badge outcome-{}" data-outcome="{}">{}</span>',
        receiver.delivery_outcome,
        receiver.delivery_outcome,
        receiver.get_delivery_outcome_display(),
    )


class LocalTimeColumn(tables.Column):
    """Local time with the zone's name."""

    def render(self, value) -> str:
        return when(value)


class MessageTable(tables.Table):
    display_subject = tables.Column(verbose_name=_("Subject"), empty_values=(), orderable=False)
    context_type = tables.Column(verbose_name=_("Context type"))
    status = tables.Column(verbose_name=_("Status"))
    created_by = tables.Column(verbose_name=_("Author"), order_by=("created_by__username",))
    created_datetime = LocalTimeColumn(verbose_name=_("Created"))
    receiver_total = tables.Column(verbose_name=_("Receivers"), attrs={"td": {"class": "text-end"}})
    receiver_sent = tables.Column(verbose_name=_("Sent"), attrs={"td": {"class": "text-end"}})
    receiver_failed = tables.Column(verbose_name=_("Failed"), attrs={"td": {"class": "text-end"}})

    class Meta:
        model = Message
        fields = ()
        sequence = (
            "display_subject",
            "context_type",
            "status",
            "created_by",
            "created_datetime",
            "receiver_total",
            "receiver_sent",
            "receiver_failed",
        )
        order_by = ("-created_datetime",)
        attrs = {"class": "table table-hover align-middle", "id": "message-table"}
        row_attrs = {"data-message-id": lambda record: record.pk, "id": lambda record: f"message-{record.pk}"}
        empty_text = _("No messages match.")

    def render_display_subject(self, record: Message) -> str:
        if record.is_editable:
            url = reverse("messaging:message_edit", args=[record.pk])
        else:
            url = reverse("messaging:message_status", args=[record.pk])
        return format_html(
            '<a href="{}" hx-boost="false" data-testid="message-link">{}</a>', url, record.display_subject
        )

    def render_status(self, record: Message) -> str:
        label = status_labels.message_label(
            record.status, record.receiver_total, record.receiver_not_delivered
        )
        badge = label.badge()
        if record.blocked_reason:
            return format_html(
                '{}<div class="small text-danger-emphasis">{}</div>', badge, record.blocked_reason
            )
        if record.is_scheduled and record.send_at:
            return format_html(
                '{}<div class="small" data-testid="send-at">{}</div>', badge, when(record.send_at)
            )
        if record.is_paused and record.status_data.get("paused", {}).get("automatic"):
            note = _("paused itself: too many failures")
            return format_html('{}<div class="small text-warning-emphasis">{}</div>', badge, note)
        return badge

    def render_created_by(self, value) -> str:
        return value.get_full_name() or value.get_username()


class ReceiverTable(tables.Table):
    user = tables.Column(verbose_name=_("User"), order_by=("user__username",))
    send_to = tables.Column(verbose_name=_("Address"), default=_("(no address)"))
    language = tables.Column(verbose_name=_("Language"), attrs=WIDE_ONLY)
    status = tables.Column(verbose_name=_("Status"))
    attempts = tables.Column(
        verbose_name=_("Attempts"), empty_values=(), order_by=("sending_failed_count",), attrs=WIDE_ONLY
    )
    sent_datetime = LocalTimeColumn(verbose_name=_("Sent"), attrs=WIDE_ONLY)
    last_error = tables.Column(
        verbose_name=_("Last error"), empty_values=(), orderable=False, attrs=WIDE_ONLY
    )
    actions = actions_column()

    class Meta:
        model = MessageReceiver
        fields = ()
        sequence = (
            "user",
            "send_to",
            "language",
            "status",
            "attempts",
            "sent_datetime",
            "last_error",
            "actions",
        )
        attrs = {"class": "table table-sm table-hover align-middle", "id": "receiver-table"}
        row_attrs = {
            "id": lambda record: f"receiver-{record.pk}",
            "data-receiver-id": lambda record: record.pk,
            "data-status": lambda record: record.status,
            "data-outcome": lambda record: record.delivery_outcome,
        }
        empty_text = _("No receivers match.")

    def __init__(self, *args, can_resend: bool = False, query: str = "", **kwargs):
        self.can_resend = can_resend
        self.query = query  # the status page's filters, kept by the row's Resend button
        super().__init__(*args, **kwargs)

    # The rows of the page, rendered here rather than by django-tables2's generic row and cell
    # machinery, which took most of a status page's time (the page is re-rendered on every poll
    # that finds a change). The same markup: tests/tracking/test_status_scale.py compares them.
    def body_html(self) -> SafeString:
        columns = [(column.name, column.attrs["td"].as_html(), column.default) for column in self.columns]
        rows = []
        for i, record in enumerate(self.page.object_list):
            cells = ((td, self._cell(name, record, default)) for name, td, default in columns)
            rows.append(
                format_html(
                    ROW_HTML,
                    record.pk,
                    record.pk,
                    record.status,
                    record.delivery_outcome,
                    "odd" if i % 2 else "even",
                    format_html_join("", "<td {}>{}</td>", cells),
                )
            )
        return SafeString("".join(rows))

    def _cell(self, name: str, record: MessageReceiver, default) -> str:
        if name in RECORD_CELLS:
            return getattr(self, f"render_{name}")(record)
        value = getattr(record, name)
        if value in (None, ""):
            return default
        return getattr(self, f"render_{name}")(value) if name in VALUE_CELLS else value

    def render_sent_datetime(self, value) -> str:
        return when(value)

    def render_user(self, value) -> str:
        # Everything this person was sent, one click away ("what did we send this student?").
        return format_html(
            '<a href="{}" hx-boost="false" data-testid="person-link">{}</a>',
            reverse("messaging:person_detail", args=[value.pk]),
            value.get_full_name() or value.get_username(),
        )

    def render_status(self, record: MessageReceiver) -> str:
        badge = status_labels.receiver_badge(record)
        if note := status_labels.uncertain_note(record):
            badge = format_html(
                '{} <span class="small text-warning-emphasis" data-testid="uncertain">{}</span>', badge, note
            )
        if record.delivery_outcome:
            return format_html("{} {}", badge, outcome_badge(record))
        if resumes := status_labels.resumes_at(record):
            note = format_html(_("waiting, resumes at {time}"), time=when(resumes, "TIME_FORMAT"))
            return format_html(
                '{} <span class="small text-body-secondary" data-testid="resumes">{}</span>', badge, note
            )
        if record.next_attempt_datetime and record.status == MessageReceiver.Status.FAILED:
            note = format_html(
                _("next try at {time}"), time=when(record.next_attempt_datetime, "TIME_FORMAT")
            )
            return format_html('{} <span class="small text-body-secondary">{}</span>', badge, note)
        if (
            record.next_attempt_datetime
            and record.status == MessageReceiver.Status.HELD
            and not record.digest_id
        ):
            note = format_html(_("digest due {time}"), time=when(record.next_attempt_datetime))
            return format_html(
                '{} <span class="small text-body-secondary" data-testid="digest-due">{}</span>', badge, note
            )
        return badge

    def render_language(self, value: str) -> str:
        return language_label(value)

    def render_attempts(self, record: MessageReceiver) -> str:
        return format_html(
            '<span title="{}">{} / {}</span>',
            _("successful / failed"),
            record.sending_success_count,
            record.sending_failed_count,
        )

    def render_actions(self, record: MessageReceiver) -> str:
        # format_html, not a template per row: the table is re-rendered on every poll.
        detail = format_html(
            '<a href="{}" class="btn btn-sm btn-outline-secondary" hx-boost="false" '
            'data-testid="receiver-detail-link">{}</a>',
            reverse("messaging:receiver_detail", args=[record.pk]),
            _("Details"),
        )
        if not self.can_resend or not record.is_resendable or getattr(record, "address_suppressed", False):
            return detail
        query = f"?{self.query}" if self.query else ""
        confirm = ""
        if record.permanent_failure or record.delivery_outcome in MessageReceiver.PERMANENT_OUTCOMES:
            question = _("This failed permanently. Unless its address was corrected, it fails again. Resend?")
            confirm = format_html(' hx-confirm="{}"', question)
        resend = format_html(
            '<button type="button" class="btn btn-sm btn-outline-primary" data-testid="resend-receiver" '
            'hx-post="{}{}" hx-target="#receiver-results" hx-swap="outerHTML" hx-push-url="false" '
            'hx-disabled-elt="this"{}>{}</button>',
            reverse("messaging:receiver_resend", args=[record.pk]),
            query,
            confirm,
            _("Resend"),
        )
        # Side by side, or stacked where a phone leaves no room for both.
        return format_html(
            '<div class="d-flex flex-wrap justify-content-end gap-1">{}{}</div>', detail, resend
        )

    def render_last_error(self, record: MessageReceiver) -> str:
        if record.status == MessageReceiver.Status.SENT:
            message = record.outcome_detail if record.delivery_outcome in MessageReceiver.UNDELIVERED else ""
        else:
            message = record.last_error
        if not message:
            return "—"
        short = message if len(message) <= 80 else message[:79] + "…"
        return format_html('<span class="text-danger small" title="{}">{}</span>', message, short)


# ReceiverTable's columns whose render_<name> takes the record (the rest take the value, or
# none: the value as it is).
ROW_HTML = '<tr id="receiver-{}" data-receiver-id="{}" data-status="{}" data-outcome="{}" class="{}">{}</tr>'
RECORD_CELLS = {"status", "attempts", "last_error", "actions"}
VALUE_CELLS = {"user", "language", "sent_datetime"}


class SuppressionTable(tables.Table):
    address = tables.Column(verbose_name=_("Address"))
    reason = tables.Column(verbose_name=_("Reason"))
    detail = tables.Column(verbose_name=_("Detail"), orderable=False)
    created_datetime = LocalTimeColumn(verbose_name=_("Since"))
    actions = actions_column("text-end text-nowrap")

    class Meta:
        model = Suppression
        fields = ()
        sequence = ("address", "reason", "detail", "created_datetime", "actions")
        order_by = ("-created_datetime",)
        attrs = {"class": "table table-sm table-hover align-middle", "id": "suppression-table"}
        row_attrs = {
            "id": lambda record: f"suppression-{record.pk}",
            "data-address": lambda record: record.address,
        }
        empty_text = _("No suppressed addresses.")

    def __init__(self, *args, can_lift: bool = False, **kwargs):
        self.can_lift = can_lift
        super().__init__(*args, **kwargs)

    def render_reason(self, record: Suppression) -> str:
        return record.get_reason_display()

    def render_actions(self, record: Suppression) -> str:
        if not self.can_lift:
            return ""
        # A POST without a form: htmx sends the CSRF header set on <body> (base.html).
        return format_html(
            '<button type="button" class="btn btn-sm btn-outline-primary" data-testid="lift-suppression" '
            'hx-post="{}" hx-confirm="{}" hx-target="#suppression-results" hx-swap="outerHTML">{}</button>',
            reverse("messaging:suppression_lift", args=[record.pk]),
            _("Send to %(address)s again? Lift it only once the address works again.")
            % {"address": record.address},
            _("Lift"),
        )


# People ---------------------------------------------------------------------------------------------


class PersonReceiverTable(tables.Table):
    """Every message one person was sent (the person page), newest first as the selector orders it."""

    subject = tables.Column(verbose_name=_("Subject"), empty_values=())
    context_type = tables.Column(verbose_name=_("Context type"), accessor="message__context_type")
    status = tables.Column(verbose_name=_("Status"))
    sent_datetime = LocalTimeColumn(verbose_name=_("Sent"))
    attempts = tables.Column(verbose_name=_("Attempts"), empty_values=())
    details = tables.Column(
        verbose_name=ACTIONS_HEADER, empty_values=(), attrs={"td": {"class": "text-end text-nowrap"}}
    )

    class Meta:
        model = MessageReceiver
        fields = ()
        sequence = ("subject", "context_type", "status", "sent_datetime", "attempts", "details")
        orderable = False
        attrs = {"class": "table table-sm table-hover align-middle", "id": "person-receiver-table"}
        row_attrs = {
            "id": lambda record: f"person-receiver-{record.pk}",
            "data-receiver-id": lambda record: record.pk,
            "data-status": lambda record: record.status,
        }
        empty_text = _("No messages match.")

    # The same status and attempts cells as on a message's status page.
    render_status = ReceiverTable.render_status
    render_attempts = ReceiverTable.render_attempts

    def render_subject(self, record: MessageReceiver) -> str:
        # The subject this person got (in their language, personalised); a receiver not
        # prepared yet has none, so the message's own subject stands in.
        return record.subject or record.message.display_subject

    def render_context_type(self, record: MessageReceiver) -> str:
        return record.message.get_context_type_display()

    def render_details(self, record: MessageReceiver) -> str:
        return format_html(
            '<a href="{}" class="btn btn-sm btn-outline-secondary" hx-boost="false" '
            'data-testid="receiver-detail-link">{}</a>',
            reverse("messaging:receiver_detail", args=[record.pk]),
            _("Details"),
        )


# Message templates ----------------------------------------------------------------------------------


class TemplateTable(tables.Table):
    """Message templates (the templates page): open one to edit it, or start a new message from it."""

    name = tables.Column(verbose_name=_("Name"))
    context_type = tables.Column(verbose_name=_("Context type"))
    languages = tables.Column(verbose_name=_("Languages"), empty_values=(), orderable=False)
    updated_datetime = LocalTimeColumn(verbose_name=_("Updated"))
    created_by = tables.Column(verbose_name=_("Author"), order_by=("created_by__username",))
    actions = actions_column()

    class Meta:
        model = MessageTemplate
        fields = ()
        sequence = ("name", "context_type", "languages", "updated_datetime", "created_by", "actions")
        order_by = ("name",)
        attrs = {"class": "table table-hover align-middle", "id": "template-table"}
        row_attrs = {
            "id": lambda record: f"template-{record.pk}",
            "data-template-id": lambda record: record.pk,
        }
        empty_text = _("No templates yet. Save a draft as a template, or create one here.")

    def __init__(self, *args, csrf_token: str = "", **kwargs):
        self.csrf_token = csrf_token  # the rows' "New message" buttons are real forms
        super().__init__(*args, **kwargs)

    def render_name(self, record: MessageTemplate) -> str:
        return format_html(
            '<a href="{}" hx-boost="false" data-testid="template-link">{}</a>',
            reverse("messaging:template_edit", args=[record.pk]),
            record.name,
        )

    def render_context_type(self, record: MessageTemplate) -> str:
        return record.get_context_type_display()

    def render_languages(self, record: MessageTemplate) -> str:
        codes = message_templates.content_languages(record.composed_content)
        return ", ".join(language_label(code) for code in codes) or "—"

    def render_created_by(self, value) -> str:
        return value.get_full_name() or value.get_username()

    def render_actions(self, record: MessageTemplate) -> str:
        start = format_html(
            '<form method="post" action="{}" class="d-inline">'
            '<input type="hidden" name="csrfmiddlewaretoken" value="{}">'
            '<input type="hidden" name="template" value="{}">'
            '<button type="submit" class="btn btn-sm btn-primary" data-testid="start-from-template">'
            "{}{}</button></form>",
            reverse("messaging:template_start"),
            self.csrf_token,
            record.pk,
            _("New message"),
            _visually_hidden(f": {record.name}"),
        )
        delete = format_html(
            '<a href="{}" class="btn btn-sm btn-outline-danger" hx-boost="false" '
            'data-testid="template-delete-link">{}{}</a>',
            reverse("messaging:template_delete", args=[record.pk]),
            _("Delete"),
            _visually_hidden(f": {record.name}"),
        )
        return format_html(
            '<div class="d-flex flex-wrap justify-content-end gap-1">{}{}</div>', start, delete
        )
