"""Riding out a database that is briefly unavailable while a worker delivers.

A result the mail server has accepted must be recorded, not dropped: when a write fails because
the database is locked (SQLite's one writer), restarting or unreachable, the delivering worker
waits and tries the same write again on a fresh connection, for up to
MESSAGING_DATABASE_OUTAGE_SECONDS, and then carries on where it was. Only a longer outage ends
the delivery run: the task fails and huey runs it again (tasks.py), and the sweeper is the safety
net. Every write retried here is a guarded transition, so one that did commit before its answer
was lost changes nothing the second time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, connection

from messaging import conf

logger = logging.getLogger(__name__)

# Errors that say the database could not be reached or could not take the write now; not
# errors in the statement (those are ProgrammingError, IntegrityError, DataError).
UNAVAILABLE = (OperationalError, InterfaceError)
FIRST_PAUSE = 0.1
LONGEST_PAUSE = 2.0


def persistently[T](write: Callable[[], T], what: str) -> T:
    """`write()`, tried again after growing pauses while the database is unavailable. Inside a
    transaction nothing is tried again: the transaction is lost, and its owner decides."""
    deadline = time.monotonic() + conf.database_outage_seconds()
    pause = FIRST_PAUSE
    while True:
        try:
            return write()
        except UNAVAILABLE as exc:
            if connection.in_atomic_block or time.monotonic() + pause > deadline:
                raise
            logger.warning("%s: the database is unavailable (%s); trying again in %.1f s.", what, exc, pause)
        connection.close()  # a broken connection is replaced by the next query
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)
