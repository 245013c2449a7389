"""A cheaper EmailMultiAlternatives for bulk sending.

Django 6.1 builds every email with the stdlib's modern email API: set_content() and
add_alternative() parse each header back through the header registry, and the generator refolds
every header on output. That costs several milliseconds for a two-part message, the largest
single cost of sending. FastEmailMultiAlternatives.message() writes the same
multipart/alternative message (headers, text/plain body, text/html alternative) directly as
bytes, and returns a real email.message.EmailMessage whose parts and headers are set the way
the parser would set them, so backends that inspect the message keep working; as_bytes() returns
the prepared bytes without running the generator.

Attachments that are PreparedParts (messaging.compose.attachments makes them) are written
once per policy and joined in as bytes: the generator would otherwise rewrite every base64 line
of a large file for each receiver. Other attachments, non-text alternatives, an SMTPUTF8 or
legacy policy, a charset other than UTF-8, non-string header values and an address whose local
part is not ASCII fall back to Django's own message(), so behaviour never changes, only speed.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import random
import re
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage as StdlibEmailMessage
from email.message import MIMEPart
from email.policy import EmailPolicy
from email.utils import format_datetime, formataddr, getaddresses
from functools import lru_cache

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import DNS_NAME, make_msgid
from django.utils.encoding import punycode
from django.utils.timezone import get_current_timezone

HEADER_NAME_RE = re.compile(r"^[!-9;-~]+$")  # printable ASCII except ":" (RFC 5322 ftext)
ADDRESS_HEADERS = frozenset({"from", "sender", "reply-to", "to", "cc", "resent-from", "resent-to"})
_HANDLED_HEADERS = frozenset({"from", "to", "cc", "reply-to"})
_MUTATORS = (
    "__setitem__",
    "__delitem__",
    "add_header",
    "replace_header",
    "set_param",
    "del_param",
    "set_type",
    "set_boundary",
    "set_charset",
    "set_payload",
    "attach",
    "set_content",
    "add_related",
    "add_alternative",
    "add_attachment",
    "make_related",
    "make_alternative",
    "make_mixed",
    "clear",
    "clear_content",
)


class _Fallback(Exception):
    """This message needs Django's general-purpose builder."""


def _check_value(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        # Django 6.1 (through the stdlib's header registry) refuses these with ValueError.
        raise ValueError(f"Header values can't contain newlines (got {value!r} for header {name!r})")


def _unstructured(name: str, value: str, linesep: str) -> str:
    """An unstructured header value (Subject, X-...), folded and RFC 2047-encoded as needed."""
    _check_value(name, value)
    if "=?" in value:
        raise _Fallback  # the header registry decodes encoded-word lookalikes; keep its reading
    if value.isascii():
        if len(name) + 2 + len(value) <= 78:
            return value
        return Header(value, header_name=name, maxlinelen=78).encode(linesep=linesep)
    return Header(value, "utf-8", header_name=name, maxlinelen=78).encode(linesep=linesep)


class OneLineHeader(str):
    """A header value written whole on its own line, never folded or RFC 2047-encoded: a
    List-Unsubscribe URL (RFC 2369, RFC 8058) is one long token that the stdlib would otherwise
    turn into encoded words, which mail programs do not read as a URL. Both builders keep it
    (the policy writes a header object that has a name through its fold()); a value that is not
    ASCII or too long for a line (RFC 5322: 998 characters) folds as usual."""

    def __new__(cls, name: str, value: str):
        header = super().__new__(cls, value)
        header.name = name
        return header

    def __getnewargs__(self):  # copy and pickle (the locmem backend deep-copies each email)
        return self.name, str(self)

    @property
    def fits(self) -> bool:
        return self.isascii() and len(self.name) + 2 + len(self) <= MAX_LINE

    def fold(self, *, policy) -> str:
        _check_value(self.name, self)
        if not self.fits:
            return policy.header_factory(self.name, str(self)).fold(policy=policy)
        return f"{self.name}: {self}{policy.linesep}"


MAX_LINE = 998


def _address(value: str) -> str:
    """One address header element, with non-ASCII display names encoded and IDNA domains."""
    if value.isascii():
        return value
    pairs = getaddresses([value])
    if len(pairs) != 1:
        raise _Fallback
    name, addr = pairs[0]
    localpart, at, domain = addr.rpartition("@")
    if not at or not localpart.isascii():
        raise _Fallback
    return formataddr((name, f"{localpart}@{punycode(domain)}"), charset="utf-8")


@lru_cache(maxsize=256)
def _address_list(name: str, values: tuple[str, ...], linesep: str) -> str:
    for value in values:
        _check_value(name, value)
    joined = ", ".join(_address(v) for v in values)
    if len(name) + 2 + len(joined) > 78 and len(values) > 1:
        joined = ("," + linesep + " ").join(_address(v) for v in values)
    return joined


def _encode_text(text: str, policy: EmailPolicy) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded body with policy.linesep), as the stdlib chooses:
    7bit for short ASCII lines, 8bit for short lines when the policy allows it, else the
    shorter of quoted-printable and base64."""
    linesep = policy.linesep.encode("ascii")
    data = text.encode("utf-8")
    lines = data.splitlines()
    if max((len(line) for line in lines), default=0) <= policy.max_line_length:
        if data.isascii():
            return "7bit", linesep.join(lines) + linesep
        if policy.cte_type == "8bit":
            return "8bit", linesep.join(lines) + linesep
    joined = b"\n".join(lines) + b"\n"
    non_ascii = len(joined) - len(joined.decode("utf-8").encode("ascii", "ignore")) if joined else 0
    if len(joined) + 2 * non_ascii <= len(joined) * 4 // 3:
        encoded = binascii.b2a_qp(joined, istext=True)
        return "quoted-printable", encoded.replace(b"\n", linesep)
    encoded = base64.encodebytes(linesep.join(lines) + linesep)
    return "base64", encoded.replace(b"\n", linesep)


def _boundary(parts: list[bytes]) -> str:
    while True:
        boundary = f"==============={random.randrange(10**18, 10**19)}=="
        token = boundary.encode("ascii")
        if not any(token in part for part in parts):
            return boundary


class PreparedMessage(StdlibEmailMessage):
    """An EmailMessage (headers and parts set as the parser sets them) that carries its own
    serialization. Any change to the message itself drops the prepared bytes, and the
    stdlib's generator serializes it from then on."""

    _prepared: bytes | None = None

    def as_bytes(self, unixfrom=False, policy=None):
        if self._prepared is not None and not unixfrom and (policy is None or policy == self.policy):
            return self._prepared
        return super().as_bytes(unixfrom=unixfrom, policy=policy)

    def __bytes__(self):
        return self.as_bytes()


