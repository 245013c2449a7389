"""A local SMTP sink for development and tests (aiosmtpd).

It accepts mail for every address except a few reserved domains, so the refusal paths can
be seen without a real mail server: *@tempfail.example answers 451 (temporary) and
*@bounce.example answers 550 (permanent). Accepted mail is kept in memory and, when a
directory is given, written there as one .eml file per recipient, named so that the files sort
by arrival and a restarted sink never overwrites what an earlier one wrote.

Like a real relay, it can also bounce mail it accepted: with a bounce Maildir, mail to
*@bounce-later.example is accepted and an RFC 3464 delivery report goes to that Maildir,
addressed to the envelope sender (what `manage.py messaging_read_bounces` reads).
"""

from __future__ import annotations

import asyncio
import mailbox
import os
import re
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

REFUSALS = {
    "@tempfail.example": "451 4.3.0 Try again later",
    "@bounce.example": "550 5.1.1 No such user here",
}
LATER_BOUNCE = "@bounce-later.example"
# Room for the time, counter and random part within a file system's 255-byte name limit.
ADDRESS_CHARS_IN_NAME = 100


@dataclass(frozen=True)
class SunkMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    # Unix time the message was complete at the sink (before any reply delay).
    arrived_at: float = 0.0

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)


class SinkHandler:
    def __init__(
        self,
        mail_dir: Path | None = None,
        refusals: dict[str, str] | None = None,
        data_delay: float = 0.0,
        bounce_dir: Path | None = None,
        pipelining: bool = True,
    ):
        self.pipelining = pipelining
        self.mail_dir = Path(mail_dir) if mail_dir else None
        self.bounces = mailbox.Maildir(bounce_dir, create=True) if bounce_dir else None
        self.refusals = dict(REFUSALS) if refusals is None else refusals
        # Seconds before answering DATA, as a real relay takes (50-300 ms per message).
        self.data_delay = data_delay
        self.received: list[SunkMail] = []
        self.sessions = 0
        # Messages being answered right now, and the most at once (concurrent senders).
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        if self.mail_dir:
            self.mail_dir.mkdir(parents=True, exist_ok=True)

    def refusal_for(self, address: str) -> str | None:
        address = address.lower()
        for suffix, reply in self.refusals.items():
            if address.endswith(suffix):
                return reply
        return None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self._lock:
            self.sessions += 1
        # Like Postfix and Exchange: clients may send MAIL, RCPT and DATA in one write (RFC 2920;
        # aiosmtpd reads pipelined commands but does not say so).
        return [responses[0], "250-PIPELINING", *responses[1:]] if self.pipelining else responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        refusal = self.refusal_for(address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        arrived_at = time.time()
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        mail = SunkMail(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.content), arrived_at)
        try:
            if self.data_delay:
                await asyncio.sleep(self.data_delay)
        except asyncio.CancelledError:
            # The client went away before our answer; like a real relay, we have the mail all
            # the same (the sender cannot know: exactly its "uncertain" case).
            self._keep(mail)
            raise
        finally:
            with self._lock:
                self.in_flight -= 1
        number = self._keep(mail)
        if self.mail_dir:
            for rcpt in mail.rcpt_tos:
                self.store(mail, rcpt, number)
        bounced = [rcpt for rcpt in mail.rcpt_tos if rcpt.lower().endswith(LATER_BOUNCE)]
        if self.bounces is not None and bounced and mail.mail_from:
            with self._lock:
                self.bounces.add(delivery_report(mail, bounced))
        return "250 Message accepted for delivery"

    def _keep(self, mail: SunkMail) -> int:
        with self._lock:
            self.received.append(mail)
            return len(self.received)

    def store(self, mail: SunkMail, rcpt: str, number: int) -> None:
        """Write one .eml file. The name starts with the arrival time (so names sort by arrival
        across restarts) and carries a random part (so a restarted sink, whose counter starts
        again at 1, never reuses a name). Written to a hidden temporary file and renamed, so a
        reader never sees half a message."""
        safe = "".join(c if c.isascii() and (c.isalnum() or c in "@.-_") else "_" for c in rcpt)
        # Microseconds: a sink restarted within the same second still sorts after the last one.
        micros = int(mail.arrived_at * 1_000_000) % 1_000_000
        arrived = time.strftime("%Y%m%d-%H%M%S", time.gmtime(mail.arrived_at)) + f".{micros:06d}"
        name = f"{arrived}-{number:06d}-{secrets.token_hex(4)}-{safe[:ADDRESS_CHARS_IN_NAME]}.eml"
        path = self.mail_dir / name
        partial = self.mail_dir / f".{name}.partial"
        partial.write_bytes(mail.data)
        os.replace(partial, path)


def delivery_report(mail: SunkMail, failed: list[str], host: str = "sink.localhost") -> bytes:
    """An RFC 3464 report of `failed` recipients to the envelope sender, as Postfix writes one."""
    boundary = uuid.uuid4().hex
    date = formatdate(mail.arrived_at or None)
    headers = re.split(rb"\r?\n\r?\n", mail.data, maxsplit=1)[0].decode("ascii", "replace")
    recipients = "".join(
        f"Final-Recipient: rfc822; {rcpt}\nAction: failed\nStatus: 5.1.1\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown\n\n"
        for rcpt in failed
    )
    report = (
        f"From: MAILER-DAEMON@{host} (Mail Delivery System)\n"
        f"To: {mail.mail_from}\nDelivered-To: {mail.mail_from}\n"
        f"Subject: Undelivered Mail Returned to Sender\nDate: {date}\n"
        f"Message-ID: {make_msgid(domain=host)}\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\n\n'
        f"--{boundary}\nContent-Type: text/plain; charset=us-ascii\n\n"
        f"This is the mail system at host {host}.\n\n"
        f"Your message could not be delivered to {', '.join(failed)}: the mailbox does not exist.\n\n"
        f"--{boundary}\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; {host}\nArrival-Date: {date}\n\n{recipients}"
        f"--{boundary}\nContent-Type: text/rfc822-headers\n\n{headers}\n\n--{boundary}--\n"
    )
    return report.encode("ascii", "replace")


class _Authenticator:
    def __init__(self, credentials: tuple[str, str]):
        self.credentials = (credentials[0].encode(), credentials[1].encode())

    def __call__(self, server, session, envelope, mechanism, auth_data):
        login = (getattr(auth_data, "login", None), getattr(auth_data, "password", None))
        return AuthResult(success=login == self.credentials, handled=False)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class MailSink:
    """Runs the sink in a background thread: `with MailSink() as sink: ... sink.received`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        credentials: tuple[str, str] | None = None,
        handler: SinkHandler | None = None,
        **handler_options,
    ):
        """credentials: require SMTP AUTH with this login (535 for any other)."""
        self.host = host
        self.port = port or free_port(host)
        self.handler = handler or SinkHandler(**handler_options)
        auth = {}
        if credentials:
            auth = {
                "authenticator": _Authenticator(credentials),
                "auth_required": True,
                "auth_require_tls": False,
                "auth_exclude_mechanism": ["LOGIN"],
            }
        self.controller = Controller(self.handler, hostname=host, port=self.port, **auth)

    @property
    def received(self) -> list[SunkMail]:
        return self.handler.received

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> MailSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
