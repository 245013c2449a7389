"""Bounces (RFC 3464 delivery status notifications and older formats) and auto-replies that mail
servers send back to our envelope sender, parsed into plain data.

No models and no database, so the mail intake and the tests can call it alike. Standard reports are
read with the stdlib; non-standard formats are left to flufl.bounce, whose detectors grew from years
of real samples."""

from __future__ import annotations

import email
import enum
import hashlib
import re
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value, getaddresses, parseaddr, parsedate_to_datetime

from flufl.bounce import all_failures

_SMTP_CODE = re.compile(
    r"(?<![\w.])(?:(?P<reply>[245]\d\d)[ -](?P<status>[245]\.\d{1,3}\.\d{1,3}(?![\w.]))?"
    r"|(?P<bare>[245]\.\d{1,3}\.\d{1,3})(?![\w.]))"
)
_REPORT_TYPES = ("delivery-status", "global-delivery-status")
_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status", "text/delivery-status")
_ORIGINAL_TYPES = ("message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers")
_ADDRESSED_TO = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_MAIL_SERVERS = ("mailer-daemon", "postmaster")
_NEARBY_LINES = 8
_DIAGNOSTIC_LIMIT = 1000
_SUBJECT_LIMIT = 255


class Kind(enum.StrEnum):
    BOUNCE = "bounce"
    DELAY = "delay"
    AUTO_REPLY = "auto_reply"
    UNRECOGNISED = "unrecognised"


@dataclass(frozen=True)
class RecipientReport:
    address: str
    action: str
    permanent: bool
    status: str
    diagnostic: str


@dataclass(frozen=True)
class Report:
    kind: Kind
    recipients: tuple[RecipientReport, ...]
    original_message_id: str
    addressed_to: tuple[str, ...]
    report_id: str
    arrived_at: datetime | None
    subject: str
    reason: str


def parse_report(raw: bytes) -> Report:
    """Classify one returned message. Never raises: junk in the bounce mailbox must not stop the
    intake, so anything unreadable comes back UNRECOGNISED with the reason."""
    try:
        if not raw.strip():
            return _unreadable(raw, "The message is empty.")
        return _classify(raw, email.message_from_bytes(raw, policy=compat32))
    except Exception as error:
        return _unreadable(raw, f"The message could not be parsed ({type(error).__name__}).")


def _classify(raw: bytes, msg: Message) -> Report:
    """A standard report is trusted first. An auto-reply is settled before any heuristics run,
    because flufl.bounce's loosest detectors match ordinary out-of-office prose; mail from a mail
    server is never an auto-reply, since Exim marks its own bounces Auto-Submitted. flufl.bounce
    reads only mail from a mail server: on anything else its catch-all takes "Eva, bob@x.org, and"
    in a person's reply for a failed address, and a wrong suppression is worse than a message
    kept for staff to read."""
    if (status_part := _status_part(msg)) is not None:
        return _from_dsn(raw, msg, status_part)
    if _from_mail_server(msg):
        found = _from_flufl(raw, msg)
        return found or _report(
            raw, msg, Kind.UNRECOGNISED, reason="No failed recipients found in the message."
        )
    if _is_auto_reply(msg):
        return _report(raw, msg, Kind.AUTO_REPLY, original=_replied_to(msg))
    return _report(raw, msg, Kind.UNRECOGNISED, reason="Neither a delivery report nor an automatic reply.")


def _status_part(msg: Message) -> Message | None:
    """The machine-readable part of a multipart/report, which RFC 6522 puts second whatever some
    servers label it."""
    for part in msg.walk():
        report_type = collapse_rfc2231_value(part.get_param("report-type", "")).lower()
        if part.get_content_type() != "multipart/report" or report_type not in _REPORT_TYPES:
            continue
        children = [child for child in part.get_payload() if isinstance(child, Message)]
        typed = [child for child in children if child.get_content_type() in _STATUS_TYPES]
        return (typed or children[1:] or [None])[0]
    return None


def _from_dsn(raw: bytes, msg: Message, status_part: Message) -> Report:
    blocks = _status_blocks(status_part)
    found = [(block, entry) for block in blocks if (entry := _dsn_recipient(block)) is not None]
    recipients = _unique(entry for _, entry in found)
    if not recipients:
        reason = "The delivery status notification reports no failed or delayed recipients."
        return _report(raw, msg, Kind.UNRECOGNISED, reason=reason)
    kind = Kind.BOUNCE if any(entry.action == "failed" for entry in recipients) else Kind.DELAY
    dates = [_header(block, "Arrival-Date") for block in blocks]
    dates += [_header(found[0][0], "Last-Attempt-Date"), _header(msg, "Date")]
    arrived_at = next(filter(None, map(_date, dates)), None)
    return _report(raw, msg, kind, recipients, _original_id(msg), arrived_at)