def _invalidating(method_name: str):
    original = getattr(StdlibEmailMessage, method_name)

    def method(self, *args, **kwargs):
        self._prepared = None
        return original(self, *args, **kwargs)

    method.__name__ = method_name
    method.__doc__ = original.__doc__
    return method


for _name in _MUTATORS:
    setattr(PreparedMessage, _name, _invalidating(_name))


def _part(policy: EmailPolicy, subtype: str, text: str) -> tuple[StdlibEmailMessage, bytes]:
    cte, body = _encode_text(text, policy)
    part = StdlibEmailMessage(policy=policy)
    content_type = f'text/{subtype}; charset="utf-8"'
    part._headers = [("Content-Type", content_type), ("Content-Transfer-Encoding", cte)]
    linesep = policy.linesep
    # The parser keeps 8bit bytes as surrogate escapes; get_content() decodes them.
    part._payload = body.decode("ascii", "surrogateescape")
    head = f"Content-Type: {content_type}{linesep}Content-Transfer-Encoding: {cte}{linesep}{linesep}"
    return part, head.encode("ascii") + body


class PreparedPart(MIMEPart):
    """A MIME part (an attachment) that keeps its serialization per policy, so that every
    email it is attached to reuses the same bytes. Treat it as read-only once attached."""

    def __init__(self, policy=None):
        super().__init__(policy=policy)
        self._serialized: dict[str, bytes] = {}

    def serialized(self, policy: EmailPolicy) -> bytes:
        key = repr(policy)  # equal policies (each clone is a new object) share one entry
        if key not in self._serialized:
            self._serialized[key] = self.as_bytes(policy=policy)
        return self._serialized[key]


_CONTENT_HEADERS = frozenset({"content-type", "content-transfer-encoding"})


