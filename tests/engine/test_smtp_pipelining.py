"""SMTP PIPELINING (RFC 2920) in our SMTP backend, over real SMTP conversations with an
in-process aiosmtpd sink that offers PIPELINING or not.

With PIPELINING, MAIL FROM, RCPT TO and DATA leave in one write and the server reads them in
one go; refusals come out as the exceptions smtplib raises (so the email channel classifies
them as without pipelining), the session stays usable for the next email, and `payload_sent`
stays False until the body and its "." went out: a connection lost while the pipelined
answers are read is retried on a fresh connection, one lost after the body is uncertain.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import time
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from messaging.engine.channels.base import ChannelUnavailable, Outgoing
from messaging.engine.channels.email import EmailChannel
from messaging.engine.channels.smtp_backend import TrackedSMTP
from messaging.operations.mailsink import MailSink, SinkHandler

SENDER = "exams@uni.example"
REFUSED_SENDER = "refused@sender.example"  # MAIL FROM answered 553
BUSY_SENDER = "busy@sender.example"  # MAIL FROM answered 451
# A line that starts with a dot: the body is dot-stuffed on the wire and arrives unchanged.
MESSAGE = (
    b"From: exams@uni.example\r\nTo: kari@uni.example\r\nSubject: Exam\r\n"
    b"Message-ID: <exam-1@uni.example>\r\n\r\nHello Kari,\r\n.hidden dot\r\nBye\r\n"
)
ENVELOPE_COMMAND = re.compile(rb"(?i)(mail from:|rcpt to:|data$)")


class ScriptedHandler(SinkHandler):
    """The development sink (*@tempfail.example 451, *@bounce.example 550), offering
    PIPELINING or not, that records each read from a client and misbehaves on demand."""

    def __init__(self, pipelining: bool):
        super().__init__(pipelining=pipelining)
        self.reads: list[bytes] = []  # each chunk read from a client socket, as it came
        self.sender_refusals = {
            REFUSED_SENDER: "553 5.7.1 Sender address rejected",
            BUSY_SENDER: "451 4.3.0 Sender check unavailable",
        }
        self.data_command_reply: str | None = None  # answers DATA itself (no 354)
        self.message_reply: str | None = None  # answers the end of the body
        self.drop_at_data = 0  # connections dropped at DATA, after MAIL and RCPT were answered
        self.drop_after_body = 0  # connections dropped after the body, the mail kept
        self.accept_data_without_rcpt = False  # 354 even when every RCPT was refused
        self.empty_data: list[bytes] = []  # what came between such a 354 and the "."
        self.rcpt_delay = 0.0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address in self.sender_refusals:
            return self.sender_refusals[address]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_delay:
            await asyncio.sleep(self.rcpt_delay)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        if self.message_reply:
            return self.message_reply
        reply = await super().handle_DATA(server, session, envelope)
        if self.drop_after_body:
            self.drop_after_body -= 1
            server.transport.abort()
        return reply


class ScriptedSMTP(SMTP):
    def data_received(self, data: bytes) -> None:
        self.event_handler.reads.append(bytes(data))
        super().data_received(data)

    async def smtp_DATA(self, arg: str) -> None:
        handler = self.event_handler
        if handler.drop_at_data:
            handler.drop_at_data -= 1
            self.transport.abort()
            return
        if handler.data_command_reply:
            await self.push(handler.data_command_reply)
            return
        if handler.accept_data_without_rcpt and self.envelope and not self.envelope.rcpt_tos:
            # As some servers do when pipelining: the client must end the data with a lone ".".
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            lines = []
            while (line := await self._reader.readuntil(b"\r\n")) != b".\r\n":
                lines.append(line)
            handler.empty_data.append(b"".join(lines))
            await self.push("554 5.5.1 Error: no valid recipients")
            return
        await super().smtp_DATA(arg)


class ScriptedController(Controller):
    def factory(self):
        return ScriptedSMTP(self.handler, **self.SMTP_kwargs)


@contextlib.contextmanager
def scripted_sink(pipelining: bool = True) -> Iterator[MailSink]:
    sink = MailSink(handler=ScriptedHandler(pipelining))
    sink.controller = ScriptedController(sink.handler, hostname=sink.host, port=sink.port)
    with sink:
        yield sink


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def sink(request):
    with scripted_sink(pipelining=request.param) as sink:
        yield sink


def connect(sink: MailSink, **options) -> TrackedSMTP:
    return TrackedSMTP(sink.host, sink.port, local_hostname="client.example", timeout=5, **options)


def envelope_writes(sink: MailSink) -> list[list[bytes]]:
    """The envelope commands (MAIL, RCPT, DATA) in each read the server made, per read."""
    writes = []
    for chunk in sink.handler.reads:
        verbs = [line.split()[0].upper() for line in chunk.split(b"\r\n") if ENVELOPE_COMMAND.match(line)]
        if verbs:
            writes.append(verbs)
    return writes


def mail_commands(sink: MailSink) -> list[bytes]:
    return [
        line for chunk in sink.handler.reads for line in chunk.split(b"\r\n") if line.startswith(b"mail ")
    ]


# --- The envelope in one write ------------------------------------------------------------------


def test_the_envelope_goes_out_in_one_write_and_the_message_arrives_as_without():
    arrived = {}
    for pipelining in (True, False):
        with scripted_sink(pipelining=pipelining) as sink:
            with contextlib.closing(connect(sink)) as smtp:
                assert smtp.sendmail(SENDER, ["kari@uni.example"], MESSAGE) == {}
                assert smtp.payload_sent
            (mail,) = sink.received
            arrived[pipelining] = (mail.mail_from, mail.rcpt_tos, mail.data, mail_commands(sink))
            writes = envelope_writes(sink)
        if pipelining:
            assert writes == [[b"MAIL", b"RCPT", b"DATA"]]  # one read holds all three
        else:
            assert writes == [[b"MAIL"], [b"RCPT"], [b"DATA"]]
    assert arrived[True] == arrived[False]  # same envelope, same SIZE, same bytes
    assert b"\r\n.hidden dot\r\n" in arrived[True][2]
    assert arrived[True][3] == [f"mail FROM:<{SENDER}> size={len(MESSAGE)}".encode()]


def test_several_recipients_pipelined_report_the_refused_ones_as_smtplib_does(sink):
    to = ["a@uni.example", "ghost@bounce.example", "b@uni.example"]
    with contextlib.closing(connect(sink)) as smtp:
        refused = smtp.sendmail(SENDER, to, MESSAGE)
    assert refused == {"ghost@bounce.example": (550, b"5.1.1 No such user here")}
    (mail,) = sink.received
    assert mail.rcpt_tos == ("a@uni.example", "b@uni.example")
    if sink.handler.pipelining:
        assert envelope_writes(sink) == [[b"MAIL", b"RCPT", b"RCPT", b"RCPT", b"DATA"]]


def test_smtputf8_is_left_to_smtplib():
    with scripted_sink() as sink, contextlib.closing(connect(sink)) as smtp:
        smtp.sendmail(SENDER, ["åse@uni.example"], MESSAGE, mail_options=["SMTPUTF8"])
        assert [mail.rcpt_tos for mail in sink.received] == [("åse@uni.example",)]
        assert envelope_writes(sink) == [[b"MAIL"], [b"RCPT"], [b"DATA"]]


def test_the_setting_turns_pipelining_off(settings):
    for enabled, expected in (
        (True, [[b"MAIL", b"RCPT", b"DATA"]]),
        (False, [[b"MAIL"], [b"RCPT"], [b"DATA"]]),
    ):
        settings.MESSAGING_SMTP_PIPELINING = enabled
        with scripted_sink() as sink:
            use_sink(settings, sink)
            ((_item, result),) = EmailChannel().deliver([outgoing("kari@uni.example")])
            assert result.delivered
            assert envelope_writes(sink) == expected


# --- Refusals while pipelining: the same exceptions, nothing sent, the session usable -----------

REFUSALS = {
    "sender 5xx": (REFUSED_SENDER, "kari@uni.example", {}, smtplib.SMTPSenderRefused, 553),
    "sender 4xx": (BUSY_SENDER, "kari@uni.example", {}, smtplib.SMTPSenderRefused, 451),
    "recipient 550": (SENDER, "ghost@bounce.example", {}, smtplib.SMTPRecipientsRefused, 550),
    "recipient 451": (SENDER, "busy@tempfail.example", {}, smtplib.SMTPRecipientsRefused, 451),
    "DATA 554": (
        SENDER,
        "kari@uni.example",
        {"data_command_reply": "554 5.7.1 No"},
        smtplib.SMTPDataError,
        554,
    ),
    "DATA 451": (
        SENDER,
        "kari@uni.example",
        {"data_command_reply": "451 4.3.0 Later"},
        smtplib.SMTPDataError,
        451,
    ),
}


def refusal_code(exc: smtplib.SMTPException) -> int:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return next(iter(exc.recipients.values()))[0]
    return exc.smtp_code


@pytest.mark.parametrize(("sender", "to", "behaviour", "raised", "code"), REFUSALS.values(), ids=REFUSALS)
def test_a_refusal_raises_what_smtplib_raises_and_the_session_goes_on(
    sink, sender, to, behaviour, raised, code
):
    vars(sink.handler).update(behaviour)
    with contextlib.closing(connect(sink)) as smtp:
        with pytest.raises(raised) as refusal:
            smtp.sendmail(sender, [to], MESSAGE)
        assert refusal_code(refusal.value) == code
        assert not smtp.payload_sent
        assert sink.received == []
        sink.handler.data_command_reply = None
        smtp.sendmail(SENDER, ["kari@uni.example"], MESSAGE)  # same session, transaction reset
        assert smtp.payload_sent
    assert [mail.rcpt_tos for mail in sink.received] == [("kari@uni.example",)]
    assert sink.handler.sessions == 1


def test_a_refused_message_after_the_body_resets_for_the_next(sink):
    sink.handler.message_reply = "554 5.7.1 Looks like spam"
    with contextlib.closing(connect(sink)) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refusal:
            smtp.sendmail(SENDER, ["kari@uni.example"], MESSAGE)
        assert refusal.value.smtp_code == 554
        assert smtp.payload_sent  # the body went out: the server answered it
        sink.handler.message_reply = None
        smtp.sendmail(SENDER, ["kari@uni.example"], MESSAGE)
    assert len(sink.received) == 1 and sink.handler.sessions == 1


def test_data_accepted_after_every_recipient_was_refused_gets_a_lone_dot():
    """RFC 2920 §3.1: the client must check DATA's answer even when no RCPT was accepted, and
    end an accepted DATA with a single "." (no body), then reset."""
    with scripted_sink() as sink, contextlib.closing(connect(sink)) as smtp:
        sink.handler.accept_data_without_rcpt = True
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refusal:
            smtp.sendmail(SENDER, ["ghost@bounce.example"], MESSAGE)
        assert refusal_code(refusal.value) == 550
        assert sink.handler.empty_data == [b""]  # nothing between the 354 and the "."
        assert not smtp.payload_sent
        assert not any(b"Hello Kari" in chunk for chunk in sink.handler.reads)
        smtp.sendmail(SENDER, ["kari@uni.example"], MESSAGE)
    assert [mail.rcpt_tos for mail in sink.received] == [("kari@uni.example",)]
    assert sink.handler.sessions == 1


def test_a_server_that_hangs_up_after_refusing_every_recipient_gives_the_refusal(settings):
    """The refusal was read before the connection went: it is the answer (a fresh connection
    would only hear it again), not a lost connection."""
    with scripted_sink() as sink:
        sink.handler.drop_at_data = 1
        with (
            contextlib.closing(connect(sink)) as smtp,
            pytest.raises(smtplib.SMTPRecipientsRefused) as refusal,
        ):
            smtp.sendmail(SENDER, ["ghost@bounce.example"], MESSAGE)
        assert refusal_code(refusal.value) == 550
        sink.handler.drop_at_data = 1
        use_sink(settings, sink)
        result = deliver_one(outgoing("ghost@bounce.example"))
    assert (result.delivered, result.permanent, result.code, result.uncertain) == (False, True, 550, False)


# --- What the email channel makes of them: the same with and without pipelining ----------------


def use_sink(settings, sink: MailSink) -> None:
    settings.MAILERS = {
        "default": {
            "BACKEND": "messaging.engine.channels.smtp_backend.EmailBackend",
            "OPTIONS": {"host": sink.host, "port": sink.port, "timeout": 5},
        }
    }


def outgoing(address: str, sender: str = SENDER) -> Outgoing:
    return Outgoing(
        ref=address,
        address=address,
        subject="Exam",
        plain="Hello.",
        from_email=sender,
        headers={"Message-ID": f"<{address}@uni.example>"},
    )


def deliver_one(item: Outgoing):
    ((_item, result),) = EmailChannel().deliver([item])
    return result


CHANNEL_OUTCOMES = {
    "sender 4xx": (BUSY_SENDER, "kari@uni.example", {}, (False, 451)),
    "recipient 550": (SENDER, "ghost@bounce.example", {}, (True, 550)),
    "recipient 451": (SENDER, "busy@tempfail.example", {}, (False, 451)),
    "DATA 554": (SENDER, "kari@uni.example", {"data_command_reply": "554 5.7.1 No"}, (True, 554)),
    "DATA 451": (SENDER, "kari@uni.example", {"data_command_reply": "451 4.3.0 Later"}, (False, 451)),
}


@pytest.mark.parametrize(
    ("sender", "to", "behaviour", "expected"), CHANNEL_OUTCOMES.values(), ids=CHANNEL_OUTCOMES
)
def test_the_channel_classifies_a_refusal_as_without_pipelining(
    settings, sink, sender, to, behaviour, expected
):
    vars(sink.handler).update(behaviour)
    use_sink(settings, sink)
    channel = EmailChannel()

    def items():
        yield outgoing(to, sender)
        sink.handler.data_command_reply = None
        yield outgoing("next@uni.example")

    refused, following = (result for _item, result in channel.deliver(items()))
    assert (refused.delivered, refused.uncertain) == (False, False)
    assert (refused.permanent, refused.code) == expected
    assert following.delivered  # over the same session, reset after the refusal
    assert [mail.rcpt_tos for mail in sink.received] == [("next@uni.example",)]
    assert sink.handler.sessions == 1


def test_a_refused_sender_blocks_the_channel_as_without_pipelining(settings, sink):
    use_sink(settings, sink)
    with pytest.raises(ChannelUnavailable, match="refused our sender address: 553"):
        deliver_one(outgoing("kari@uni.example", REFUSED_SENDER))
    assert sink.received == []


# --- Lost connections and the at-most-once bookkeeping -----------------------------------------


def test_a_connection_lost_before_354_is_retried_on_a_fresh_connection(settings, sink):
    sink.handler.drop_at_data = 1
    with contextlib.closing(connect(sink)) as smtp:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.sendmail(SENDER, ["kari@uni.example"], MESSAGE)
        assert not smtp.payload_sent
    sink.handler.drop_at_data = 1
    use_sink(settings, sink)
    result = deliver_one(outgoing("kari@uni.example"))
    assert result.delivered and not result.uncertain
    assert [mail.rcpt_tos for mail in sink.received] == [("kari@uni.example",)]  # once
    assert sink.handler.sessions == 3  # the connection above, the dropped one, the fresh one


def test_a_connection_lost_after_the_body_is_uncertain(settings, sink):
    sink.handler.drop_after_body = 1
    use_sink(settings, sink)
    result = deliver_one(outgoing("kari@uni.example"))
    assert (result.delivered, result.uncertain) == (False, True)
    assert "after the message was sent" in result.reason
    assert len(sink.received) == 1  # the server has it; not sent again at once


def test_the_attempt_deadline_bounds_the_pipelined_answers():
    with scripted_sink() as sink:
        sink.handler.rcpt_delay = 1.0
        smtp = connect(sink)
        smtp.ehlo()
        smtp.deadline = time.monotonic() + 0.2
        with contextlib.closing(smtp), pytest.raises(OSError):  # timed out: SMTPServerDisconnected
            smtp.sendmail(SENDER, ["kari@uni.example"], MESSAGE)
        assert not smtp.payload_sent
        assert smtp.sock is None  # closed: the rest of the group's answers must not be read later
    assert sink.received == []
