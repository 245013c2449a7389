"""FilterSets for the staff UI (messages list, receivers of a message)."""

from __future__ import annotations

import django_filters
from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from django.utils.translation import gettext_lazy as _

from messaging.models import Message, MessageReceiver, MessageTemplate, Suppression
from messaging.preferences import context_types
from messaging.tracking import search

User = get_user_model()


def _authors(request) -> QuerySet:
    return User.objects.filter(pk__in=Message.objects.values("created_by")).order_by("username")


class DateInput(forms.DateInput):
    input_type = "date"


# Choices in the order a send moves through them, named as the status badges name them.
MESSAGE_STATUS_CHOICES = [
    (Message.Status.DRAFT, _("Draft")),
    (Message.Status.SCHEDULED, _("Scheduled")),
    (Message.Status.QUEUED, _("Queued")),
    (Message.Status.PREPARING, _("Preparing")),
    (Message.Status.SENDING, _("Sending")),
    (Message.Status.BLOCKED, _("Delivery blocked")),
    (Message.Status.PAUSED, _("Paused")),
    (Message.Status.SENT, _("Sent to everyone")),
    (Message.Status.ERROR, _("Sent with failures, or failed")),
    (Message.Status.CANCELLED, _("Cancelled")),
    (Message.Status.EXPIRED, _("Expired")),
]
RECEIVER_STATUS_CHOICES = [
    (MessageReceiver.Status.NOT_SENT, _("Not sent yet")),
    (MessageReceiver.Status.SENT, _("Sent")),
    (MessageReceiver.Status.FAILED, _("Failed, retrying or permanent")),
    (MessageReceiver.Status.ERROR, _("Failed, retries used up")),
    (MessageReceiver.Status.CANCELLED, _("Cancelled or expired")),
    (MessageReceiver.Status.HELD, _("Held for digest")),
    (MessageReceiver.Status.SKIPPED, _("Skipped by preference")),
]
PERMANENT, TEMPORARY = "permanent", "temporary"
FAILURE_CHOICES = [(TEMPORARY, _("Temporary: may succeed")), (PERMANENT, _("Permanent: fails again"))]


class BootstrapFilterSet(django_filters.FilterSet):
    """Bootstrap classes on every widget, so templates can render `{{ field }}` as is.
    (Choice filters offer "Any": settings.FILTERS_EMPTY_CHOICE_LABEL.)"""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, field in self.form.fields.items():
            css = "form-select" if isinstance(field.widget, forms.Select) else "form-control"
            field.widget.attrs.setdefault("class", css)
            field.widget.attrs.setdefault("data-testid", f"filter-{name}")


class MessageFilter(BootstrapFilterSet):
    q = django_filters.CharFilter(
        label=_("Search"),
        method="filter_search",
        widget=forms.TextInput(attrs={"placeholder": _("Subject or content"), "type": "search"}),
    )
    status = django_filters.ChoiceFilter(label=_("Status"), choices=MESSAGE_STATUS_CHOICES)
    context_type = django_filters.ChoiceFilter(label=_("Context type"), choices=context_types.choices)
    created_by = django_filters.ModelChoiceFilter(label=_("Author"), queryset=_authors)
    created_after = django_filters.DateFilter(
        label=_("Created from"), field_name="created_datetime", lookup_expr="date__gte", widget=DateInput
    )
    created_before = django_filters.DateFilter(
        label=_("Created until"), field_name="created_datetime", lookup_expr="date__lte", widget=DateInput
    )

    class Meta:
        model = Message
        fields = ["q", "status", "context_type", "created_by", "created_after", "created_before"]

    def filter_search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        condition = Q()
        for code, _name in settings.LANGUAGES:
            condition |= Q(**{f"composed_content__{code}__subject__icontains": value})
            condition |= Q(**{f"composed_content__{code}__body__icontains": value})
        return queryset.filter(condition)


# A receiver search matching more users than this filters by a subquery instead of their ids.
USERS_LISTED = 1000


class ReceiverFilter(BootstrapFilterSet):
    q = django_filters.CharFilter(
        label=_("User or email"),
        method="filter_search",
        widget=forms.TextInput(attrs={"placeholder": _("Name, username or address"), "type": "search"}),
    )
    status = django_filters.ChoiceFilter(label=_("Status"), choices=RECEIVER_STATUS_CHOICES)
    failure = django_filters.ChoiceFilter(
        label=_("Failure"), choices=FAILURE_CHOICES, method="filter_failure"
    )
    outcome = django_filters.ChoiceFilter(
        label=_("After sending"), field_name="delivery_outcome", choices=MessageReceiver.Outcome.choices
    )
    language = django_filters.ChoiceFilter(label=_("Language"), choices=settings.LANGUAGES)

    class Meta:
        model = MessageReceiver
        fields = ["q", "status", "failure", "outcome", "language"]

    def filter_search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        # The rule the People and compose pages use (full names in any word order, usernames,
        # addresses), on users: the receivers of those found, through the index on user. A
        # substring of every receiver's address would mean reading all of a big message.
        users = search.matching_user_ids(value, past_addresses=False)
        # Found once, as ids when there are not many: the page's queries (its ids, the count)
        # then do not search again, and PostgreSQL reads each user's receivers by index.
        ids = [row["pk"] for row in users[: USERS_LISTED + 1]]
        return queryset.filter(user__in=ids if len(ids) <= USERS_LISTED else users)

    def filter_failure(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        failed = queryset.resendable()
        permanent = failed.failed_permanently()
        return permanent if value == PERMANENT else failed.exclude(pk__in=permanent.values("pk"))


def search_filter(label, field_name: str, placeholder) -> django_filters.CharFilter:
    """A search box matching part of one field."""
    widget = forms.TextInput(attrs={"placeholder": placeholder, "type": "search"})
    return django_filters.CharFilter(
        label=label, field_name=field_name, lookup_expr="icontains", widget=widget
    )


class SuppressionFilter(BootstrapFilterSet):
    q = search_filter(_("Address"), "address", _("Part of an address"))
    reason = django_filters.ChoiceFilter(label=_("Reason"), choices=Suppression.Reason.choices)

    class Meta:
        model = Suppression
        fields = ["q", "reason"]


class PersonReceiverFilter(BootstrapFilterSet):
    """What was sent to one person (messaging.tracking.people), by kind of message and status."""

    context_type = django_filters.ChoiceFilter(
        label=_("Context type"),
        field_name="message__context_type",
        choices=context_types.choices,
        empty_label=_("Any"),
    )
    status = django_filters.ChoiceFilter(
        label=_("Status"), choices=RECEIVER_STATUS_CHOICES, empty_label=_("Any")
    )

    class Meta:
        model = MessageReceiver
        fields = ["context_type", "status"]


class TemplateFilter(BootstrapFilterSet):
    """Message templates by name and context type."""

    q = search_filter(_("Name"), "name", _("Part of a name"))
    context_type = django_filters.ChoiceFilter(
        label=_("Context type"), choices=context_types.choices, empty_label=_("Any")
    )

    class Meta:
        model = MessageTemplate
        fields = ["q", "context_type"]