class FastEmailMultiAlternatives(EmailMultiAlternatives):
    """EmailMultiAlternatives with a fast message() for text bodies and text alternatives, and
    prepared attachments."""

    def message(self, *, policy=email.policy.default):
        try:
            if self.attachments and all(isinstance(a, PreparedPart) for a in self.attachments):
                return self._with_prepared_attachments(policy)
            return self._fast_message(policy)
        except _Fallback:
            return super().message(policy=policy)

    def _with_prepared_attachments(self, policy) -> StdlibEmailMessage:
        """multipart/mixed as Django writes it: the text part(s) from _fast_message, then each
        attachment's prepared bytes. (Base64 never holds the "===" a boundary starts with.)"""
        attachments, self.attachments = self.attachments, []
        try:
            inner = self._fast_message(policy)
        finally:
            self.attachments = attachments
        linesep = policy.linesep
        head, body = inner._prepared.split((linesep + linesep).encode("ascii"), 1)
        fields = re.split(f"{linesep}(?![ \t])", head.decode("ascii"))
        content = [f for f in fields if f.split(":", 1)[0].lower() in _CONTENT_HEADERS]
        rest = [f for f in fields if f.split(":", 1)[0].lower() not in {*_CONTENT_HEADERS, "mime-version"}]
        boundary = _boundary([inner._prepared])
        content_type = f'multipart/mixed;{linesep} boundary="{boundary}"'
        top = [f"Content-Type: {content_type}", "MIME-Version: 1.0", *rest]
        between = f"{linesep}--{boundary}{linesep}".encode("ascii")
        pieces = [
            (linesep.join(top) + linesep + linesep + f"--{boundary}{linesep}").encode("ascii"),
            (linesep.join(content) + linesep + linesep).encode("ascii"),
            body,
        ]
        for attachment in attachments:
            pieces += [between, attachment.serialized(policy)]
        pieces.append(f"{linesep}--{boundary}--{linesep}".encode("ascii"))
        msg = PreparedMessage(policy=policy)
        msg._prepared = b"".join(pieces)  # one copy of the attachments' bytes per email
        text = StdlibEmailMessage(policy=policy)
        text._headers = [(name, value) for name, value in inner._headers if name.lower() in _CONTENT_HEADERS]
        text._payload = inner._payload
        msg._headers = [
            ("Content-Type", _unfold(content_type)),
            ("MIME-Version", "1.0"),
            *((n, v) for n, v in inner._headers if n.lower() not in {*_CONTENT_HEADERS, "mime-version"}),
        ]
        msg._payload = [text, *attachments]
        return msg

    def _fast_message(self, policy) -> StdlibEmailMessage:
        if (
            not isinstance(policy, EmailPolicy)
            or policy.utf8
            or self.attachments
            or self.content_subtype != "plain"
            or (self.encoding or settings.DEFAULT_CHARSET).lower().replace("_", "-") != "utf-8"
            or not isinstance(self.body, str)
            or any(
                not (isinstance(a.content, str) and a.mimetype.startswith("text/")) for a in self.alternatives
            )
            or any(
                not isinstance(v, str) or not HEADER_NAME_RE.match(k) for k, v in self.extra_headers.items()
            )
        ):
            raise _Fallback
        linesep = policy.linesep
        headers: list[tuple[str, str]] = []

        subject = str(self.subject)
        headers.append(("Subject", _unstructured("Subject", subject, linesep)))
        from_value = str(self.extra_headers.get("From", self.from_email))
        headers.append(("From", _address_list("From", (from_value,), linesep)))
        for header, values in (("To", self.to), ("Cc", self.cc), ("Reply-To", self.reply_to)):
            if header in self.extra_headers:
                headers.append((header, _address_list(header, (self.extra_headers[header],), linesep)))
            elif values:
                headers.append((header, _address_list(header, tuple(str(v) for v in values), linesep)))
        lowered = {key.lower() for key in self.extra_headers}
        if "date" not in lowered:
            tz = get_current_timezone() if getattr(settings, "EMAIL_USE_LOCALTIME", False) else UTC
            headers.append(("Date", format_datetime(datetime.now(tz))))
        if "message-id" not in lowered:
            headers.append(("Message-ID", make_msgid(domain=DNS_NAME)))
        for name, value in self.extra_headers.items():
            header = name.lower()
            if header == "bcc":
                raise ValueError(
                    'Bcc is not a valid email header. Use the "bcc" argument to specify '
                    "blind carbon copy recipients."
                )
            if header in _HANDLED_HEADERS:
                continue
            if header in ADDRESS_HEADERS:
                headers.append((name, _address_list(name, (value,), linesep)))
            elif isinstance(value, OneLineHeader):
                _check_value(name, value)
                if not value.fits or value.name.lower() != header:
                    raise _Fallback
                headers.append((name, value))
            elif header in {"message-id", "date", "in-reply-to", "references"}:
                _check_value(name, value)
                if not value.isascii():
                    raise _Fallback
                headers.append((name, value))
            else:
                headers.append((name, _unstructured(name, value, linesep)))

        texts = []
        if self.body or not self.alternatives:
            texts.append(("plain", self.body))
        texts.extend((a.mimetype.split("/", 1)[1], a.content) for a in self.alternatives)
        built = [_part(policy, subtype, text) for subtype, text in texts]

        msg = PreparedMessage(policy=policy)
        if len(built) == 1:
            part, data = built[0]
            head_end = data.index((linesep + linesep).encode("ascii"))
            msg._headers = [*part._headers, ("MIME-Version", "1.0"), *headers]
            msg._payload = part._payload
            body = data[head_end + 2 * len(linesep) :]
            top = msg._headers
        else:
            boundary = _boundary([data for _part_msg, data in built])
            msg._headers = [
                ("Content-Type", f'multipart/alternative;{linesep} boundary="{boundary}"'),
                ("MIME-Version", "1.0"),
                *headers,
            ]
            msg._payload = [part for part, _data in built]
            # As the stdlib's generator writes it: the line break before each delimiter
            # belongs to the delimiter, so every part keeps its own final line break.
            first = f"--{boundary}{linesep}".encode("ascii")
            between = f"{linesep}--{boundary}{linesep}".encode("ascii")
            close = f"{linesep}--{boundary}--{linesep}".encode("ascii")
            body = first + between.join(data for _part_msg, data in built) + close
            top = msg._headers
        head = "".join(f"{name}: {value}{linesep}" for name, value in top) + linesep
        msg._prepared = head.encode("ascii") + body
        msg._headers = [(name, _unfold(value)) for name, value in msg._headers]
        return msg


def _unfold(value: str) -> str:
    """Header values as the parser stores them (line breaks of folding removed)."""
    return value.replace("\r\n", "").replace("\n", "") if ("\n" in value) else value
