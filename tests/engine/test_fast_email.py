"""FastEmailMultiAlternatives builds the same message as Django's EmailMultiAlternatives.

Every check parses the bytes back with the stdlib (policy.default) and compares what a mail
client sees (headers, decoded parts) with what the plain Django class produces.
"""

from __future__ import annotations

import email
import email.policy
from email.utils import parsedate_to_datetime

import pytest
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.locmem import EmailBackend as LocmemBackend

from messaging.engine.channels.fast_email import FastEmailMultiAlternatives, PreparedMessage

LONG_LINE = "Dette er en veldig lang linje uten linjeskift, med æøå og ÆØÅ, " * 12
HTML = (
    "<h1>Påminnelse</h1>\n<p>Hei Åse, fristen er flyttet til fredag. Blåbærsyltetøy!</p>\n"
    f'<p><a href="https://example.org/a/very/long/path?with=query&and=more">lenke</a> {LONG_LINE}</p>\n'
)
PLAIN = f"Hei Åse, fristen er flyttet til fredag.\n\n{LONG_LINE}\n\nFrom the staff\n.\nHilsen oss"

CASES = {
    "ascii": ("Deadline moved", "Hello there.\nSee you.", "<p>Hello there.</p>", "user@example.org"),
    "norwegian": ("Påminnelse: frist æøå", PLAIN, HTML, "user@example.org"),
    "long ascii subject": (
        "A rather long subject line that certainly goes past the seventy-eight character limit "
        "of a header line",
        "Body",
        "<p>Body</p>",
        "user@example.org",
    ),
    "long non-ascii subject": ("Påminnelse: " + "frist æøå " * 20, PLAIN, HTML, "user@example.org"),
    "encoded-word lookalike": ("=?utf-8?q?not_encoded?= really", "x", "<p>x</p>", "user@example.org"),
    "display name": ("Hei", "x", "<p>x</p>", "Åse Ås <ase@example.org>"),
    "idna domain": ("Hei", "x", "<p>x</p>", "ase@blåbær.example"),
    "only ascii long lines": ("Hi", "word " * 300, "<p>" + "word " * 300 + "</p>", "user@example.org"),
    "cjk": ("通知", "こんにちは世界 " * 40, "<p>" + "こんにちは世界 " * 40 + "</p>", "user@example.org"),
}


def build(cls, subject, plain, html, to, **kwargs):
    mail = cls(
        subject=subject,
        body=plain,
        to=[to],
        headers={"Message-ID": "<receiver-1.message-2@messaging.local>"},
        **kwargs,
    )
    if html is not None:
        mail.attach_alternative(html, "text/html")
    return mail


def parsed(cls, *args, policy=email.policy.SMTP, **kwargs) -> email.message.EmailMessage:
    data = build(cls, *args, **kwargs).message(policy=policy).as_bytes()
    return email.message_from_bytes(data, policy=email.policy.default)


def normalized(text: str) -> str:
    return text.replace("\r\n", "\n")


