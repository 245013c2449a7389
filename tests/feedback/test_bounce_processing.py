"""Bounce messages from our own relay: read from a real Maildir/mbox, matched to receivers only by
what we signed (the VERP return path, else the signed Message-ID they quote), recorded and
suppressed for the receiver's own address only; the rest, forged reports included, kept for staff."""

from __future__ import annotations

import mailbox
import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from messaging import tasks
from messaging.engine.outgoing import message_id_for
from messaging.feedback import bounces, return_path
from messaging.feedback import reports as feedback
from messaging.models import DeliveryEvent, Message, MessageReceiver, Suppression, UnmatchedBounce
from tests.engine_helpers import SEND_ARGS, LanguageSubject

pytestmark = pytest.mark.django_db

SAMPLES = Path(__file__).parent / "bounces"
Outcome = MessageReceiver.Outcome
SAMPLE_VERP = re.compile(rb"bounces\+r\d+-[0-9a-f]+@bounces\.example\.edu")
SAMPLE_MESSAGE_ID = re.compile(rb"<receiver-\d+\.message-\d+@messaging\.local>")
# The address each sample reports on; bounce_for makes it the receiver's (or another) address.
SAMPLE_RECIPIENT = {
    "postfix_user_unknown.eml": "ola@example.org",
    "exchange_ndr.eml": "jonas@example.com",
    "gmail_bounce.eml": "nils@example.com",
    "exim_nonstandard.eml": "kari@example.org",
    "mailbox_full_soft.eml": "siri@example.net",
    "postfix_delayed.eml": "per@example.net",
    "qmail_nonstandard.eml": "ana@example.net",
}


@pytest.fixture(autouse=True)
def bounce_address(settings):
    settings.MESSAGING_BOUNCE_ADDRESS = "bounces@bounces.example.edu"


@pytest.fixture
def receivers(make_user, smtp_mailer):
    users = [make_user(email=f"student{n}@example.org") for n in range(3)]
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    message.prepare_and_send(LanguageSubject(prefix="Exam"), **SEND_ARGS)
    return list(message.receivers.order_by("pk"))


def bounce_for(
    receiver, sample: str, *, verp: bool = True, message_id: bool = True, about: str | None = None
) -> bytes:
    """A sample bounce, addressed as if it came back for `receiver`, reporting on its address
    (or on `about`)."""
    raw = (SAMPLES / sample).read_bytes()
    address = return_path.envelope_sender(receiver) if verp else "bounces@bounces.example.edu"
    raw = SAMPLE_VERP.sub(address.encode(), raw)
    quoted = message_id_for(receiver) if message_id else "<somebody-else@example.net>"
    raw = SAMPLE_MESSAGE_ID.sub(quoted.encode(), raw)
    if sample in SAMPLE_RECIPIENT:
        reported = re.compile(re.escape(SAMPLE_RECIPIENT[sample]).encode(), re.IGNORECASE)
        raw = reported.sub((about or receiver.send_to).encode(), raw)
    return raw


@pytest.fixture
def without_verp(settings):
    settings.MESSAGING_BOUNCE_ADDRESS = ""


