"""Django's SMTP backend, minus re-parsing every plain address, with connections that bound each
attempt, know whether the message body went out, and pipeline the envelope when they may.

Django 6.1 runs each envelope address through the stdlib's header parser (prep_address), which
was about a fifth of the time to send a message in our profile. A plain ASCII addr-spec (what
`send_to` holds) comes back unchanged from that parser, so it is returned as is; anything else
(display names, quoting, non-ASCII, anything odd) still goes through Django's own code, whose
answer for repeated addresses such as the sender is cached.

smtplib waits for the answer to MAIL FROM, to each RCPT TO and to DATA before sending the next:
four round trips per email with the body. When the relay offers PIPELINING (RFC 2920) and
MESSAGING_SMTP_PIPELINING is on, MAIL, every RCPT and DATA go out in one write and their
answers are read in order, so an email costs two round trips; refusals raise what smtplib
raises, so they are classified as before.
"""

from __future__ import annotations

import re
import smtplib
import time
from functools import lru_cache, partial

from django.core.mail.backends import smtp

from messaging import conf

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
PLAIN_ADDR_SPEC = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
# Above this many recipients the envelope is sent one command at a time: a large group could
# fill both sides' socket buffers, each waiting for the other to read (RFC 2920 warns of it).
# We send one recipient per email.
PIPELINED_RECIPIENTS_MAX = 100


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
      so a connection lost before the answer can be told apart from one lost earlier;
    - `sendmail` pipelines MAIL, RCPT and DATA when the server offers PIPELINING and
      `pipelining` is on.
    """

    deadline: float | None = None
    payload_sent = False
    pipelining = True

    def __init__(self, *args, deadline: float | None = None, pipelining: bool = True, **kwargs):
        self.deadline = deadline
        self.pipelining = pipelining
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

    def sendmail(self, from_addr, to_addrs, msg, mail_options=(), rcpt_options=()):
        self.ehlo_or_helo_if_needed()
        to_addrs = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        if not self._may_pipeline(to_addrs, mail_options):
            try:
                return super().sendmail(from_addr, to_addrs, msg, mail_options, rcpt_options)
            except smtplib.SMTPDataError as exc:
                # smtplib leaves the transaction open when DATA itself is refused: the next
                # email's MAIL FROM would get "503 nested MAIL command".
                if not self.payload_sent:
                    self._end_transaction(exc.smtp_code)
                raise
        if isinstance(msg, str):
            msg = smtplib._fix_eols(msg).encode("ascii")
        options = [f"size={len(msg)}", *mail_options] if self.has_extn("size") else list(mail_options)
        group = [_command("mail", f"FROM:{smtplib.quoteaddr(from_addr)}", options)]
        group += [_command("rcpt", f"TO:{smtplib.quoteaddr(each)}", rcpt_options) for each in to_addrs]
        group.append(_command("data"))
        self.payload_sent = False
        self.send("".join(group))  # one write; DATA ends the group, as RFC 2920 §3.1 requires
        refused = self._envelope_replies(from_addr, to_addrs)
        return self._send_body(msg, refused)

    def _may_pipeline(self, to_addrs: list[str], mail_options) -> bool:
        # SMTPUTF8 switches the command encoding inside smtplib.mail(): left to smtplib.
        return (
            self.pipelining
            and self.has_extn("pipelining")
            and 0 < len(to_addrs) <= PIPELINED_RECIPIENTS_MAX
            and not any(option.lower() == "smtputf8" for option in mail_options)
        )

    def _envelope_replies(self, from_addr: str, to_addrs: list[str]) -> dict:
        """Read the answers to the pipelined MAIL, RCPTs and DATA in order, and raise what
        smtplib.sendmail raises for a refusal; the refused recipients when DATA got 354."""
        code, resp = self._group_reply(None)
        if code == 421:
            self.close()
            raise smtplib.SMTPSenderRefused(code, resp, from_addr)
        refusal = None if code == 250 else smtplib.SMTPSenderRefused(code, resp, from_addr)
        refused = {}
        for each in to_addrs:
            code, resp = self._group_reply(refusal)
            if code not in (250, 251):
                refused[each] = (code, resp)
            if code == 421:
                self.close()
                raise refusal or smtplib.SMTPRecipientsRefused(refused)
        if refusal is None and len(refused) == len(to_addrs):
            refusal = smtplib.SMTPRecipientsRefused(refused)
        code, resp = self._group_reply(refusal)
        if refusal is not None:
            if code == 421:
                self.close()
                raise refusal
            if code == 354:
                self._end_empty_data()
            self._rset()
            raise refusal
        if code != 354:
            self._end_transaction(code)
            raise smtplib.SMTPDataError(code, resp)
        return refused

    def _group_reply(self, refusal: smtplib.SMTPException | None) -> tuple[int, bytes]:
        """The next answer of the group. If the connection fails while reading it, the refusal
        already read (if any) is the answer: some servers hang up after refusing every RCPT,
        and retrying on a fresh connection would only hear the same refusal again."""
        try:
            return self.getreply()
        except OSError as exc:  # SMTPServerDisconnected, or the attempt's deadline passed
            self.close()  # the rest of the group's answers may still come: the session is unusable
            if refusal is not None:
                raise refusal from exc
            raise

    def _end_empty_data(self) -> None:
        """DATA was accepted although no transaction can go on: RFC 2920 §3.1 says to send a
        lone "." (an empty message to no accepted recipient) before RSET."""
        try:
            self.send(b".\r\n")
            self.getreply()
        except OSError:  # the refusal is the answer; the next email finds the session closed
            self.close()

    def _end_transaction(self, code: int) -> None:
        """After a refused DATA or message: reset for the next email, or close on 421."""
        if code == 421:
            self.close()
        else:
            self._rset()

    def _send_body(self, msg: bytes, refused: dict) -> dict:
        data = smtplib._quote_periods(msg)
        if data[-2:] != smtplib.bCRLF:
            data += smtplib.bCRLF
        self.send(data + b"." + smtplib.bCRLF)
        code, resp = self.getreply()
        if code != 250:
            self._end_transaction(code)
            raise smtplib.SMTPDataError(code, resp)
        return refused


def _command(verb: str, args: str = "", options=()) -> str:
    """One command line as smtplib.putcmd writes it (lowercase verb), newlines refused alike."""
    line = " ".join([verb, args, *options]) if args else verb
    if "\r" in line or "\n" in line:
        line = line.replace("\n", "\\n").replace("\r", "\\r")
        raise ValueError(f"command and arguments contain prohibited newline characters: {line}")
    return f"{line}\r\n"


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
        return partial(cls, deadline=self.attempt_deadline, pipelining=conf.smtp_pipelining())

    def begin_attempt(self, seconds: float) -> None:
        """Bound everything up to the next begin_attempt (reconnecting included) to `seconds`."""
        self.attempt_deadline = time.monotonic() + seconds
        if self.connection is not None:
            self.connection.deadline = self.attempt_deadline

    @property
    def payload_sent(self) -> bool:
        return bool(getattr(self.connection, "payload_sent", False))
