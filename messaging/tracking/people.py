"""People (issue 13, "what did we send to this student?"): find users by name, username or
address, and read what was sent to one of them. Read only, like messaging/tracking/selectors.py.

The search itself is `messaging.tracking.search.matching_users` (re-exported here): one rule
for the People page, the compose page's recipient search (active users only) and the status
page's receiver search; here former students are found as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db.models import Count, IntegerField, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404

from messaging.engine import recipients
from messaging.models import MessageReceiver, UserEmail
from messaging.preferences import modes as preferences
from messaging.tracking.filters import PersonReceiverFilter
from messaging.tracking.search import MAX_WORDS as MAX_WORDS
from messaging.tracking.search import matching_users
from messaging.tracking.search import query_words as query_words

User = get_user_model()

PEOPLE_LISTED = 25


def _received_count() -> Coalesce:
    # MessageReceiver.user has no reverse relation (related_name="+"), hence the subquery.
    counts = (
        MessageReceiver.objects.filter(user=OuterRef("pk"))
        .order_by()
        .values("user")
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(counts, output_field=IntegerField()), 0)


def _with_recipient_data(users: QuerySet) -> QuerySet:
    """Profile and notification addresses loaded with the users, in the attribute
    messaging.engine.recipients reads (so notification_address() costs no query per user)."""
    return users.select_related("messaging_profile").prefetch_related(
        Prefetch(
            "messaging_emails",
            queryset=UserEmail.objects.filter(use_for_notifications=True).order_by("id"),
            to_attr="notification_emails",
        )
    )


@dataclass(frozen=True)
class FoundPerson:
    user: object
    address: str
    received_count: int


@dataclass(frozen=True)
class PeopleFound:
    query: str
    people: list[FoundPerson]
    total: int

    @property
    def more(self) -> int:
        """How many matched beyond those listed (staff refine the search to see them)."""
        return self.total - len(self.people)


def search_people(query: str, limit: int = PEOPLE_LISTED) -> PeopleFound:
    """The first `limit` people matching `query`, by name, with their address and how many
    messages were sent to them."""
    query = query.replace("\0", "").strip()
    users = matching_users(query)
    listed = (
        _with_recipient_data(users)
        .annotate(received_count=_received_count())
        .order_by("last_name", "first_name", "username", "pk")[:limit]
    )
    people = [
        FoundPerson(user, recipients.notification_address(user), user.received_count) for user in listed
    ]
    total = len(people) if len(people) < limit else users.count()
    return PeopleFound(query=query, people=people, total=total)


# One person ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    user: object
    address: str
    language: str
    # How they get each context type: [(ContextTypeConfig, mode)], enforced ones always immediate.
    preferences: list = field(default_factory=list)
    time_zone: str = ""  # their digests' zone ("" : the site's)
    links_revoked_at: datetime | None = None  # the links of emails sent before stop working


def get_person(pk: int) -> Person:
    user = get_object_or_404(_with_recipient_data(User.objects.all()), pk=pk)
    language = recipients.preferred_language(user)
    profile = getattr(user, "messaging_profile", None)
    return Person(
        user=user,
        address=recipients.notification_address(user),
        language=language,
        preferences=preferences.choices_of(user),
        time_zone=profile.time_zone if profile else "",
        links_revoked_at=profile.links_revoked_at if profile else None,
    )


def person_receiver_filter(user, params) -> PersonReceiverFilter:
    """Every receiver of `user`, newest first, filterable by context type and status. The table
    shows no content: the rendered bodies stay in the database (the receiver's page shows them)."""
    receivers = (
        MessageReceiver.objects.filter(user=user)
        .select_related("message")
        .defer(
            "message_content_html",
            "message_content_plain",
            "status_data",
            "metadata",
            "message__virtual_message_receivers",
            "message__status_data",
            "message__metadata",
        )
        .with_uncertain_flag()
        .order_by("-created_datetime", "-id")
    )
    return PersonReceiverFilter(params, queryset=receivers)