class TestProcessingOneReport:
    def test_a_hard_bounce_matched_by_its_return_path(self, receivers):
        target = receivers[1]

        assert (
            bounces.process_report(bounce_for(target, "postfix_user_unknown.eml", message_id=False))
            == "bounce"
        )

        target.refresh_from_db()
        assert target.delivery_outcome == Outcome.HARD_BOUNCE
        assert target.outcome_detail.startswith(f"550 5.1.1 <{target.send_to}>: Recipient address rejected")
        event = DeliveryEvent.objects.get()
        assert (event.receiver, event.provider, event.event_type) == (target, "bounce mailbox", "bounced")
        assert event.recipient == target.send_to
        assert event.description == "failed 5.1.1"
        assert "Undelivered Mail Returned to Sender" in event.payload["raw"]
        assert list(Suppression.objects.values_list("address", "reason")) == [(target.send_to, "hard_bounce")]
        assert [r.delivery_outcome for r in receivers if r != target] == ["", ""]

    @pytest.mark.parametrize("sample", ["exchange_ndr.eml", "gmail_bounce.eml", "exim_nonstandard.eml"])
    def test_bounces_from_other_servers_matched_by_the_quoted_message_id(
        self, receivers, without_verp, sample
    ):
        target = receivers[2]

        assert bounces.process_report(bounce_for(target, sample, verp=False)) == "bounce"

        target.refresh_from_db()
        assert target.delivery_outcome == Outcome.HARD_BOUNCE
        assert Suppression.objects.get().address == target.send_to

    def test_a_full_mailbox_is_a_soft_bounce_and_a_delay_is_a_deferral(self, receivers):
        bounces.process_report(bounce_for(receivers[0], "mailbox_full_soft.eml"))
        assert bounces.process_report(bounce_for(receivers[1], "postfix_delayed.eml")) == "delay"

        outcomes = [r.delivery_outcome for r in MessageReceiver.objects.order_by("pk")]
        assert outcomes == [Outcome.SOFT_BOUNCE, Outcome.DEFERRED, ""]
        assert not Suppression.objects.exists()

    @pytest.mark.parametrize("sample", ["out_of_office.eml", "outlook_automatic_reply.eml"])
    def test_an_out_of_office_reply_is_noted_but_is_not_a_bounce(self, receivers, sample):
        target = receivers[0]

        assert bounces.process_report(bounce_for(target, sample)) == "auto_reply"

        target.refresh_from_db()
        assert target.delivery_outcome == ""
        assert list(target.delivery_events.values_list("event_type", flat=True)) == ["autoresponded"]
        assert not Suppression.objects.exists()

    def test_reading_the_same_report_twice_records_it_once(self, receivers):
        raw = bounce_for(receivers[0], "postfix_user_unknown.eml")
        assert bounces.process_report(raw) == "bounce"
        assert bounces.process_report(raw) == "duplicate"
        assert DeliveryEvent.objects.count() == 1

    def test_a_forged_return_path_matches_nothing_and_is_kept(self, receivers):
        raw = bounce_for(receivers[0], "postfix_user_unknown.eml", message_id=False)
        forged = raw.replace(
            return_path.envelope_sender(receivers[0]).encode(), b"bounces+r1-0000000000@bounces.example.edu"
        )

        assert bounces.process_report(forged) == "kept"

        kept = UnmatchedBounce.objects.get()
        assert kept.reason == "It was not sent to a signed return path of ours."
        assert kept.subject == "Undelivered Mail Returned to Sender"
        assert bytes(kept.raw) == forged
        assert not DeliveryEvent.objects.exists() and not Suppression.objects.exists()

    @pytest.mark.parametrize("raw", [b"", b"\x00\xff garbage", (SAMPLES / "not_a_bounce.eml").read_bytes()])
    def test_what_cannot_be_read_is_kept_for_staff(self, raw):
        assert bounces.process_report(raw) == "kept"
        assert bytes(UnmatchedBounce.objects.get().raw) == raw


