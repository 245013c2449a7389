"""Bounce and auto-reply parsing: one hand-written sample per server format in tests/feedback/bounces/, each
checked field by field, then junk and mangled samples, which must never raise."""

from __future__ import annotations

import email
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from email.policy import compat32
from pathlib import Path

import pytest
from flufl.bounce import all_failures
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.feedback.dsn import Kind, RecipientReport, Report, parse_report

SAMPLES = Path(__file__).parent / "bounces"
CEST = timezone(timedelta(hours=2))
PDT = timezone(timedelta(hours=-7))
fuzz_settings = settings(max_examples=200, deadline=None)


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def digest(raw: bytes) -> str:
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def bounce(address: str, status: str, diagnostic: str, action: str = "failed", permanent: bool = True):
    return RecipientReport(address, action, permanent, status, diagnostic)


EXPECTED = {
    "postfix_user_unknown.eml": Report(
        kind=Kind.BOUNCE,
        recipients=(
            bounce(
                "ola@example.org",
                "5.1.1",
                "550 5.1.1 <ola@example.org>: Recipient address rejected: "
                "User unknown in virtual mailbox table",
            ),
        ),
        original_message_id="<receiver-12.message-3@messaging.local>",
        addressed_to=("bounces+r12-abcd1234@bounces.example.edu",),
        report_id="<20240603081503.4VtQ2x0Z1Bz9sTL@mail.example.edu>",
        arrived_at=datetime(2024, 6, 3, 10, 15, 1, tzinfo=CEST),
        subject="Undelivered Mail Returned to Sender",
        reason="",
    ),
    "postfix_delayed.eml": Report(
        kind=Kind.DELAY,
        recipients=(
            bounce(
                "per@example.net",
                "4.4.1",
                "connect to mx.example.net[198.51.100.20]:25: Connection timed out",
                action="delayed",
                permanent=False,
            ),
        ),
        original_message_id="<receiver-13.message-3@messaging.local>",
        addressed_to=("bounces+r13-9f8e7d6c@bounces.example.edu",),
        report_id="<20240603121640.4VtT0k1PqLz9sWb@mail.example.edu>",
        arrived_at=datetime(2024, 6, 3, 10, 15, 1, tzinfo=CEST),
        subject="Delayed Mail (still being retried)",
        reason="",
    ),
    "exchange_ndr.eml": Report(
        kind=Kind.BOUNCE,
        recipients=(
            bounce(
                "jonas@example.com",
                "5.1.10",
                "550 5.1.10 RESOLVER.ADR.RecipientNotFound; "
                "Recipient jonas@example.com not found by SMTP address lookup",
            ),
        ),
        original_message_id="<receiver-14.message-3@messaging.local>",
        addressed_to=("bounces+r14-5a5a0f0f@bounces.example.edu",),
        report_id="<c2a5f0e1-7b3d-4a8e-9f10-2b5c6d7e8f90@AM0PR04MB1234.eurprd04.prod.outlook.com>",
        arrived_at=datetime(2024, 6, 3, 8, 15, 2, tzinfo=UTC),
        subject="Undeliverable: Spring newsletter",
        reason="",
    ),
    "gmail_bounce.eml": Report(
        kind=Kind.BOUNCE,
        recipients=(
            bounce(
                "nils@example.com",
                "5.1.1",
                "550-5.1.1 The email account that you tried to reach does not exist. Please try "
                "550-5.1.1 double-checking the recipient's email address for typos or "
                "550-5.1.1 unnecessary spaces. For more information, go to "
                "550 5.1.1 https://support.google.com/mail/?p=NoSuchUser "
                "d9443c01a7336-1f6323dd6e1si12345678a.251 - gsmtp",
            ),
        ),
        original_message_id="<receiver-15.message-3@messaging.local>",
        addressed_to=("bounces+r15-7e3a91c2@bounces.example.edu",),
        report_id="<665d7a6b.170a0220.3b3c5d.1a2bGMR@mx.google.com>",
        arrived_at=datetime(2024, 6, 3, 1, 15, 6, tzinfo=PDT),
        subject="Delivery Status Notification (Failure)",
        reason="",
    ),
    "exim_nonstandard.eml": Report(
        kind=Kind.BOUNCE,
        recipients=(bounce("kari@example.org", "5.1.1", "550 5.1.1 User unknown"),),
        original_message_id="<receiver-7.message-3@messaging.local>",
        addressed_to=("bounces+r7-5eed1e55@bounces.example.edu",),
        report_id="<E1sE3Jk-0004aB-2x@mail.example.edu>",
        arrived_at=datetime(2024, 6, 3, 10, 30, 12, tzinfo=CEST),
        subject="Mail delivery failed: returning message to sender",
        reason="",
    ),
    "qmail_nonstandard.eml": Report(
        kind=Kind.BOUNCE,
        recipients=(
            bounce(
                "ana@example.net",
                "5.1.1",
                "550 5.1.1 <ana@example.net>: Recipient address rejected: User unknown",
            ),
        ),
        original_message_id="<receiver-21.message-3@messaging.local>",
        addressed_to=("bounces+r21-0badc0de@bounces.example.edu",),
        report_id=digest(sample("qmail_nonstandard.eml")),
        arrived_at=datetime(2024, 6, 3, 8, 20, tzinfo=UTC),
        subject="failure notice",
        reason="",
    ),
    "mailbox_full_soft.eml": Report(
        kind=Kind.BOUNCE,
        recipients=(
            bounce(
                "siri@example.net",
                "4.2.2",
                "452 4.2.2 <siri@example.net>: Mailbox full, quota exceeded",
                permanent=False,
            ),
        ),
        original_message_id="<receiver-18.message-3@messaging.local>",
        addressed_to=("bounces+r18-33cc77ee@bounces.example.edu",),
        report_id="<dsn.8c2f41d0.1717661764@mx2.example.net>",
        arrived_at=datetime(2024, 6, 6, 8, 16, 2, tzinfo=UTC),
        subject="Undeliverable: Vårnytt fra universitetet",
        reason="",
    ),
    "out_of_office.eml": Report(
        kind=Kind.AUTO_REPLY,
        recipients=(),
        original_message_id="<receiver-9.message-3@messaging.local>",
        addressed_to=("bounces+r9-77aa55cc@bounces.example.edu",),
        report_id="<dovecot-sieve-1717403101-219876-0@mail.example.org>",
        arrived_at=datetime(2024, 6, 3, 10, 25, 1, tzinfo=CEST),
        subject="Out of Office: Spring newsletter",
        reason="",
    ),
    "outlook_automatic_reply.eml": Report(
        kind=Kind.AUTO_REPLY,
        recipients=(),
        original_message_id="<receiver-16.message-3@messaging.local>",
        addressed_to=("bounces+r16-1f2e3d4c@bounces.example.edu",),
        report_id="<DB9PR04MB56781F2B9C0E4D0A1B2C3D4E5F6A7B8C9D@DB9PR04MB5678.eurprd04.prod.outlook.com>",
        arrived_at=datetime(2024, 6, 3, 8, 40, 11, tzinfo=UTC),
        subject="Automatic reply: Spring newsletter",
        reason="",
    ),
    "not_a_bounce.eml": Report(
        kind=Kind.UNRECOGNISED,
        recipients=(),
        original_message_id="",
        addressed_to=("bounces+r22-abad1dea@bounces.example.edu", "news@example.edu"),
        report_id="<6f1c2e9a-4b1d-4c55-9d1e-7a3b2c1d0e9f@example.org>",
        arrived_at=datetime(2024, 6, 3, 11, 2, 41, tzinfo=CEST),
        subject="Re: Spring newsletter",
        reason="Neither a delivery report nor an automatic reply.",
    ),
}