@pytest.mark.parametrize("policy", [email.policy.SMTP, email.policy.default], ids=["SMTP", "default"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_same_message_as_django(case, policy):
    subject, plain, html, _to = case
    ours = parsed(FastEmailMultiAlternatives, *case, policy=policy)
    django = parsed(EmailMultiAlternatives, *case, policy=policy)

    for header in ("Subject", "From", "To", "Message-ID", "MIME-Version"):
        assert str(ours[header]) == str(django[header]), header
    if "=?" not in subject:  # Django's header registry decodes encoded-word lookalikes
        assert ours["Subject"] == subject
    assert ours["MIME-Version"] == "1.0"
    assert parsedate_to_datetime(ours["Date"]).tzinfo is not None
    assert ours.get_content_type() == django.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in ours.iter_parts()] == ["text/plain", "text/html"]
    assert not ours.defects and all(not p.defects for p in ours.walk())

    for kind, original in (("plain", plain), ("html", html)):
        our_text = ours.get_body((kind,)).get_content()
        assert our_text == django.get_body((kind,)).get_content()
        assert normalized(our_text).rstrip("\n") == normalized(original).rstrip("\n")


def test_lines_stay_within_the_limit():
    data = build(FastEmailMultiAlternatives, *CASES["norwegian"]).message(policy=email.policy.SMTP).as_bytes()
    assert max(len(line) for line in data.split(b"\r\n")) <= 78
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_plain_only_message():
    ours = parsed(FastEmailMultiAlternatives, "Påminnelse", PLAIN, None, "user@example.org")
    django = parsed(EmailMultiAlternatives, "Påminnelse", PLAIN, None, "user@example.org")
    assert ours.get_content_type() == django.get_content_type() == "text/plain"
    assert ours.get_content() == django.get_content()
    assert ours["Subject"] == "Påminnelse"


def test_generated_message_id_and_date_when_not_given():
    mail = FastEmailMultiAlternatives(subject="Hi", body="x", to=["a@example.org"])
    parsed_back = email.message_from_bytes(mail.message().as_bytes(), policy=email.policy.default)
    assert parsed_back["Message-ID"].startswith("<") and parsed_back["Message-ID"].endswith(">")
    assert parsedate_to_datetime(parsed_back["Date"])
    assert parsed_back["From"] == "Messaging <noreply@localhost>"


def test_the_message_object_is_usable_like_djangos():
    msg = build(FastEmailMultiAlternatives, *CASES["norwegian"]).message()
    assert isinstance(msg, email.message.EmailMessage)
    assert msg["Subject"] == "Påminnelse: frist æøå"
    assert msg.get_body(("html",)).get_content() == HTML
    assert normalized(msg.get_body(("plain",)).get_content()).rstrip("\n") == PLAIN


def test_changing_the_message_drops_the_prepared_bytes():
    msg = build(FastEmailMultiAlternatives, *CASES["ascii"]).message()
    assert isinstance(msg, PreparedMessage)
    msg["X-Extra"] = "1"
    reparsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert reparsed["X-Extra"] == "1"
    assert reparsed.get_body(("plain",)).get_content().rstrip() == "Hello there.\nSee you."


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subject": "Hello\nBcc: victim@example.org"},
        {"subject": "Hello\r\nX-Injected: 1"},
        {"to": ["user@example.org\nBcc: victim@example.org"]},
        {"headers": {"X-Custom": "a\nb"}},
    ],
    ids=["subject LF", "subject CRLF", "to", "extra header"],
)
@pytest.mark.parametrize("cls", [EmailMultiAlternatives, FastEmailMultiAlternatives])
def test_header_injection_is_refused(cls, kwargs):
    fields = {"subject": "Hi", "body": "x", "to": ["user@example.org"], **kwargs}
    mail = cls(**fields)
    mail.attach_alternative("<p>x</p>", "text/html")
    with pytest.raises(ValueError):
        mail.message(policy=email.policy.SMTP).as_bytes()


def test_bcc_header_is_refused_like_django():
    mail = FastEmailMultiAlternatives(
        subject="Hi", body="x", to=["a@example.org"], headers={"Bcc": "b@x.org"}
    )
    with pytest.raises(ValueError, match="Bcc"):
        mail.message()


def test_attachments_fall_back_to_django():
    mail = build(FastEmailMultiAlternatives, *CASES["norwegian"])
    mail.attach("notes.txt", "æøå", "text/plain")
    msg = mail.message()
    assert not isinstance(msg, PreparedMessage)
    assert msg.get_content_type() == "multipart/mixed"


def test_locmem_backend_accepts_it():
    backend = LocmemBackend()
    from django.core import mail

    mail.outbox = []
    assert backend.send_messages([build(FastEmailMultiAlternatives, *CASES["norwegian"])]) == 1
    assert mail.outbox[0].subject == "Påminnelse: frist æøå"


def test_smtp_backend_delivers_it(smtp_mailer):
    from django.core import mail

    sink = smtp_mailer
    sent = mail.mailers.default.send_messages(
        [
            build(FastEmailMultiAlternatives, *CASES["norwegian"]),
            build(EmailMultiAlternatives, *CASES["norwegian"]),
        ]
    )
    assert sent == 2
    ours, django = (m.message for m in sink.received)
    assert ours["Subject"] == django["Subject"] == "Påminnelse: frist æøå"
    assert sink.received[0].rcpt_tos == ("user@example.org",)
    for kind in ("plain", "html"):
        assert ours.get_body((kind,)).get_content() == django.get_body((kind,)).get_content()
