"""Heartbeats: proof of life for huey consumers and the sweeper (models.Heartbeat).

A consumer (`manage.py run_huey`) runs a `HeartbeatThread` that writes its row ("host:pid")
every MESSAGING_HEARTBEAT_SECONDS and deletes it on a graceful stop; a consumer killed outright
leaves its row behind, which goes stale after MESSAGING_HEARTBEAT_STALE_SECONDS (messaging.operations.health)
and is deleted a day later. The sweeper calls `record_sweep()` after each run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from messaging import conf
from messaging.models import Heartbeat

logger = logging.getLogger(__name__)

SWEEPER = "sweeper"
# Rows of consumers not seen for this long are deleted (a consumer killed without cleanup).
PRUNE_AFTER = timedelta(days=1)


def consumer_name() -> str:
    """This process's consumer name: "host:pid" (fits Heartbeat.name)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def beat(name: str, kind: str, **details) -> None:
    """Upsert the row of `name` with seen_datetime = now (started_datetime: its first beat)."""
    now = timezone.now()
    fields = {"kind": kind, "seen_datetime": now, "details": details}
    if not Heartbeat.objects.filter(name=name).update(**fields):
        try:
            with transaction.atomic():
                Heartbeat.objects.create(name=name, started_datetime=now, **fields)
        except IntegrityError:  # created by someone else in between
            Heartbeat.objects.filter(name=name).update(**fields)
    Heartbeat.objects.filter(kind=Heartbeat.Kind.CONSUMER, seen_datetime__lt=now - PRUNE_AFTER).delete()


def record_sweep(**details) -> None:
    """The sweeper ran (called at the end of each sweep)."""
    beat(SWEEPER, Heartbeat.Kind.SWEEPER, **details)


def forget(name: str) -> None:
    Heartbeat.objects.filter(name=name).delete()


class HeartbeatThread(threading.Thread):
    """Beats for a consumer until `stop()`, which deletes its row.

    A daemon thread with its own database connection, closed after every beat so that it is not
    held open between beats (nor inherited by worker processes forked meanwhile)."""

    def __init__(self, name: str | None = None, interval: float | None = None, **details):
        super().__init__(name="messaging-heartbeat", daemon=True)
        self.consumer = name or consumer_name()
        self.interval = interval if interval is not None else conf.heartbeat_seconds()
        self.details = {"pid": os.getpid(), "host": socket.gethostname(), **details}
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                try:
                    beat(self.consumer, Heartbeat.Kind.CONSUMER, **self.details)
                except Exception:
                    logger.exception("Could not write the heartbeat of %s.", self.consumer)
                finally:
                    connection.close()
                self._stop_event.wait(self.interval)
            try:
                forget(self.consumer)
            except Exception:
                logger.exception("Could not delete the heartbeat of %s.", self.consumer)
        finally:
            connection.close()

    def stop(self, timeout: float | None = 10) -> None:
        """Stop beating and delete the row (waits up to `timeout` seconds for the thread)."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)
