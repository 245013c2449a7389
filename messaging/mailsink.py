"""A local SMTP sink for development and tests (aiosmtpd).

It accepts mail for every address except a few reserved domains, so the refusal paths can
be seen without a real mail server: *@tempfail.example answers 451 (temporary) and
*@bounce.example answers 550 (permanent). Accepted mail is kept in memory and, when a
directory is given, written there as one .eml file per recipient.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller

REFUSALS = {
    "@tempfail.example": "451 4.3.0 Try again later",
    "@bounce.example": "550 5.1.1 No such user here",
}


@dataclass(frozen=True)
class SunkMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)


class SinkHandler:
    def __init__(self, mail_dir: Path | None = None, refusals: dict[str, str] | None = None):
        self.mail_dir = Path(mail_dir) if mail_dir else None
        self.refusals = dict(REFUSALS) if refusals is None else refusals
        self.received: list[SunkMail] = []
        self.sessions = 0
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
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        refusal = self.refusal_for(address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        mail = SunkMail(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.content))
        with self._lock:
            self.received.append(mail)
            number = len(self.received)
        if self.mail_dir:
            for rcpt in mail.rcpt_tos:
                safe = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in rcpt)
                (self.mail_dir / f"{number:06d}-{safe}.eml").write_bytes(mail.data)
        return "250 Message accepted for delivery"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class MailSink:
    """Runs the sink in a background thread: `with MailSink() as sink: ... sink.received`."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, **handler_options):
        self.host = host
        self.port = port or free_port(host)
        self.handler = SinkHandler(**handler_options)
        self.controller = Controller(self.handler, hostname=host, port=self.port)

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
