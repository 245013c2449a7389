"""Open SMTP sessions kept between claims and messages, so a busy worker does not reconnect
(TCP, EHLO, TLS, login: several round trips to a slow relay) every few receivers.

Each delivery lane checks a mailer out for as long as it sends and puts it back still open. A
session idle for longer than IDLE_SECONDS is closed rather than reused: relays drop idle
clients (RFC 5321 asks them to wait 5 minutes; many wait less), and a session the server
dropped would cost a failed command first. Changing the mailer's settings (tests do) retires
every pooled session.
"""

from __future__ import annotations

import contextlib
import smtplib
import threading
import time
from collections.abc import Iterator

from django.core import mail

from messaging import conf

IDLE_SECONDS = 30.0


class MailerPool:
    def __init__(self, alias: str):
        self.alias = alias
        self._idle: list[tuple[object, float]] = []  # (mailer, when it was put back)
        self._settings_seen: str | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def mailer(self) -> Iterator[object]:
        settings_now = repr(mail.mailers.settings.get(self.alias))
        mailer = self._take(settings_now) or mail.mailers[self.alias]
        try:
            yield mailer
        except GeneratorExit:  # the lane stopped asking between two sends: the session is fine
            self._put_back(mailer, settings_now)
            raise
        except BaseException:
            close_mailer(mailer)
            raise
        else:
            self._put_back(mailer, settings_now)

    def _take(self, settings_now: str) -> object | None:
        stale = []
        with self._lock:
            if settings_now != self._settings_seen:
                stale, self._idle, self._settings_seen = self._idle, [], settings_now
            while self._idle:
                mailer, since = self._idle.pop()
                if time.monotonic() - since <= IDLE_SECONDS:
                    break
                stale.append((mailer, since))
            else:
                mailer = None
        for old, _since in stale:
            close_mailer(old)
        return mailer

    def _put_back(self, mailer, settings_seen: str) -> None:
        with self._lock:
            if settings_seen == self._settings_seen and len(self._idle) < conf.smtp_connections():
                self._idle.append((mailer, time.monotonic()))
                return
        close_mailer(mailer)

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for mailer, _since in idle:
            close_mailer(mailer)


def close_mailer(mailer) -> None:
    """Close the session, ignoring a server that is already gone; the mailer can open anew."""
    with contextlib.suppress(OSError, smtplib.SMTPException):
        mailer.close()
    if hasattr(mailer, "connection"):
        mailer.connection = None
