"""Read-side queries for the staff UI: filtered lists, recipient summaries, progress, failures."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db.models import Case, Count, Exists, IntegerField, Max, OuterRef, Q, QuerySet, Value, When
from django.db.models.functions import TruncWeek
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.translation import get_language

from messaging.compose import composing
from messaging.engine import recipients
from messaging.feedback import suppressions
from messaging.models import DeliveryMode, Message, MessageReceiver, UserEmail, is_suppressed
from messaging.preferences import context_types
from messaging.preferences import modes as preferences
from messaging.tracking import people
from messaging.tracking.filters import MessageFilter, ReceiverFilter

User = get_user_model()

SEARCH_LIMIT = 10
# A group's members listed on the compose page (the rest are counted).
GROUP_MEMBERS_LISTED = 50
SAMPLE_CHOICES_LIMIT = 50
NO_ADDRESS_LISTED = 20


# Messages -----------------------------------------------------------------------------------------


def messages_with_counts() -> QuerySet:
    return Message.objects.select_related("created_by").annotate(
        receiver_total=Count("receivers"),
        receiver_sent=Count("receivers", filter=Q(receivers__status=MessageReceiver.Status.SENT)),
        receiver_failed=Count(
            "receivers",
            filter=Q(receivers__status__in=[MessageReceiver.Status.FAILED, MessageReceiver.Status.ERROR]),
        ),
        # Failed, or sent and then bounced, rejected or marked as spam (the list's label says it).
        receiver_not_delivered=Count(
            "receivers",
            filter=Q(receivers__status__in=MessageReceiver.RESENDABLE)
            | Q(
                receivers__status=MessageReceiver.Status.SENT,
                receivers__delivery_outcome__in=MessageReceiver.UNDELIVERED,
            ),
        ),
    )


def message_filter(params) -> MessageFilter:
    return MessageFilter(params, queryset=messages_with_counts())


def get_message(pk: int) -> Message:
    return get_object_or_404(Message.objects.select_related("created_by"), pk=pk)


def get_message_for_status(pk: int) -> Message:
    """Without the frozen recipient ids: a megabyte of JSON at 100,000 receivers, parsed on
    every poll, and the status page does not show them."""
    return get_object_or_404(
        Message.objects.select_related("created_by").defer("virtual_message_receivers"), pk=pk
    )


def get_receiver(pk: int) -> MessageReceiver:
    return get_object_or_404(
        MessageReceiver.objects.select_related("user", "message").defer("message__virtual_message_receivers"),
        pk=pk,
    )


def receiver_filter(message: Message, params) -> ReceiverFilter:
    # The table shows no content: leave the (large) rendered bodies and JSON in the database.
    receivers = MessageReceiver.objects.filter(message=message)
    # A message's receivers start at its first receiver's id. Saying so keeps PostgreSQL from
    # paging through the primary key past every older message's receivers (it cannot know they
    # all come first) when it orders by id.
    first_id = receivers.order_by("id").values_list("id", flat=True).first()
    if first_id is not None:
        receivers = receivers.filter(id__gte=first_id)
    queryset = (
        receivers.select_related("user")
        .defer("message_content_html", "message_content_plain", "status_data", "metadata")
        .with_uncertain_flag()
        .annotate(address_suppressed=is_suppressed())  # a row offers Resend only if it can work
    )
    return ReceiverFilter(params, queryset=queryset)


def audit_trail(message: Message) -> QuerySet:
    return message.audit_events.select_related("actor", "receiver")


# Recipients ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundRecipient:
    user: object
    address: str


@dataclass(frozen=True)
class RecipientsFound:
    """What the compose page's search offers: the first users and groups, and how many matched."""

    query: str
    users: list[FoundRecipient]
    user_total: int
    groups: list
    group_total: int

    @property
    def more_users(self) -> int:
        return self.user_total - len(self.users)

    @property
    def more_groups(self) -> int:
        return self.group_total - len(self.groups)


def _found_recipients(ids: list[int]) -> list[FoundRecipient]:
    """The users of `ids`, in that order, with their notification address (three queries)."""
    loaded = {user.pk: user for user in recipients.users_with_recipient_data(ids)}
    users = [loaded[pk] for pk in ids if pk in loaded]
    return [FoundRecipient(user, recipients.notification_address(user)) for user in users]


