"""People (issue 13, "what did we send to this student?"): find users by name, username or
address, and read what was sent to one of them. Read only, like messaging/tracking/selectors.py.

`matching_users` is the search itself, free of any page, so that the compose page's recipient
search can use it too (it then keeps only active users; here former students are found as well).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404

from messaging.engine import recipients
from messaging.models import MessageReceiver, UserEmail
from messaging.preferences import modes as preferences
from messaging.tracking.filters import PersonReceiverFilter

User = get_user_model()

PEOPLE_LISTED = 25
# Each word adds its own conditions (and subqueries): a pasted paragraph must not become a
# query with hundreds of them. No name, username or address needs more words than this.
MAX_WORDS = 8


# Search ---------------------------------------------------------------------------------------------


def query_words(query: str) -> list[str]:
    """The distinct words of a search, without NUL (PostgreSQL refuses it in a text parameter)."""
    words = query.replace("\0", "").split()
    return list(dict.fromkeys(words))[:MAX_WORDS]


def _word_matches(word: str, past_addresses: bool) -> Q:
    """A user whose first name, last name, username or an address of theirs contains `word`."""
    condition = (
        Q(first_name__icontains=word)
        | Q(last_name__icontains=word)
        | Q(username__icontains=word)
        | Q(email__icontains=word)
        | Q(Exists(UserEmail.objects.filter(user=OuterRef("pk"), email__icontains=word)))
    )
    if past_addresses and "@" in word:
        # Addresses the engine sent to before the user changed theirs. The receivers table is the
        # one big table (100,000 rows per message) and has no index a substring search can use,
        # so it is read only for a word that is (part of) an address, not for every name typed.
        condition |= Q(pk__in=MessageReceiver.objects.filter(send_to__icontains=word).values("user_id"))
    return condition


def matching_users(query: str, past_addresses: bool = True) -> QuerySet:
    """Users (active or not) matching every word of `query`, in any order: "Sam Staff",
    "staff sam", "sam st", a username or an address. None for a blank query. Unordered.
    `past_addresses`: also addresses the engine sent to before a user changed theirs (a scan of
    the receivers table; the compose search, run on every keystroke, leaves it out)."""
    words = query_words(query)
    if not words:
        return User.objects.none()
    condition = Q()
    for word in words:
        condition &= _word_matches(word, past_addresses)
    return User.objects.filter(condition)


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
