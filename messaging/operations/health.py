"""Read-only figures for operators: the operations page, /metrics and `manage.py messaging_health`.

`health_report()` runs a fixed, small number of queries, each on an index (message status,
heartbeat seen time, receiver sent time, the receivers' (message, status, ...) indexes joined
from the few messages in flight), so it stays cheap with hundreds of thousands of receivers.

Figures (all at `now`):

- consumers: every consumer heartbeat row (rows unseen for a day are pruned); a consumer is
  alive when it beat within MESSAGING_HEARTBEAT_STALE_SECONDS.
- sweeper_last_run: when the sweeper last finished a run (its heartbeat), or None.
- message_counts: messages per in-flight status (scheduled, queued, preparing, sending, paused,
  blocked).
- receivers_waiting: not_sent receivers of messages that are sending (including any a worker
  holds right now).
- oldest_waiting_seconds: how long the oldest of those has waited, counted from the later of
  its creation and its message's start of sending (status_data["sending_started"]), so that
  receivers prepared ahead of a scheduled start do not count the time before it.
- sends_last_minute: receivers whose sent_datetime is within the last 60 seconds.
- failures: the 10 commonest `last_error` texts of failed/error receivers of messages created
  in the last 7 days, with their counts.
- overdue_seconds: the longest any due work has waited, the largest of
  * a scheduled message past its send_at (the sweeper should have started it),
  * a queued message since its queued_datetime (a worker should have prepared it),
  * waiting receivers: the oldest waiting receiver's wait, but counted at most from the last
    send anywhere, so a long send that is making progress is not overdue, while a send that
    has stopped (no consumer, lost task) is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from django.db.models import Count, Max, Min, OuterRef, Subquery
from django.utils import timezone
from django.utils.translation import gettext as _

from messaging import conf
from messaging.models import Heartbeat, Message, MessageReceiver
from messaging.operations.heartbeats import SWEEPER

Status = Message.Status
ReceiverStatus = MessageReceiver.Status

TRACKED_STATUSES = (
    Status.SCHEDULED,
    Status.QUEUED,
    Status.PREPARING,
    Status.SENDING,
    Status.PAUSED,
    Status.BLOCKED,
)
FAILURE_DAYS = 7
FAILURE_REASONS = 10
SENDS_WINDOW = timedelta(seconds=60)


@dataclass(frozen=True)
class ConsumerBeat:
    name: str
    started: datetime
    seen: datetime
    age_seconds: float
    alive: bool
    details: dict = field(default_factory=dict)


@dataclass
class HealthReport:
    now: datetime
    stale_seconds: int
    max_wait_seconds: int
    consumers: list[ConsumerBeat]
    sweeper_last_run: datetime | None
    message_counts: dict[str, int]
    receivers_waiting: int
    oldest_waiting_seconds: float | None
    sends_last_minute: int
    last_send: datetime | None
    failures: list[tuple[str, bool, int]]
    overdue_scheduled_seconds: float | None
    overdue_queued_seconds: float | None
    overdue_receivers_seconds: float | None

    @property
    def consumers_alive(self) -> int:
        return sum(c.alive for c in self.consumers)

    @property
    def sweeper_age_seconds(self) -> float | None:
        return _seconds(self.now, self.sweeper_last_run) if self.sweeper_last_run else None

    @property
    def overdue_seconds(self) -> float:
        """The longest any due work has waited (0 when nothing is due)."""
        waits = (self.overdue_scheduled_seconds, self.overdue_queued_seconds, self.overdue_receivers_seconds)
        return max((w for w in waits if w is not None), default=0.0)

    @property
    def failure_days(self) -> int:
        return FAILURE_DAYS

    def problems(self) -> list[str]:
        """Why the engine is not healthy, one sentence each (empty when healthy)."""
        found = []
        if not self.consumers_alive:
            found.append(
                _("No consumer is alive: none has sent a heartbeat in the last %(seconds)d seconds.")
                % {"seconds": self.stale_seconds}
            )
        limit = self.max_wait_seconds
        overdue = [
            (
                self.overdue_scheduled_seconds,
                _("A scheduled message has waited %(waited)s past its send time (limit %(limit)s)."),
            ),
            (
                self.overdue_queued_seconds,
                _("A queued message has waited %(waited)s for a worker (limit %(limit)s)."),
            ),
            (
                self.overdue_receivers_seconds,
                _("Receivers have waited %(waited)s without anything being sent (limit %(limit)s)."),
            ),
        ]
        for waited, text in overdue:
            if waited is not None and waited > limit:
                found.append(text % {"waited": duration(waited), "limit": duration(limit)})
        return found

    @property
    def healthy(self) -> bool:
        return not self.problems()

    def as_dict(self) -> dict:
        data = asdict(self)
        data.update(
            consumers_alive=self.consumers_alive,
            sweeper_age_seconds=self.sweeper_age_seconds,
            overdue_seconds=self.overdue_seconds,
            failures=[
                {"reason": reason, "permanent": permanent, "count": count}
                for reason, permanent, count in self.failures
            ],
            problems=self.problems(),
            healthy=self.healthy,
        )
        return data


def health_report(now: datetime | None = None, max_wait_seconds: int | None = None) -> HealthReport:
    now = now or timezone.now()
    stale = conf.heartbeat_stale_seconds()
    last_send = MessageReceiver.objects.aggregate(last=Max("sent_datetime"))["last"]
    waiting_since = _oldest_waiting_since()
    return HealthReport(
        now=now,
        stale_seconds=stale,
        max_wait_seconds=conf.health_max_wait_seconds() if max_wait_seconds is None else max_wait_seconds,
        consumers=_consumers(now, stale),
        sweeper_last_run=Heartbeat.objects.filter(name=SWEEPER)
        .values_list("seen_datetime", flat=True)
        .first(),
        message_counts=_message_counts(),
        receivers_waiting=MessageReceiver.objects.filter(
            status=ReceiverStatus.NOT_SENT, message__status=Status.SENDING
        ).count(),
        oldest_waiting_seconds=_seconds(now, waiting_since) if waiting_since else None,
        sends_last_minute=MessageReceiver.objects.filter(
            sent_datetime__gt=now - SENDS_WINDOW, sent_datetime__lte=now
        ).count(),
        last_send=last_send,
        failures=_failures(now),
        overdue_scheduled_seconds=_overdue_scheduled(now),
        overdue_queued_seconds=_overdue_queued(now),
        overdue_receivers_seconds=(
            _seconds(now, max(waiting_since, last_send) if last_send else waiting_since)
            if waiting_since
            else None
        ),
    )


def duration(seconds: float) -> str:
    """A short human duration: "42 s", "3 min 5 s", "2 h 10 min"."""
    seconds = max(round(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return _("%(hours)d h %(minutes)d min") % {"hours": hours, "minutes": minutes}
    if minutes:
        return _("%(minutes)d min %(seconds)d s") % {"minutes": minutes, "seconds": secs}
    return _("%(seconds)d s") % {"seconds": secs}


# Queries ------------------------------------------------------------------------------------------


def _seconds(now: datetime, since: datetime) -> float:
    return max((now - since).total_seconds(), 0.0)


def _parse(value) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


def _consumers(now: datetime, stale: int) -> list[ConsumerBeat]:
    cutoff = now - timedelta(seconds=stale)
    return [
        ConsumerBeat(
            name=beat.name,
            started=beat.started_datetime,
            seen=beat.seen_datetime,
            age_seconds=_seconds(now, beat.seen_datetime),
            alive=beat.seen_datetime >= cutoff,
            details=beat.details,
        )
        for beat in Heartbeat.objects.filter(kind=Heartbeat.Kind.CONSUMER).order_by("-seen_datetime", "name")
    ]


def _message_counts() -> dict[str, int]:
    counts = dict.fromkeys(map(str, TRACKED_STATUSES), 0)
    rows = (
        Message.objects.filter(status__in=TRACKED_STATUSES)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
    counts.update({status: n for status, n in rows})
    return counts


def _oldest_waiting_since() -> datetime | None:
    """When the longest-waiting receiver of a sending message began waiting.

    Per sending message (a few rows), its lowest-id not_sent receiver (the (message, status, id)
    index gives it directly) is its oldest; it waits from the later of its creation and the
    message's start of sending."""
    oldest = (
        MessageReceiver.objects.filter(message=OuterRef("pk"), status=ReceiverStatus.NOT_SENT)
        .order_by("id")
        .values("created_datetime")[:1]
    )
    rows = (
        Message.objects.filter(status=Status.SENDING)
        .order_by()
        .annotate(oldest_receiver=Subquery(oldest))
        .filter(oldest_receiver__isnull=False)
        .values_list("oldest_receiver", "status_data__sending_started")
    )
    since = [max(created, _parse(started) or created) for created, started in rows]
    return min(since, default=None)


def _failures(now: datetime) -> list[tuple[str, bool, int]]:
    rows = (
        MessageReceiver.objects.filter(
            status__in=MessageReceiver.RESENDABLE,
            message__created_datetime__gte=now - timedelta(days=FAILURE_DAYS),
        )
        .order_by()
        .values_list("last_error", "permanent_failure")
        .annotate(n=Count("id"))
        .order_by("-n", "last_error", "permanent_failure")[:FAILURE_REASONS]
    )
    return list(rows)


def _overdue_scheduled(now: datetime) -> float | None:
    first = Message.objects.due_to_start(now).aggregate(first=Min("send_at"))["first"]
    return _seconds(now, first) if first else None


def _overdue_queued(now: datetime) -> float | None:
    queued = [
        _parse(value)
        for value in Message.objects.filter(status=Status.QUEUED).values_list(
            "status_data__queued_datetime", flat=True
        )
    ]
    first = min((q for q in queued if q), default=None)
    return _seconds(now, first) if first else None