def _relevance(words: list[str], query: str) -> Case:
    """How well a user matches: each word that starts their first name, last name or username
    counts, and the whole query being their username or address counts most ("ann" finds Ann
    Berg before Joanna Lee; "sam" the user "sam" before everyone named Sam)."""
    exact = (
        Q(username__iexact=query)
        | Q(email__iexact=query)
        | Q(Exists(UserEmail.objects.filter(user=OuterRef("pk"), email__iexact=query)))
    )
    score = Case(When(exact, then=Value(len(words) + 1)), default=Value(0), output_field=IntegerField())
    for word in words:
        starts = (
            Q(first_name__istartswith=word) | Q(last_name__istartswith=word) | Q(username__istartswith=word)
        )
        score += Case(When(starts, then=Value(1)), default=Value(0), output_field=IntegerField())
    return score


def _total(listed: list, limit: int, queryset: QuerySet) -> int:
    """How many `queryset` has: only counted when the first `limit` filled the list."""
    return len(listed) if len(listed) < limit else queryset.count()


def search_recipients(query: str, limit: int = SEARCH_LIMIT) -> RecipientsFound:
    """Active users matching every word of `query` in any order (people.matching_users: full
    name, username, address), most relevant first, then by name; and groups whose name holds
    every word. Inactive users are not offered: they are never sent to."""
    words = people.query_words(query)
    query = " ".join(words)
    if not words:
        return RecipientsFound(query="", users=[], user_total=0, groups=[], group_total=0)
    users = people.matching_users(query, past_addresses=False).filter(is_active=True)
    ids = list(
        users.annotate(relevance=_relevance(words, query))
        .order_by("-relevance", "last_name", "first_name", "username", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    found = _found_recipients(ids)
    condition = Q()
    for word in words:
        condition &= Q(name__icontains=word)
    groups = Group.objects.filter(condition)
    listed_groups = list(groups.annotate(member_count=_active_member_count()).order_by("name", "pk")[:limit])
    return RecipientsFound(
        query=query,
        users=found,
        user_total=_total(ids, limit, users),
        groups=listed_groups,
        group_total=_total(listed_groups, limit, groups),
    )


def _active_member_count() -> Count:
    return Count("user", filter=Q(user__is_active=True))


@dataclass(frozen=True)
class GroupMembers:
    group: Group
    members: list[FoundRecipient]
    total: int

    @property
    def more(self) -> int:
        return self.total - len(self.members)


def group_members(pk: int, limit: int = GROUP_MEMBERS_LISTED) -> GroupMembers:
    """The active members of a group (those a message to it reaches), by name, with the address
    they would be sent to; the first `limit` of them and how many there are."""
    group = get_object_or_404(Group, pk=pk)
    members = User.objects.filter(groups=group, is_active=True)
    by_name = members.order_by("last_name", "first_name", "username", "pk")
    ids = list(by_name.values_list("pk", flat=True)[:limit])
    return GroupMembers(group=group, members=_found_recipients(ids), total=_total(ids, limit, members))


def users_by_ids(ids) -> list:
    return list(User.objects.filter(pk__in=list(ids)).order_by("username"))


def groups_by_ids(ids) -> list:
    return list(Group.objects.filter(pk__in=list(ids)).annotate(member_count=Count("user")).order_by("name"))


@dataclass
class RecipientSummary:
    total: int = 0
    # How the recipients get a message of the chosen context type (messaging.preferences.modes):
    # {mode: count}, empty when no context type was given.
    modes: dict[str, int] = field(default_factory=dict)
    # Everyone gets it immediately whatever they chose: the type is enforced, or it is important.
    enforced: bool = False
    important: bool = False
    per_language: dict[str, int] = field(default_factory=dict)
    without_address: list = field(default_factory=list)
    without_address_count: int = 0
    # (user, Suppression) for recipients whose address is on the suppression list.
    suppressed: list = field(default_factory=list)
    suppressed_count: int = 0

    @property
    def language_rows(self) -> list[tuple[str, str, int]]:
        names = dict(settings.LANGUAGES)
        return [(code, names.get(code, code), n) for code, n in self.per_language.items() if n]

    @property
    def immediately(self) -> int:
        return self.modes.get(DeliveryMode.IMMEDIATELY, 0)

    @property
    def in_digest(self) -> int:
        return self.modes.get(DeliveryMode.DAILY, 0) + self.modes.get(DeliveryMode.WEEKLY, 0)

    @property
    def turned_off(self) -> int:
        return self.modes.get(DeliveryMode.OFF, 0)

    @property
    def more_without_address(self) -> int:
        return self.without_address_count - len(self.without_address)

    @property
    def more_suppressed(self) -> int:
        return self.suppressed_count - len(self.suppressed)


def recipient_summary(
    user_ids, group_ids, context_type: str = "", ignore_preferences: bool = False
) -> RecipientSummary:
    """Who the chosen users and groups reach, per language, without an address or suppressed;
    with a context type also how they get it (immediately, in a digest, not at all)."""
    resolved = recipients.resolve_user_ids(user_ids, group_ids)
    summary = RecipientSummary(
        total=len(resolved), per_language={code: 0 for code in recipients.supported_languages()}
    )
    if context_type:
        summary.enforced = context_types.get(context_type).enforced
        summary.important = ignore_preferences
        summary.modes = preferences.mode_counts(resolved, context_type, ignore_preferences=ignore_preferences)
    for batch in recipients.iter_users_in_batches(resolved, 500):
        addresses = {user.pk: recipients.notification_address(user) for user in batch}
        suppressed = suppressions.suppressions_for(addresses.values())
        for user in batch:
            language = recipients.preferred_language(user)
            summary.per_language[language] = summary.per_language.get(language, 0) + 1
            address = addresses[user.pk]
            if not address:
                summary.without_address_count += 1
                if len(summary.without_address) < NO_ADDRESS_LISTED:
                    summary.without_address.append(user)
            elif (suppression := suppressed.get(suppressions.normalise(address))) is not None:
                summary.suppressed_count += 1
                if len(summary.suppressed) < NO_ADDRESS_LISTED:
                    summary.suppressed.append((user, suppression))
    return summary


def message_recipient_summary(message: Message) -> RecipientSummary:
    return recipient_summary(
        recipients.chosen_user_ids(message),
        recipients.chosen_group_ids(message),
        message.context_type,
        message.ignore_preferences,
    )


# Preview -------------------------------------------------------------------------------------------


@dataclass
class PreviewColumn:
    language: str
    language_name: str
    preview: composing.Preview
    candidates: list
    recipient_count: int
    without_address_count: int


def _users_per_language(message: Message) -> dict[str, list]:
    """Resolved recipients grouped by language (at most SAMPLE_CHOICES_LIMIT kept per language)."""
    grouped: dict[str, list] = {code: [] for code in recipients.supported_languages()}
    counts: Counter = Counter()
    no_address: Counter = Counter()
    for batch in recipients.iter_users_in_batches(recipients.resolved_user_ids(message), 500):
        for user in batch:
            language = recipients.preferred_language(user)
            counts[language] += 1
            if not recipients.notification_address(user):
                no_address[language] += 1
            if len(grouped.setdefault(language, [])) < SAMPLE_CHOICES_LIMIT:
                grouped[language].append(user)
    return {"users": grouped, "counts": counts, "no_address": no_address}


def preview_columns(message: Message, chosen_samples: dict[str, str], fallback_user) -> list[PreviewColumn]:
    """One column per language in use (every language when nobody is chosen yet)."""
    data = _users_per_language(message)
    languages = [code for code in recipients.supported_languages() if data["counts"][code]]
    if not languages:
        languages = recipients.supported_languages()
    names = dict(settings.LANGUAGES)
    columns = []
    for language in languages:
        candidates = data["users"].get(language, [])
        sample = _pick_sample(candidates, chosen_samples.get(language), fallback_user)
        columns.append(
            PreviewColumn(
                language=language,
                language_name=str(names.get(language, language)),
                preview=composing.preview(message, language, sample),
                candidates=candidates,
                recipient_count=data["counts"][language],
                without_address_count=data["no_address"][language],
            )
        )
    return columns


def _pick_sample(candidates: list, chosen: str | None, fallback_user):
    for user in candidates:
        if str(user.pk) == chosen:
            return user
    if chosen and chosen.isdigit():
        # A recipient beyond the first SAMPLE_CHOICES_LIMIT may be asked for by id.
        user = recipients.users_with_recipient_data([int(chosen)]).first()
        if user is not None:
            return user
    with_address = [user for user in candidates if recipients.notification_address(user)]
    return (with_address or candidates or [fallback_user])[0]


# Status -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    counts: dict[str, int]
    total: int
    done: int
    percent: int
    rate_per_minute: float | None
    seconds_left: int | None

    @property
    def sent_percent(self) -> int:
        return round(100 * self.counts.get(MessageReceiver.Status.SENT, 0) / self.total) if self.total else 0

    @property
    def by_preference(self) -> int:
        """Receivers the recipients' preferences settled: skipped, or held for their digest."""
        Status = MessageReceiver.Status
        return self.counts.get(Status.SKIPPED, 0) + self.counts.get(Status.HELD, 0)

    @property
    def by_preference_percent(self) -> int:
        return min(round(100 * self.by_preference / self.total), self.percent) if self.total else 0

    @property
    def failed_percent(self) -> int:
        # Skipped and held receivers are done but not failed: they get their own (grey) part.
        return max(self.percent - self.sent_percent - self.by_preference_percent, 0)

    @property
    def time_left(self) -> tuple[int, int] | None:
        """(minutes, seconds) left, when it can be estimated."""
        return divmod(self.seconds_left, 60) if self.seconds_left is not None else None


def sending_progress(message: Message, counts: dict[str, int], now: datetime | None = None) -> Progress:
    total = sum(counts.values())
    not_sent = counts.get(MessageReceiver.Status.NOT_SENT, 0)
    done = total - not_sent
    sent = counts.get(MessageReceiver.Status.SENT, 0)
    percent = round(100 * done / total) if total else (100 if message.status == Message.Status.SENT else 0)
    rate, seconds_left = None, None
    started = _parse_datetime(message.status_data.get("sending_started"))
    # Skipped and held receivers are settled while preparing, not sent: they would inflate the rate.
    attempted = (
        done - counts.get(MessageReceiver.Status.SKIPPED, 0) - counts.get(MessageReceiver.Status.HELD, 0)
    )
    if started and attempted:
        elapsed = max(((now or timezone.now()) - started).total_seconds(), 1.0)
        per_second = attempted / elapsed
        rate = round(per_second * 60, 1) if sent or attempted else None
        if not_sent and per_second > 0 and message.status == Message.Status.SENDING:
            seconds_left = round(not_sent / per_second)
    return Progress(
        counts=counts,
        total=total,
        done=done,
        percent=percent,
        rate_per_minute=rate,
        seconds_left=seconds_left,
    )


def _parse_datetime(value) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def failure_groups(message: Message, counts: dict[str, int] | None = None) -> list[tuple[str, bool, int]]:
    """The last error of each failed/error receiver, grouped, and whether it was permanent:
    [("451 4.3.0 Try again later", False, 12), ("550 5.1.1 No such user", True, 3), ...].

    With `counts` (the published receiver counts the page shows): none when they count no
    failure, else kept in Django's cache while the failed and error counts stay the same (for
    VERSION_MAX_AGE_SECONDS at most): a page that 20 staff watch while it sends is re-rendered
    on every change, and 50,000 failures are grouped once per change, not once per watcher."""
    if counts is None:
        return _failure_groups(message)
    failed, error = counts.get(MessageReceiver.Status.FAILED, 0), counts.get(MessageReceiver.Status.ERROR, 0)
    if not failed + error:
        return []
    # The creation time as well: a test database hands a rolled-back message's id out again.
    key = f"messaging:failure-groups:{message.pk}:{message.created_datetime.timestamp()}:{failed}:{error}"
    groups = cache.get(key)
    if groups is None:
        groups = _failure_groups(message)
        cache.set(key, groups, VERSION_MAX_AGE_SECONDS)
    return groups


def _failure_groups(message: Message) -> list[tuple[str, bool, int]]:
    # Read from the receiver_failure_reason index alone.
    rows = (
        MessageReceiver.objects.filter(message=message, status__in=MessageReceiver.RESENDABLE)
        .order_by()
        .values_list("last_error", "permanent_failure")
        .annotate(n=Count("*"))
        .order_by("-n", "last_error", "permanent_failure")
    )
    return [(reason or "?", permanent, n) for reason, permanent, n in rows]


def outcome_counts(message: Message) -> dict[str, int]:
    """Receivers per delivery outcome (delivered, bounced, ..., suppressed); {} if none."""
    rows = (
        # "> ''", not "!= ''": a range on the index (message, delivery_outcome, ...) reads only
        # the receivers with an outcome, not all of a 100,000-receiver message's.
        MessageReceiver.objects.filter(message=message, delivery_outcome__gt="")
        .order_by()
        .values_list("delivery_outcome")
        .annotate(n=Count("*"))
    )
    counts = dict(rows)
    return {outcome: counts.get(outcome, 0) for outcome in MessageReceiver.Outcome.values} if counts else {}


def bounce_groups(message: Message) -> list[tuple[str, str, str, int]]:
    """Emails that did not reach their recipient after all, grouped by outcome and the server's
    reply: [("hard_bounce", "Bounced", "550 5.1.1 User unknown", 12), ...]."""
    rows = (
        MessageReceiver.objects.filter(message=message, delivery_outcome__in=MessageReceiver.UNDELIVERED)
        .order_by()
        .values_list("delivery_outcome", "outcome_detail")
        .annotate(n=Count("*"))
        .order_by("-n", "delivery_outcome", "outcome_detail")
    )
    labels = dict(MessageReceiver.Outcome.choices)
    return [(outcome, labels[outcome], detail or "?", n) for outcome, detail, n in rows]


def resendable_count(message: Message, not_delivered: int, outcomes: dict[str, int]) -> int:
    """What "Resend failed" would queue at most. The status page is polled every 2 s, so
    receivers are counted only when feedback touched this message (a bounce, a suppressed
    address); otherwise `not_delivered` (status.not_delivered, from published counts) says it."""
    if not not_delivered or not outcomes:
        return not_delivered
    return MessageReceiver.objects.filter(message=message).resendable().unsuppressed().count()


def held_by_workers(message: Message) -> bool:
    """Whether a worker still owns some receiver of the message (a live claim) or one is in
    flight: its result is still to be recorded, whatever the message's status (a message
    cancelled, paused or expired meanwhile lets its workers finish what they handed over)."""
    return _held_by_workers(MessageReceiver.objects.filter(message=message))


def _held_by_workers(receivers: QuerySet) -> bool:
    # Two small indexes (receiver_owned, receiver_in_flight) answer it.
    return (
        receivers.exclude(claimed_by="").leased().exists()
        or receivers.filter(in_flight_since__isnull=False).exists()
    )


# What can still change the status page's numbers: the page polls every few seconds while LIVE,
# slowly while RETRYING, and stops when neither.
LIVE, RETRYING = "live", "retrying"


def pending_change(message: Message) -> str | None:
    """LIVE while the message is in progress or scheduled (staff watching see it start), or a
    worker still holds a receiver; RETRYING when only automatic retries will move the counts;
    None when nothing will change them by itself."""
    return pending_change_of([message])


def pending_change_of(messages: Sequence[Message]) -> str | None:
    """pending_change of several messages at once (a page of the message list): LIVE when one
    is live, else RETRYING when one has retries pending; at most three queries for them all."""
    if not messages:
        return None
    if any(message.is_in_progress or message.is_scheduled for message in messages):
        return LIVE
    receivers = MessageReceiver.objects.filter(message__in=[message.pk for message in messages])
    if _held_by_workers(receivers):
        return LIVE
    return RETRYING if receivers.awaiting_retry().exists() else None


# A page is rendered afresh at least this often while it polls, whatever its version says: what
# the version does not follow (a retry that failed again without changing any count, a bounce
# reported meanwhile) shows within this time.
VERSION_MAX_AGE_SECONDS = 60


def status_version(message: Message, params, change: str | None, now: datetime | None = None) -> str:
    """What the status page shows, in a short text that changes whenever that may have: the
    message's status and everything the engine publishes on it (receiver counts, every ~2 s
    while delivering; the chart's timeline; pauses, blocks, errors), its schedule, its newest
    audit event, what can still change it, the page's own query (filters, page, order), the
    language, and the minute. The page carries it; a poll that brings the same one back is
    answered "nothing changed" without anything else being read (views.messages)."""
    # Counted beside the newest: PostgreSQL then reads this message's events through its index
    # rather than the whole audit log backwards in search of the newest.
    events = message.audit_events.order_by().aggregate(n=Count("id"), newest=Max("id"))
    moment = (now or timezone.now()).timestamp() // VERSION_MAX_AGE_SECONDS
    parts = [
        message.pk,
        message.status,
        json.dumps(message.status_data, sort_keys=True, default=str),
        str(message.send_at),
        str(message.expires_at),
        events["n"],
        events["newest"],
        change,
        params.urlencode(),
        get_language(),
        moment,
    ]
    return hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest()


def delivery_events(receiver: MessageReceiver) -> QuerySet:
    """The receiver's timeline of reports from the provider or mail servers, oldest first."""
    return receiver.delivery_events.defer("payload")


DIGEST_ITEMS_LISTED = 50


def digest_items(receiver: MessageReceiver, limit: int = DIGEST_ITEMS_LISTED) -> list[MessageReceiver]:
    """The held receivers a digest email carried (or carries, while it is being sent), oldest
    first: what a digest's receiver page lists."""
    return list(
        receiver.digested.select_related("message")
        .defer("message_content_html", "message_content_plain", "message__virtual_message_receivers")
        .order_by("id")[:limit]
    )


def sent_in_digests(message: Message) -> int:
    """How many of the message's receivers went (or are going) out in their user's digest."""
    return MessageReceiver.objects.filter(message=message, digest__isnull=False).count()


def blocked_state(message: Message) -> dict | None:
    """Why a blocked message is not being delivered, and when it is tried next."""
    if message.status != Message.Status.BLOCKED:
        return None
    blocked = message.status_data.get("blocked", {})
    return {
        "reason": blocked.get("reason", ""),
        "attempts": blocked.get("attempts", 0),
        "quota": blocked.get("quota", False),
        "since": _parse_datetime(blocked.get("since")),
        "next_attempt": _parse_datetime(blocked.get("next_attempt")),
    }


def message_errors(message: Message) -> list[dict]:
    return message.status_data.get("errors", [])


def paused_state(message: Message) -> dict | None:
    """Who paused a message and why (an automatic pause says which rule tripped)."""
    if message.status != Message.Status.PAUSED:
        return None
    paused = message.status_data.get("paused", {})
    by = User.objects.filter(pk=paused.get("by")).first() if paused.get("by") else None
    return {**paused, "since": _parse_datetime(paused.get("since")), "by": by}


def cancelled_counts(message: Message) -> dict[str, int]:
    """Cancelled receivers per reason, as last published (cancel/expire publish them)."""
    return message.status_data.get("summary", {}).get("cancelled", {})


# Matches beyond this are not counted: "more than 10,000 receivers match" (counting half a
# million, a language of a big message, would take longer than the rest of the page).
MATCHES_COUNTED = 10_000


def filtered_receiver_total(receivers: ReceiverFilter, limit: int = MATCHES_COUNTED) -> int | None:
    """How many receivers the status page's filters match, up to `limit` + 1 (more are not
    counted); None when no filter is set: the published counts say it. Ids only, through the
    filters' indexes, on this message's receivers only."""
    receivers.is_valid()  # cleaned_data: an invalid value filters nothing, so it counts as unset
    if not any(value not in (None, "") for value in receivers.form.cleaned_data.values()):
        return None
    return receivers.qs.order_by().values("pk")[: limit + 1].count()


# Charts --------------------------------------------------------------------------------------------


def sends_per_week(weeks: int = 12, now: datetime | None = None) -> list[dict]:
    """Emails the mail server accepted per ISO week (Monday to Sunday in the current time zone),
    the last `weeks` weeks up to `now`, oldest first: [{"week": date of its Monday, "sent": n}].
    A week without sends is 0. Counted on the receivers' sent_datetime (indexed), so a receiver
    sent again counts in the week of its last send."""
    now = timezone.localtime(now or timezone.now())
    first = (now - timedelta(days=now.weekday(), weeks=weeks - 1)).date()
    start = timezone.make_aware(datetime.combine(first, time.min))
    rows = (
        MessageReceiver.objects.filter(sent_datetime__gte=start, sent_datetime__lte=now)
        .annotate(week=TruncWeek("sent_datetime"))
        .order_by()
        .values("week")
        .annotate(n=Count("*"))
        .values_list("week", "n")
    )
    sent = {timezone.localtime(week).date(): n for week, n in rows}
    mondays = [first + timedelta(weeks=i) for i in range(weeks)]
    return [{"week": monday, "sent": sent.get(monday, 0)} for monday in mondays]
