"""Django's SMTP backend, minus re-parsing every plain address, with connections that bound each
attempt and know whether the message body went out.

Django 6.1 runs each envelope address through the stdlib's header parser (prep_address), which
was about a fifth of the time to send a message in our profile. A plain ASCII addr-spec (what
`send_to` holds) comes back unchanged from that parser, so it is returned as is; anything else
(display names, quoting, non-ASCII, anything odd) still goes through Django's own code, whose
answer for repeated addresses such as the sender is cached.
"""

from __future__ import annotations

import re
import smtplib
import time
from functools import lru_cache, partial

from django.core.mail.backends import smtp

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
PLAIN_ADDR_SPEC = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


@lru_cache(maxsize=1024)
def _django_prep_address(address: str, force_ascii: bool) -> str:
    return smtp.EmailBackend.prep_address(None, address, force_ascii)


class AttemptDeadlineExceeded(TimeoutError):
    """One attempt (connect, EHLO, TLS, login, MAIL, RCPT, DATA) took longer than its budget."""


class _TrackedConnection:
    """smtplib.SMTP with two additions the delivery engine relies on:

    - a deadline for the whole attempt: every socket operation waits at most until it, so one
      receiver never takes longer than its budget, whatever the server does (a per-operation
      timeout alone lets a slow server stretch one message over many timeouts);
    - `payload_sent`: whether the message body and its final "." went out in this transaction,
      so a connection lost before the answer can be told apart from one lost earlier.
    """

    deadline: float | None = None
    payload_sent = False

    def __init__(self, *args, deadline: float | None = None, **kwargs):
        self.deadline = deadline
        super().__init__(*args, **kwargs)

    def _wait_limit(self) -> float | None:
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        if self.deadline is None:
            return timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AttemptDeadlineExceeded("The mail server did not answer within the attempt's time limit.")
        return left if timeout is None else min(left, timeout)

    def _get_socket(self, host, port, timeout):
        return super()._get_socket(host, port, self._wait_limit())

    def send(self, s):
        if self.sock:
            self.sock.settimeout(self._wait_limit())
        super().send(s)
        if isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.payload_sent = True

    def getreply(self):
        if self.sock:
            self.sock.settimeout(self._wait_limit())
        return super().getreply()

    def mail(self, *args, **kwargs):
        self.payload_sent = False
        return super().mail(*args, **kwargs)


class TrackedSMTP(_TrackedConnection, smtplib.SMTP):
    pass


class TrackedSMTP_SSL(_TrackedConnection, smtplib.SMTP_SSL):
    pass


class EmailBackend(smtp.EmailBackend):
    """Django's SMTP backend with the plain-address fast path, whose connections are
    TrackedSMTP bounded by `attempt_deadline`."""

    attempt_deadline: float | None = None

    def prep_address(self, address, force_ascii=True):
        if isinstance(address, str) and PLAIN_ADDR_SPEC.fullmatch(address):
            return address
        return _django_prep_address(str(address), force_ascii)

    @property
    def connection_class(self):
        cls = TrackedSMTP_SSL if self.use_ssl else TrackedSMTP
        return partial(cls, deadline=self.attempt_deadline)

    def begin_attempt(self, seconds: float) -> None:
        """Bound everything up to the next begin_attempt (reconnecting included) to `seconds`."""
        self.attempt_deadline = time.monotonic() + seconds
        if self.connection is not None:
            self.connection.deadline = self.attempt_deadline

    @property
    def payload_sent(self) -> bool:
        return bool(getattr(self.connection, "payload_sent", False))