def _status_blocks(part: Message) -> list[Message]:
    """The per-message and per-recipient field blocks. The stdlib splits message/delivery-status
    itself; the global and mislabelled variants are split again from their text."""
    payload = part.get_payload()
    if part.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message)]
    if isinstance(payload, list):
        text = "\n\n".join(child.as_string() for child in payload if isinstance(child, Message))
    else:
        text = _part_text(part)
    chunks = "\n".join(text.splitlines()).split("\n\n")
    return [HeaderParser(policy=compat32).parsestr(chunk.strip()) for chunk in chunks if chunk.strip()]


def _dsn_recipient(block: Message) -> RecipientReport | None:
    """One per-recipient block, or None for delivered/relayed/expanded ones. OpenSMTPD writes the
    non-standard "Action: error" for a failure."""
    words = _header(block, "Action").replace("(", " ").split()
    action = words[0].lower() if words else ""
    if action.startswith("fail") or action == "error":
        action = "failed"
    elif action != "delayed":
        return None
    address = _dsn_address(block, "Original-Recipient") or _dsn_address(block, "Final-Recipient")
    if not address:
        return None
    value = _header(block, "Diagnostic-Code")
    kind, separator, reply = value.partition(";")
    diagnostic = _one_line(reply if separator and " " not in kind.strip() else value, _DIAGNOSTIC_LIMIT)
    return _recipient(address, action, _codes(_header(block, "Status"))[1], diagnostic)


def _dsn_address(block: Message, name: str) -> str:
    """Original-Recipient is preferred: it is the address we sent to, where Final-Recipient may be
    where an alias or forward led."""
    kind, separator, address = _header(block, name).partition(";")
    if not separator:
        address = kind
    elif kind.strip().lower() not in ("rfc822", "utf-8"):
        return ""
    return _address(address)


def _from_flufl(raw: bytes, msg: Message) -> Report | None:
    """flufl.bounce only names the addresses, so the SMTP reply is looked for next to each one. Its
    temporary failures come from warnings that promise a retry, hence "delayed"."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception:
        return None
    actions = {_address(item.decode("ascii", "replace")): "delayed" for item in temporary}
    actions |= {_address(item.decode("ascii", "replace")): "failed" for item in permanent}
    actions.pop("", None)
    text = _body_text(msg)
    recipients = [
        _recipient(item, action, "", _nearby_reply(item, text)) for item, action in sorted(actions.items())
    ]
    if not recipients:
        return None
    kind = Kind.BOUNCE if "failed" in actions.values() else Kind.DELAY
    return _report(raw, msg, kind, recipients, _original_id(msg))


def _address(text: str) -> str:
    return _one_line(text, 320).strip("<>").strip().lower()


def _recipient(address: str, action: str, status: str, diagnostic: str) -> RecipientReport:
    """A status code missing from its own field is often still in the reply text."""
    status = status or _codes(diagnostic)[1]
    return RecipientReport(
        address, action, _is_permanent(status, diagnostic, action == "failed"), status, diagnostic
    )


def _nearby_reply(address: str, text: str) -> str:
    """The first SMTP reply in the paragraph that names the address, as Exim and qmail lay out."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if address not in line.lower():
            continue
        for nearby in lines[index : index + _NEARBY_LINES]:
            if not nearby.strip():
                break
            if match := _SMTP_CODE.search(nearby):
                return _one_line(nearby[match.start() :], _DIAGNOSTIC_LIMIT)
    return ""


def _codes(text: str) -> tuple[str, str]:
    """(SMTP reply code, enhanced status code) of the first reply in the text, each maybe ""."""
    match = _SMTP_CODE.search(text)
    if match is None:
        return "", ""
    return match["reply"] or "", match["status"] or match["bare"] or ""


def _is_permanent(status: str, diagnostic: str, default: bool) -> bool:
    """The status class decides, else the reply code: a mailbox found full is soft even when the
    server has given up on this one message."""
    first = (status or _codes(diagnostic)[0])[:1]
    return first == "5" if first in ("4", "5") else default


def _is_auto_reply(msg: Message) -> bool:
    """RFC 3834 and the older vendor flags. X-Auto-Response-Suppress only asks others not to
    answer, so Outlook sets it on ordinary mail too."""
    words = _header(msg, "Auto-Submitted").replace(";", " ").replace("(", " ").split()
    if words and words[0].lower() != "no":
        return True
    if _header(msg, "X-Autoreply").strip() or _header(msg, "X-Autorespond").strip():
        return True
    return _header(msg, "Precedence").strip().lower() == "auto_reply"