def test_every_sample_has_expectations():
    assert sorted(path.name for path in SAMPLES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample(name):
    assert parse_report(sample(name)) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_with_crlf_line_endings(name):
    raw = sample(name).replace(b"\n", b"\r\n")
    expected = EXPECTED[name]
    if expected.report_id.startswith("sha256:"):
        expected = Report(**{**expected.__dict__, "report_id": digest(raw)})
    assert parse_report(raw) == expected


def test_exim_bounce_without_x_failed_recipients_is_read_from_its_text():
    raw = sample("exim_nonstandard.eml").replace(b"X-Failed-Recipients: kari@example.org\n", b"")
    assert parse_report(raw).recipients == EXPECTED["exim_nonstandard.eml"].recipients


@pytest.mark.parametrize(
    "content_type",
    [b"text/plain; charset=us-ascii", b"message/global-delivery-status", b"text/delivery-status"],
)
def test_status_part_with_another_label_is_still_read(content_type):
    raw = sample("postfix_user_unknown.eml").replace(
        b"Content-Type: message/delivery-status", b"Content-Type: " + content_type
    )
    assert parse_report(raw) == EXPECTED["postfix_user_unknown.eml"]


def test_failed_and_delayed_recipients_in_one_report_are_a_bounce_in_document_order():
    raw = sample("postfix_user_unknown.eml").replace(
        b"Reporting-MTA: dns; mail.example.edu\n",
        b"Reporting-MTA: dns; mail.example.edu\n\n"
        b"Final-Recipient: rfc822; per@example.net\nAction: delayed\nStatus: 4.4.1\n\n"
        b"Final-Recipient: rfc822; liv@example.net\nAction: delivered\nStatus: 2.0.0\n",
    )
    report = parse_report(raw)
    assert report.kind == Kind.BOUNCE
    assert [(entry.address, entry.action, entry.permanent) for entry in report.recipients] == [
        ("per@example.net", "delayed", False),
        ("ola@example.org", "failed", True),
    ]


def test_report_of_delivered_recipients_only_is_unrecognised():
    raw = sample("postfix_user_unknown.eml").replace(b"Action: failed", b"Action: delivered")
    report = parse_report(raw)
    assert (report.kind, report.recipients) == (Kind.UNRECOGNISED, ())
    assert report.reason == "The delivery status notification reports no failed or delayed recipients."
    assert report.report_id == "<20240603081503.4VtQ2x0Z1Bz9sTL@mail.example.edu>"


def test_flufl_alone_would_call_the_out_of_office_reply_a_bounce():
    """Why auto-replies are settled before any heuristic runs: flufl.bounce's LLNL detector takes
    any ", someone@domain," in the text for a failed recipient."""
    msg = email.message_from_bytes(sample("out_of_office.eml"), policy=compat32)
    assert all_failures(msg) == (frozenset(), frozenset({b"per@example.org"}))
    assert parse_report(sample("out_of_office.eml")).kind == Kind.AUTO_REPLY


def test_a_persons_reply_naming_addresses_is_not_read_as_a_bounce():
    """flufl.bounce's catch-all would report bob@example.org as failed; only mail from a mail
    server goes to flufl.bounce, so this is kept for staff instead."""
    raw = (
        b"From: Kari Nordmann <kari@example.org>\n"
        b"To: bounces+r30-0a0b0c0d@bounces.example.edu\n"
        b"Subject: Re: Exam\n\n"
        b"Please also tell my colleagues, bob@example.org, and Eva.\n"
    )
    msg = email.message_from_bytes(raw, policy=compat32)
    assert all_failures(msg)[1] == frozenset({b"bob@example.org"})
    assert parse_report(raw).kind == Kind.UNRECOGNISED


def test_warning_in_a_non_standard_format_is_a_delay():
    raw = (
        b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\n"
        b"To: bounces+r30-0a0b0c0d@bounces.example.edu\n"
        b"Subject: Delivery Status Notification (Delay)\n"
        b"Date: Tue, 04 Jun 2024 02:00:00 -0700\n\n"
        b"This is an automatically generated Delivery Status Notification\n\n"
        b"THIS IS A WARNING MESSAGE ONLY.\n\n"
        b"YOU DO NOT NEED TO RESEND YOUR MESSAGE.\n\n"
        b"Delivery to the following recipient has been delayed:\n\n"
        b"     Eva@Example.org\n\n"
        b"Message will be retried for 2 more day(s)\n"
    )
    report = parse_report(raw)
    assert report.kind == Kind.DELAY
    assert report.recipients == (RecipientReport("eva@example.org", "delayed", False, "", ""),)


def test_mail_server_message_without_failures_is_not_an_auto_reply():
    raw = (
        b"From: Mail Delivery System <MAILER-DAEMON@mail.example.net>\n"
        b"Auto-Submitted: auto-replied\n"
        b"Subject: Message quarantined\n\n"
        b"Your message is held for review.\n"
    )
    report = parse_report(raw)
    assert (report.kind, report.reason) == (Kind.UNRECOGNISED, "No failed recipients found in the message.")


def test_auto_submitted_message_naming_failed_recipients_is_a_bounce():
    raw = (
        b"From: No Reply <noreply@relay.example.net>\n"
        b"Auto-Submitted: auto-replied\n"
        b"X-Failed-Recipients: Rolf@example.org\n"
        b"Subject: Delivery failure\n\n"
        b"Your message could not be delivered.\n"
    )
    report = parse_report(raw)
    assert report.kind == Kind.BOUNCE
    assert report.recipients == (RecipientReport("rolf@example.org", "failed", True, "", ""),)


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        (b"Auto-Submitted: auto-generated", Kind.AUTO_REPLY),
        (b"Auto-Submitted: auto-notified; owner-email=liv@example.org", Kind.AUTO_REPLY),
        (b"X-Autoreply: yes", Kind.AUTO_REPLY),
        (b"X-Autorespond: Out of office", Kind.AUTO_REPLY),
        (b"Precedence: auto_reply", Kind.AUTO_REPLY),
        (b"Auto-Submitted: no", Kind.UNRECOGNISED),
        (b"X-Auto-Response-Suppress: All", Kind.UNRECOGNISED),
        (b"Precedence: bulk", Kind.UNRECOGNISED),
    ],
)
def test_auto_reply_markers(header, kind):
    raw = (
        b"From: Liv Berg <liv@example.org>\n" + header + b"\n"
        b"In-Reply-To: <receiver-9.message-3@messaging.local>\n"
        b"Subject: Away\n\nBack on Monday.\n"
    )
    assert parse_report(raw).kind == kind


