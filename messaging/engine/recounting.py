"""Published counts stay true when receivers are deleted behind the engine's back.

The status page reads counts the transitions publish (it never counts a 100,000-receiver
message per poll), so deleting a user in the admin (its receivers go by cascade) would leave
"Receivers 8" above a table of 7 rows, and "Resend failed (11)" would queue 10. Each deleted
receiver notes its message; once the deleting transaction commits, each message is recounted
once. The retention task deletes without signals and recounts by itself.
"""

from __future__ import annotations

from functools import partial

from django.db import transaction

from messaging.engine import transitions

_PENDING = "_messaging_recount_pending"


def on_receiver_deleted(sender, instance, using, **kwargs) -> None:
    connection = transaction.get_connection(using)
    if not connection.in_atomic_block:
        recount_messages([instance.message_id])
        return
    pending: set[int] | None = getattr(connection, _PENDING, None)
    # A rolled-back transaction drops its on-commit callbacks: start a new set then.
    if pending is None or not any(
        isinstance(func, partial) and func.func is _flush for _ids, func, _robust in connection.run_on_commit
    ):
        pending = set()
        setattr(connection, _PENDING, pending)
        transaction.on_commit(partial(_flush, using), using=using)
    pending.add(instance.message_id)


def _flush(using: str) -> None:
    connection = transaction.get_connection(using)
    message_ids = getattr(connection, _PENDING, None) or set()
    setattr(connection, _PENDING, None)
    recount_messages(message_ids)


def recount_messages(message_ids) -> None:
    for message_id in sorted(set(message_ids)):
        transitions.recount(message_id)
