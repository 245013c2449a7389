"""Status rules (pure reads and decisions; the writes are in `transitions`): error entries, the
receiver failure rule, the message roll-up rule and the counts the status page shows."""

from __future__ import annotations

import traceback as traceback_module
from collections import deque
from datetime import datetime, timedelta

from django.db.models import Count
from django.utils import timezone

from messaging import conf
from messaging.models import Message, MessageReceiver


def retry_delay(failed_count: int) -> timedelta:
    """How long a receiver waits after its `failed_count`th temporary failure: doubling, capped."""
    seconds = conf.retry_base_seconds() * 2 ** max(failed_count - 1, 0)
    return timedelta(seconds=min(seconds, conf.retry_max_seconds()))


def error_entry(error_message: str, exception_traceback: str = "", **extra) -> dict:
    return {
        "error_message": error_message,
        "timestamp": timezone.now().isoformat(),
        "exception_traceback": exception_traceback,
        **extra,
    }


def exception_entry(exc: BaseException) -> dict:
    return error_entry(f"{type(exc).__name__}: {exc}", "".join(traceback_module.format_exception(exc)))


def with_error(status_data: dict, entry: dict) -> dict:
    """status_data with the entry appended to its "errors", other keys kept."""
    return {**status_data, "errors": [*status_data.get("errors", []), entry]}


def status_after_failure(failed_count: int) -> str:
    """failed while automatic retries remain, error once they are exhausted."""
    if failed_count <= conf.resend_limit():
        return MessageReceiver.Status.FAILED
    return MessageReceiver.Status.ERROR


def status_from_counts(current: str, counts: dict[str, int], status_data: dict | None = None) -> str:
    """Cancelled and expired are final whatever the counts. Otherwise: sending while any
    receiver is not_sent or more are still being prepared (status_data["still_preparing"]:
    scheduled, blocked and paused are kept meanwhile), sent when no receiver failed, else error
    (SPEC §2); error too when its preparation failed part-way (status_data["preparation_failed"]:
    some users got no receiver)."""
    Status = Message.Status
    status_data = status_data or {}
    if current in (Status.CANCELLED, Status.EXPIRED):
        return current
    if counts[MessageReceiver.Status.NOT_SENT] or status_data.get("still_preparing"):
        return current if current in Message.HOLDING else Status.SENDING
    if not sum(counts.values()):
        return current if current == Status.SCHEDULED else Status.ERROR
    if counts[MessageReceiver.Status.FAILED] or counts[MessageReceiver.Status.ERROR]:
        return Status.ERROR
    if status_data.get("preparation_failed"):
        return Status.ERROR
    return Status.SENT


def receiver_counts(message_id: int) -> dict[str, int]:
    rows = (
        MessageReceiver.objects.filter(message_id=message_id)
        .order_by()
        .values_list("status")
        .annotate(n=Count("*"))
    )
    counts = dict.fromkeys(MessageReceiver.Status.values, 0)
    counts.update(dict(rows))
    return counts


def cancelled_counts(message_id: int) -> dict[str, int]:
    """Cancelled receivers per reason: {"cancelled": 3, "expired": 40}."""
    rows = (
        MessageReceiver.objects.filter(message_id=message_id, status=MessageReceiver.Status.CANCELLED)
        .order_by()
        .values_list("cancel_reason")
        .annotate(n=Count("*"))
    )
    return dict(rows)


def not_delivered(counts: dict[str, int], outcomes: dict[str, int]) -> int:
    """Receivers that did not get the email: failed or error (retry pending or not), and sent
    emails reported bounced, rejected or marked as spam afterwards. From receiver counts and
    delivery-outcome counts (selectors.outcome_counts)."""
    bounced = sum(outcomes.get(outcome, 0) for outcome in MessageReceiver.UNDELIVERED)
    Status = MessageReceiver.Status
    return counts.get(Status.FAILED, 0) + counts.get(Status.ERROR, 0) + bounced