def test_auto_reply_without_in_reply_to_takes_the_last_reference():
    raw = (
        b"From: liv@example.org\nAuto-Submitted: auto-replied\n"
        b"References: <thread-start@example.org>\n <receiver-9.message-3@messaging.local>\n\nAway.\n"
    )
    assert parse_report(raw).original_message_id == "<receiver-9.message-3@messaging.local>"


@pytest.mark.parametrize("raw", [b"", b"  \r\n\r\n "])
def test_empty_message(raw):
    assert parse_report(raw) == Report(
        Kind.UNRECOGNISED, (), "", (), digest(raw), None, "", "The message is empty."
    )


def test_message_without_a_date_or_message_id():
    raw = b"From: someone@example.org\nSubject: Hello\n\nHi.\n"
    report = parse_report(raw)
    assert (report.arrived_at, report.report_id) == (None, digest(raw))


def test_raw_eight_bit_and_nul_bytes_come_out_storable():
    raw = (
        b"From: MAILER-DAEMON@mail.example.net\nSubject: Retour \xe9chou\xe9\x00 \xff\n"
        b"X-Failed-Recipients: kari@example.org\n\n"
        b"kari@example.org\n  550 5.1.1 Utilisateur inconnu \xe9\x00\xff\n"
    )
    report = parse_report(raw)
    assert report.subject == "Retour \ufffdchou\ufffd \ufffd"
    assert report.recipients == (
        RecipientReport(
            "kari@example.org", "failed", True, "5.1.1", "550 5.1.1 Utilisateur inconnu \ufffd\ufffd"
        ),
    )


