"""Riding out a database or Redis that is briefly unavailable while a worker delivers.

A result the mail server has accepted must be recorded, not dropped: when a write fails because
the database is locked (SQLite's one writer), restarting or unreachable, the delivering worker
waits and tries the same write again on a fresh connection, for up to
MESSAGING_DATABASE_OUTAGE_SECONDS, and then carries on where it was. The sending limits' store
(Redis, when set) is waited for the same way. Only a longer outage ends the delivery run: the
task fails and huey runs it again (tasks.py), and the sweeper is the safety net. Every write
retried here is a guarded transition (or a slot reservation under a fresh token), so one that
did commit before its answer was lost changes nothing the second time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import DatabaseError, InterfaceError, OperationalError, connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from messaging import conf

logger = logging.getLogger(__name__)

# Errors that say the database or Redis could not be reached or could not take the write now;
# not errors in the statement (ProgrammingError, IntegrityError, DataError, a Redis ResponseError).
UNAVAILABLE = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError)
FIRST_PAUSE = 0.1
LONGEST_PAUSE = 2.0


def persistently[T](write: Callable[[], T], what: str) -> T:
    """`write()`, tried again after growing pauses while the database or Redis is unavailable.
    Inside a transaction nothing is tried again: the transaction is lost, and its owner decides."""
    deadline = time.monotonic() + conf.database_outage_seconds()
    pause = FIRST_PAUSE
    while True:
        try:
            return write()
        except UNAVAILABLE as exc:
            if connection.in_atomic_block or time.monotonic() + pause > deadline:
                raise
            service = "the database" if isinstance(exc, DatabaseError) else "Redis"
            logger.warning("%s: %s is unavailable (%s); trying again in %.1f s.", what, service, exc, pause)
            if isinstance(exc, DatabaseError):
                connection.close()  # a broken connection is replaced by the next query
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)
