"""The one place the engine and other services queue work, so none imports messaging.tasks.

The tasks in messaging.tasks call the services; were the services to import the tasks back,
every service would sit in an import loop with them. So this module is a leaf (it imports
nothing from messaging), and messaging.tasks registers each of its tasks here when it is
imported:

    @queue.runs("deliver_message")
    @db_task()
    def deliver_message(message_id): ...

MessagingConfig.ready() imports messaging.tasks in every process (huey's run_huey also
autodiscovers it), so the tasks are registered before anything is queued; queuing one that is
not registered raises TaskNotRegistered rather than losing the work.

Services call the named functions below: they queue at once, and raise if the queue cannot take
the task. `after_commit(queue.deliver_message, message_id)` queues once the current
transaction commits instead, and never raises: the sweeper finds the work anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from django.db import transaction

T = TypeVar("T")

_tasks: dict[str, Any] = {}


class TaskNotRegistered(LookupError):
    """Work was queued before messaging.tasks registered the task that does it."""


def runs(name: str) -> Callable[[T], T]:
    """Register the decorated huey task as the one queued as `name` (used in messaging.tasks)."""

    def register(task: T) -> T:
        _tasks[name] = task
        return task

    return register


def _task(name: str) -> Any:
    try:
        return _tasks[name]
    except KeyError:
        raise TaskNotRegistered(
            f"No task is registered as {name!r}: messaging.tasks has not been imported yet "
            "(MessagingConfig.ready() imports it once Django is set up)."
        ) from None


def after_commit[**P](queue_it: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
    """Call `queue_it(*args, **kwargs)` once the current transaction commits (at once outside
    one). robust: should the queue be unreachable the error is logged, not raised into the code
    that committed; the sweeper (queue.sweep) sets the work going again once it is back."""
    transaction.on_commit(functools.partial(queue_it, *args, **kwargs), robust=True)


def runs_inline() -> bool:
    """Whether a queued task runs at once, in the caller (huey's immediate mode: HUEY_IMMEDIATE,
    the tests): then no other worker exists to wait for."""
    from huey.contrib.djhuey import HUEY

    return HUEY.immediate


# Queued now; each raises the queue's own error (redis, sqlite) should it be unreachable.


def send_composed_message(message_id: int) -> None:
    """Resolve a queued staff-composed message's receivers, prepare and send it."""
    _task("send_composed_message")(message_id)


def deliver_message_by(message_id: int, workers: int) -> None:
    """Queue `workers` delivery tasks once the transaction commits, so that idle workers join in
    (claims keep them disjoint). robust: the sweeper delivers a sending message anyway, should
    the queue be unreachable."""
    for _task in range(workers):
        after_commit(deliver_message, message_id)


def deliver_message(message_id: int) -> None:
    """Deliver a sending message's unclaimed receivers (one more worker joins in)."""
    _task("deliver_message")(message_id)


def retry_blocked_message(message_id: int) -> None:
    """Try a blocked message's mail server again."""
    _task("retry_blocked_message")(message_id)


def report_to_sender(message_id: int, event: str) -> None:
    """Tell the message's sender about `event` (messaging.operations.reporting)."""
    _task("report_to_sender")(message_id, event)


def sweep() -> None:
    """Run the sweeper now rather than at its next period."""
    _task("sweep")()


# Scheduled for a time (huey keeps the schedule; the sweeper is the safety net should it be lost).


def start_scheduled_message_at(message_id: int, eta: datetime) -> None:
    _task("start_scheduled_message").schedule((message_id,), eta=eta)


def retry_blocked_message_at(message_id: int, eta: datetime) -> None:
    _task("retry_blocked_message").schedule((message_id,), eta=eta)


def retry_failed_receivers_at(message_id: int, eta: datetime) -> None:
    _task("retry_failed_receivers_of").schedule((message_id,), eta=eta)


def deliver_message_at(message_id: int, eta: datetime) -> None:
    """Deliver receivers that wait until `eta` (their domain's sending limit frees then)."""
    _task("deliver_message").schedule((message_id,), eta=eta)