def test_long_fields_are_cut():
    raw = sample("postfix_user_unknown.eml").replace(
        b"User unknown in virtual mailbox table", b"User unknown " + b"x" * 3000
    )
    raw = raw.replace(b"Subject: Undelivered Mail", b"Subject: " + b"y " * 400 + b"Undelivered Mail", 1)
    report = parse_report(raw)
    assert len(report.recipients[0].diagnostic) == 1000
    assert report.subject == ("y " * 128).strip()


def assert_well_formed(report: Report) -> None:
    assert isinstance(report, Report)
    assert report.kind in Kind
    assert bool(report.recipients) == (report.kind in (Kind.BOUNCE, Kind.DELAY))
    assert bool(report.reason) == (report.kind == Kind.UNRECOGNISED)
    assert report.report_id
    assert report.arrived_at is None or report.arrived_at.tzinfo is not None
    assert len(report.subject) <= 255
    texts = [report.subject, report.original_message_id, report.report_id, *report.addressed_to]
    for entry in report.recipients:
        assert entry.address and entry.address == entry.address.lower()
        assert entry.action in ("failed", "delayed")
        assert len(entry.diagnostic) <= 1000
        texts += [entry.address, entry.status, entry.diagnostic]
    for text in texts:
        text.encode("utf-8")
        assert "\x00" not in text and "\n" not in text


@fuzz_settings
@given(raw=st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(raw):
    assert_well_formed(parse_report(raw))


@fuzz_settings
@given(
    name=st.sampled_from(sorted(EXPECTED)),
    cut=st.integers(min_value=0),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=30),
)
def test_mangled_samples_never_raise(name, cut, flips):
    raw = bytearray(sample(name))
    raw = raw[: cut % (len(raw) + 1)]
    for position, value in flips:
        if raw:
            raw[position % len(raw)] = value
    report = parse_report(bytes(raw))
    assert_well_formed(report)
    assert not report.reason.startswith("The message could not be parsed")


@fuzz_settings
@given(
    name=st.sampled_from(sorted(EXPECTED)),
    header=st.text(max_size=300),
    value=st.text(max_size=3000),
)
def test_samples_with_an_odd_header_never_raise(name, header, value):
    line = f"{header}: {value}\n".encode("utf-8", "surrogateescape")
    report = parse_report(line + sample(name))
    assert_well_formed(report)