class TestForgedReports:
    """Issue 23: a bounce sent to the bounce mailbox by anyone must not suppress a student. Only
    what we signed names a receiver, and only a report on the receiver's own address counts."""

    def assert_nothing_applied(self, receivers, raw: bytes, reason: str) -> None:
        assert bounces.process_report(raw) == "kept"
        assert UnmatchedBounce.objects.get().reason == reason
        assert not DeliveryEvent.objects.exists() and not Suppression.objects.exists()
        assert {r.delivery_outcome for r in MessageReceiver.objects.all()} == {""}

    def test_with_verp_a_quoted_message_id_alone_matches_nothing(self, receivers):
        # A genuine, signed Message-ID (anyone who got the email can quote it), no return path.
        raw = bounce_for(receivers[0], "postfix_user_unknown.eml", verp=False)
        self.assert_nothing_applied(receivers, raw, "It was not sent to a signed return path of ours.")

    def test_with_verp_a_report_on_another_address_is_kept(self, receivers):
        raw = bounce_for(receivers[0], "postfix_user_unknown.eml", about="someone.else@example.org")
        self.assert_nothing_applied(
            receivers,
            raw,
            f"It is about someone.else@example.org, but receiver {receivers[0].pk} was sent to "
            f"{receivers[0].send_to}.",
        )

    def forged_message_id(self, receiver, how: str) -> str:
        ours = message_id_for(receiver)
        signature = ours.split(".")[2].split("@")[0]
        return {
            "unsigned": f"<receiver-{receiver.pk}.message-{receiver.message_id}@messaging.local>",
            "wrong token": ours.replace(signature, "0123456789abcdef"),
            "other message number": ours.replace(
                f"message-{receiver.message_id}.", f"message-{receiver.message_id + 1}."
            ),
            "other receiver": ours.replace(f"receiver-{receiver.pk}.", f"receiver-{receiver.pk + 1}."),
            "another domain": ours.replace("@messaging.local>", "@attacker.example>"),
        }[how]

    @pytest.mark.parametrize(
        "how", ["unsigned", "wrong token", "other message number", "other receiver", "another domain"]
    )
    def test_without_verp_a_message_id_we_did_not_sign_matches_nothing(self, receivers, without_verp, how):
        target = receivers[0]
        raw = bounce_for(target, "postfix_user_unknown.eml", verp=False, message_id=False)
        raw = raw.replace(b"<somebody-else@example.net>", self.forged_message_id(target, how).encode())
        self.assert_nothing_applied(receivers, raw, "It quotes no Message-ID of ours with a valid signature.")

    def test_without_verp_a_signed_message_id_with_another_address_is_kept(self, receivers, without_verp):
        target = receivers[1]
        raw = bounce_for(target, "gmail_bounce.eml", verp=False, about=receivers[2].send_to)
        self.assert_nothing_applied(
            receivers,
            raw,
            f"It is about {receivers[2].send_to}, but receiver {target.pk} was sent to {target.send_to}.",
        )

    def test_the_genuine_report_still_counts(self, receivers, without_verp):
        assert bounces.process_report(bounce_for(receivers[1], "gmail_bounce.eml", verp=False)) == "bounce"
        assert Suppression.objects.get().address == receivers[1].send_to


def test_a_huge_unreadable_message_is_kept_cut_to_a_megabyte():
    raw = b"Subject: big\n\n" + b"x" * 3_000_000
    assert bounces.process_report(raw) == "kept"
    kept = UnmatchedBounce.objects.get()
    assert bytes(kept.raw) == raw[: feedback.UNMATCHED_KEPT]
    assert kept.reason.endswith("Only its first 1 MB are kept.")