def _from_mail_server(msg: Message) -> bool:
    """Only mail servers add X-Failed-Recipients. A null Return-Path proves nothing here: RFC 3834
    asks auto-replies to use one as well."""
    local = parseaddr(_header(msg, "From"))[1].partition("@")[0].lower()
    return local in _MAIL_SERVERS or bool(_header(msg, "X-Failed-Recipients").strip())


def _original_id(msg: Message) -> str:
    """From the returned original's headers, else from a copy quoted in the text."""
    for part in msg.walk():
        if part.get_content_type() not in _ORIGINAL_TYPES:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            headers = payload[0] if payload and isinstance(payload[0], Message) else Message()
        else:
            headers = HeaderParser(policy=compat32).parsestr(_part_text(part).lstrip())
        if found := _message_id(_header(headers, "Message-ID")):
            return found
    lines = _body_text(msg).splitlines()
    for index, line in enumerate(lines):
        name, separator, value = line.lstrip(" \t>").partition(":")
        if separator and name.strip().lower() == "message-id":
            return _message_id(value if value.strip() else "".join(lines[index + 1 : index + 2]))
    return ""


def _replied_to(msg: Message) -> str:
    """In-Reply-To names the message answered; References ends with it."""
    return _message_id(_header(msg, "In-Reply-To")) or _message_id(_header(msg, "References"), last=True)


def _message_id(value: str, last: bool = False) -> str:
    value = _one_line(value, 998)
    start = value.rfind("<") if last else value.find("<")
    end = value.find(">", start)
    if start >= 0 and end > start:
        return value[start : end + 1]
    return value.split()[0] if value.split() else ""


def _report(
    raw: bytes,
    msg: Message,
    kind: Kind,
    recipients: Iterable[RecipientReport] = (),
    original: str = "",
    arrived_at: datetime | None = None,
    reason: str = "",
) -> Report:
    return Report(
        kind=kind,
        recipients=tuple(recipients),
        original_message_id=original,
        addressed_to=_addressed_to(msg),
        report_id=_message_id(_header(msg, "Message-ID")) or _digest(raw),
        arrived_at=arrived_at or _date(_header(msg, "Date")),
        subject=_subject(msg),
        reason=reason,
    )


def _unreadable(raw: bytes, reason: str) -> Report:
    report_id = _digest(raw) if isinstance(raw, bytes | bytearray) else ""
    return Report(Kind.UNRECOGNISED, (), "", (), report_id, None, "", reason)


def _digest(raw: bytes) -> str:
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def _unique(entries: Iterable[RecipientReport]) -> tuple[RecipientReport, ...]:
    """The first block per address wins: a server that lists a recipient twice reports one failure."""
    seen: dict[str, RecipientReport] = {}
    for entry in entries:
        seen.setdefault(entry.address, entry)
    return tuple(seen.values())


def _addressed_to(msg: Message) -> tuple[str, ...]:
    found: list[str] = []
    for name in _ADDRESSED_TO:
        for _, address in getaddresses([str(value) for value in msg.get_all(name, [])]):
            address = _one_line(address, 320).lower()
            if "@" in address and address not in found:
                found.append(address)
    return tuple(found)


def _subject(msg: Message) -> str:
    value = _header(msg, "Subject")
    with suppress(ValueError, LookupError, MessageError):
        value = str(make_header(decode_header(value)))
    return _one_line(value, _SUBJECT_LIMIT)


def _date(value: str) -> datetime | None:
    """RFC 5322's "-0000" (UTC, local zone unknown) parses naive; it is still UTC."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _header(msg: Message, name: str) -> str:
    """compat32 hands back a Header object, not a str, for a raw 8-bit value."""
    value = msg.get(name)
    return "" if value is None else str(value)


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    try:
        return payload.decode(part.get_content_charset() or "utf-8", "replace")
    except (LookupError, ValueError):
        return payload.decode("utf-8", "replace")


def _body_text(msg: Message) -> str:
    return "\n".join(_part_text(part) for part in msg.walk() if part.get_content_type() == "text/plain")


def _one_line(text: str, limit: int) -> str:
    """Whitespace collapsed, and safe to store: raw 8-bit bytes arrive as lone surrogates and a NUL
    is refused by PostgreSQL."""
    text = " ".join(text.replace("\x00", "").split())
    return text.encode("utf-8", "replace").decode("utf-8")[:limit]