def published_counts(message: Message) -> dict[str, int]:
    """Receiver counts as last published on the message, without counting the receivers.

    Every transition (preparing, each finished delivery run, resends, retries) publishes exact
    counts, and delivery workers publish progress every few seconds while sending, so a status
    page polled by many browsers never scans a 100,000-row message.
    """
    summary = message.status_data.get("summary")
    if summary and "receiver_counts" in summary:
        return {status: summary["receiver_counts"].get(status, 0) for status in MessageReceiver.Status.values}
    return receiver_counts(message.pk)


class FailureWatch:
    """Decides when a delivery run should pause its message: more than `rate` of the last
    `window` attempts failed, or the same error `streak` times in a row (0 turns a rule off).
    Counted per worker, over the attempts it made."""

    def __init__(self, window: int, rate: float, streak: int):
        self.window, self.rate, self.streak = window, rate, streak
        self.recent: deque[bool] = deque(maxlen=window or 1)
        self.failed = 0  # failures in `recent`, kept as it slides (this runs once per receiver)
        self.same_error, self.last_error = 0, None

    @classmethod
    def from_settings(cls) -> FailureWatch:
        return cls(conf.auto_pause_window(), conf.auto_pause_failure_rate(), conf.auto_pause_same_error())

    def add(self, delivered: bool, error: str = "") -> dict | None:
        """Count one attempt; returns the finding when a rule trips, else None."""
        if len(self.recent) == self.recent.maxlen:
            self.failed -= self.recent[0]
        self.recent.append(not delivered)
        self.failed += not delivered
        if delivered:
            self.same_error, self.last_error = 0, None
            return None
        self.same_error = self.same_error + 1 if error == self.last_error else 1
        self.last_error = error
        if self.streak and self.same_error >= self.streak:
            return {"rule": "same_error", "count": self.same_error, "error": error[:1000]}
        if self.window and len(self.recent) >= self.window and self.failed > self.rate * self.window:
            return {
                "rule": "failure_rate",
                "failed": self.failed,
                "window": self.window,
                "error": error[:1000],
            }
        return None


# Progress over time ------------------------------------------------------------------------------

TIMELINE_POINTS = 240


def progress_timeline(
    status_data: dict, counts: dict[str, int], now: datetime | None = None, cap: int = TIMELINE_POINTS
) -> list:
    """status_data["timeline"] with a point for `counts` appended if they changed since its last
    point: [[epoch_seconds, sent, failed_or_error], ...], oldest first, for the status page's
    chart. It starts with a zero point at "sending_started" (none before sending starts). Past
    `cap` points the older half is thinned (every second point dropped; the first and the newest
    are kept), so a send that lasts hours keeps a small record. A garbled timeline starts afresh."""
    started = _epoch(status_data.get("sending_started"))
    old = status_data.get("timeline")
    points = [list(p) for p in old if _is_point(p)] if isinstance(old, list) else []
    if not points:
        if started is None:
            return []
        points = [[started, 0, 0]]
    Status = MessageReceiver.Status
    values = [counts.get(Status.SENT, 0), counts.get(Status.FAILED, 0) + counts.get(Status.ERROR, 0)]
    if points[-1][1:] == values:
        return points
    at = max(int((now or timezone.now()).timestamp()), points[-1][0])  # never back in time
    if at == points[-1][0] and len(points) > 1:
        points[-1] = [at, *values]  # the same second: the newer counts replace the older
    else:
        points.append([at, *values])
    return thinned(points, cap)


def thinned(points: list, cap: int = TIMELINE_POINTS) -> list:
    """At most `cap` points: while there are more, every second point of the older half goes
    (the first point and the newer half stay)."""
    while len(points) > max(cap, 3):
        half = len(points) // 2
        points = points[:half:2] + points[half:]
    return points


def _is_point(value) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value)
    )


def _epoch(value) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return int(moment.timestamp()) if moment.tzinfo else None