class TestReadingTheMailbox:
    def fill_maildir(self, path: Path, messages: list[bytes]) -> mailbox.Maildir:
        box = mailbox.Maildir(path, create=True)
        for raw in messages:
            box.add(raw)
        return box

    def test_the_command_records_everything_and_empties_the_maildir(self, receivers, tmp_path, capsys):
        box = self.fill_maildir(
            tmp_path / "bounces",
            [
                bounce_for(receivers[0], "postfix_user_unknown.eml"),
                bounce_for(receivers[1], "out_of_office.eml"),
                b"Subject: hello\n\nnot a bounce\n",
            ],
        )

        call_command("messaging_read_bounces", mailbox=f"maildir://{tmp_path / 'bounces'}")

        assert len(box) == 0
        assert capsys.readouterr().out.strip().endswith("auto_reply: 1, bounce: 1, kept: 1.")
        assert MessageReceiver.objects.get(pk=receivers[0].pk).delivery_outcome == Outcome.HARD_BOUNCE
        assert UnmatchedBounce.objects.count() == 1

    def test_an_mbox_works_the_same(self, receivers, tmp_path):
        box = mailbox.mbox(tmp_path / "bounces.mbox")
        box.add(bounce_for(receivers[2], "gmail_bounce.eml"))
        box.flush()

        run = bounces.read_mailbox(f"mbox://{tmp_path / 'bounces.mbox'}")

        assert run.counts == {"bounce": 1}
        assert len(mailbox.mbox(tmp_path / "bounces.mbox")) == 0

    def test_a_mailbox_that_cannot_be_read_is_a_clear_command_error(self, tmp_path):
        with pytest.raises(CommandError, match=r"The maildir .* does not exist\."):
            call_command("messaging_read_bounces", mailbox=f"maildir://{tmp_path / 'missing'}")
        with pytest.raises(CommandError, match="MESSAGING_BOUNCE_MAILBOX"):
            call_command("messaging_read_bounces")

    def test_the_periodic_task_reads_the_configured_mailbox_and_survives_a_broken_one(
        self, receivers, tmp_path, settings, caplog
    ):
        tasks.read_bounce_mailbox.call_local()  # not configured: nothing to do
        box = self.fill_maildir(tmp_path / "b", [bounce_for(receivers[0], "postfix_user_unknown.eml")])
        settings.MESSAGING_BOUNCE_MAILBOX = f"maildir://{tmp_path / 'b'}"

        tasks.read_bounce_mailbox.call_local()
        assert len(box) == 0 and Suppression.objects.count() == 1

        settings.MESSAGING_BOUNCE_MAILBOX = "imap://bounces:secret@127.0.0.1:1/INBOX"
        tasks.read_bounce_mailbox.call_local()  # logged, not raised
        assert "Bounce mailbox imap://" in caplog.text and "secret" not in caplog.text


def test_kept_bounces_are_listed_for_staff_to_download_and_dismiss(admin_client):
    bounces.process_report(b"From: someone@example.org\nSubject: Strange reply\n\nhello\n")
    kept = UnmatchedBounce.objects.get()

    page = admin_client.get(reverse("messaging:suppression_list")).content.decode()
    assert "Strange reply" in page and 'data-count="1"' in page
    download = admin_client.get(reverse("messaging:unmatched_bounce_download", args=[kept.pk]))
    assert download["Content-Type"] == "message/rfc822"
    assert download.content == b"From: someone@example.org\nSubject: Strange reply\n\nhello\n"

    admin_client.post(reverse("messaging:unmatched_bounce_dismiss", args=[kept.pk]))
    assert not UnmatchedBounce.objects.exists()


def test_a_relay_that_bounces_after_accepting_round_trip(make_user, settings, tmp_path):
    """The development sink accepts mail for *@bounce-later.example and then writes a delivery
    report to the envelope sender into a Maildir, as a relay does: read back, the receiver is
    bounced and its address suppressed, and the next send does not reach the server."""
    from messaging.operations.mailsink import MailSink

    with MailSink(bounce_dir=tmp_path / "bounces") as sink:
        settings.MAILERS = {
            "default": {
                "BACKEND": "messaging.engine.channels.smtp_backend.EmailBackend",
                "OPTIONS": {"host": sink.host, "port": sink.port, "timeout": 10},
            }
        }
        users = [make_user(email="kari@example.org"), make_user(email="nobody@bounce-later.example")]
        first = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
        first.prepare_and_send(LanguageSubject(prefix="Exam"), **SEND_ARGS)
        assert len(sink.received) == 2

        run = bounces.read_mailbox(f"maildir://{tmp_path / 'bounces'}")

        assert run.counts == {"bounce": 1}
        bounced = first.receivers.get(send_to="nobody@bounce-later.example")
        assert bounced.status == MessageReceiver.Status.SENT
        assert bounced.delivery_outcome == Outcome.HARD_BOUNCE
        assert "Recipient address rejected: User unknown" in bounced.outcome_detail
        second = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
        second.prepare_and_send(LanguageSubject(prefix="Exam"), **SEND_ARGS)
        assert [m.rcpt_tos for m in sink.received[2:]] == [("kari@example.org",)]
        skipped = second.receivers.get(send_to="nobody@bounce-later.example")
        assert skipped.delivery_outcome == Outcome.SUPPRESSED
