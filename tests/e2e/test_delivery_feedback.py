"""Delivery feedback end to end, in a real Chromium: VERP return paths, a bounce read from a real
Maildir, the staff UI that shows it, the suppression that keeps the next send away from the
address, and lifting it again.

A staff member sends a message to three users over a real SMTP sink (a `manage.py run_huey`
consumer process delivers it, with MESSAGING_BOUNCE_ADDRESS set), so each email goes out from its
receiver's own signed envelope sender. The recipient's mail server later returns one of them: a
Postfix-style RFC 3464 report (tests/feedback/bounces/postfix_user_unknown.eml, addressed to the VERP
address and quoting the email's Message-ID) lands in a Maildir, and `manage.py
messaging_read_bounces` records it. Staff then see the bounce on the status page and the
receiver's page, compose a second message to the same users (the suppressed one is announced and
never handed to the mail server), and lift the suppression on the Suppressed addresses page.
"""

from __future__ import annotations

import mailbox
import re
from datetime import timedelta
from email.utils import format_datetime
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import Page, expect

from messaging.engine.outgoing import message_id_for
from messaging.feedback.return_path import envelope_sender
from messaging.models import AuditEvent, DeliveryEvent, Message, MessageReceiver, Suppression, UnmatchedBounce
from tests.conftest import Consumer, wait_until
from tests.e2e.conftest import composed_draft, deliver_in_process, make_staff, sign_in, write_body

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BOUNCE_ADDRESS = "bounces@bounces.example.edu"
PERMISSIONS = ("view_message", "compose_message", "send_message", "resend_message", "lift_suppression")
SUBJECT = "Exam moved, {{ recipient_first_name }}"
BODY = "<p>Hello {{ recipient_name }},</p><p>The exam has moved to <strong>room 101</strong>.</p>"
SAMPLE = Path(__file__).resolve().parents[1] / "feedback" / "bounces" / "postfix_user_unknown.eml"
# What the sample's recipient server answered (tests/feedback/bounces/postfix_user_unknown.eml).
SERVER_REPLY = "550 5.1.1"


# Setup ---------------------------------------------------------------------------------------------


@pytest.fixture
def bounce_settings(settings):
    """This process (the live server and the bounce reader) and the consumer alike."""
    settings.MESSAGING_BOUNCE_ADDRESS = BOUNCE_ADDRESS
    return settings


@pytest.fixture
def verp_consumer(huey_queue, smtp_sink, bounce_settings):
    """A real consumer process that sends with the VERP return path (the env is how it learns
    MESSAGING_BOUNCE_ADDRESS: project/settings.py reads it)."""
    smtp_sink.handler.refusals = {}
    consumer = Consumer(smtp_sink.url, MESSAGING_BOUNCE_ADDRESS=BOUNCE_ADDRESS).start()
    try:
        yield consumer
    finally:
        consumer.stop()


@pytest.fixture
def staff(make_user):
    return make_staff(make_user, PERMISSIONS)


@pytest.fixture
def students(make_user):
    return [make_user(language="en", first_name=f"Ada{i}", last_name="Lovelace") for i in range(3)]


def draft(staff, users) -> Message:
    return composed_draft(staff, users, SUBJECT, BODY)


def sent_message(staff, users) -> Message:
    """A message delivered in this process over real SMTP (smtp_mailer): the real path (queue →
    preparing → receivers → delivery run) without a consumer."""
    return deliver_in_process(draft(staff, users), users)


def read_bounce(receiver: MessageReceiver, maildir_path: Path) -> str:
    """Put the bounce about `receiver`'s email in a Maildir and read it with the command."""
    mailbox.Maildir(maildir_path, create=True).add(dsn_for(receiver, timezone.now() + timedelta(seconds=2)))
    out = StringIO()
    call_command("messaging_read_bounces", mailbox=f"maildir://{maildir_path}", stdout=out)
    assert len(mailbox.Maildir(maildir_path, create=False)) == 0, "the bounce was left in the mailbox"
    return out.getvalue()


def dsn_for(receiver: MessageReceiver, arrived) -> bytes:
    """The Postfix "User unknown" report of tests/feedback/bounces, about this receiver's email: delivered
    to its VERP address, naming its address, quoting its Message-ID, dated `arrived`."""
    text = SAMPLE.read_text()
    text = text.replace("bounces+r12-abcd1234@bounces.example.edu", envelope_sender(receiver))
    text = re.sub(re.escape("ola@example.org"), lambda _: receiver.send_to, text, flags=re.IGNORECASE)
    text = text.replace("<receiver-12.message-3@messaging.local>", message_id_for(receiver))
    text = text.replace("Subject: Spring newsletter", f"Subject: {receiver.subject}")
    date = format_datetime(timezone.localtime(arrived))
    text = re.sub(r"^(Date|Arrival-Date): .*$", rf"\1: {date}", text, flags=re.MULTILINE)
    text = re.sub(r"(\tid 4VtQ2x0Z1Bz9sTL; |\tfor <[^>]+>; ).*$", rf"\g<1>{date}", text, flags=re.MULTILINE)
    return text.encode()


# Steps ---------------------------------------------------------------------------------------------


def add_recipient(page: Page, user) -> None:
    page.locator("#recipient-search").fill(user.get_username())
    with page.expect_response(re.compile(r"/messages/recipients/summary/")):
        page.get_by_test_id(f"search-user-{user.pk}").click()
    expect(page.locator(f'#chosen-recipients [data-recipient="users-{user.pk}"]')).to_be_visible()
    page.locator("#recipient-search").fill("")


def confirm_send(page: Page, message: Message, total: int) -> None:
    expect(page).to_have_url(re.compile(rf"/messages/{message.pk}/send/$"))
    expect(page.locator("#send-count")).to_have_attribute("data-count", str(total))
    page.locator("#confirm-send").click()
    expect(page).to_have_url(re.compile(rf"/messages/{message.pk}/$"))


def finished(message: Message, status: str) -> None:
    def done() -> bool:
        message.refresh_from_db()
        return message.status == status

    wait_until(done, timeout=30, message=f"message {message.pk} to be {status}")


def receiver_rows(page: Page):
    return page.locator("#receiver-table tbody tr[data-receiver-id]")


def receiver_row(page: Page, receiver: MessageReceiver):
    return page.locator(f'#receiver-table tbody tr[data-receiver-id="{receiver.pk}"]')


def mail_of(sink, message: Message) -> list:
    """What the sink received for the receivers of `message` (not the report to the sender)."""
    return [m for m in sink.received if f".message-{message.pk}." in (m.message["Message-ID"] or "")]


def no_problems(problems) -> None:
    assert not problems.csp_violations, "\n".join(problems.csp_violations)
    assert not problems.console_errors, "\n".join(problems.console_errors)
    assert not problems.page_errors, "\n".join(problems.page_errors)


# The scenario --------------------------------------------------------------------------------------


def test_a_bounce_is_shown_suppresses_the_next_send_and_can_be_lifted(
    e2e_page, e2e_problems, live_server, verp_consumer, smtp_sink, staff, students, tmp_path
):
    page = e2e_page
    base = live_server.url

    # 1. Send to three users: each email goes out from its receiver's VERP return path.
    first = draft(staff, students)
    sign_in(page, base, staff, f"/messages/{first.pk}/send/")
    confirm_send(page, first, len(students))
    expect(page.locator("#message-status")).to_have_attribute("data-status", "sent")
    expect(page.locator("#count-sent")).to_have_text(str(len(students)))
    expect(page.locator("#outcome-counts")).to_have_count(0)  # nothing reported back yet

    receivers = {r.user_id: r for r in MessageReceiver.objects.filter(message=first)}
    sent = mail_of(smtp_sink, first)
    assert len(sent) == len(students)
    for mail in sent:
        (rcpt,) = mail.rcpt_tos
        receiver = next(r for r in receivers.values() if r.send_to == rcpt)
        verp = envelope_sender(receiver)
        assert re.fullmatch(rf"bounces\+r{receiver.pk}-[0-9a-f]+@bounces\.example\.edu", verp)
        assert mail.mail_from == verp, f"envelope sender of {rcpt}"
        assert mail.message["From"] == django_settings.DEFAULT_FROM_EMAIL  # the From header stays
        assert mail.message["Message-ID"] == message_id_for(receiver)

    # 2. The recipient's server returns the second user's email: a bounce in the bounce Maildir.
    bounced_user = students[1]
    bounced = receivers[bounced_user.pk]
    address = bounced.send_to
    out = read_bounce(bounced, tmp_path / "bounces")
    assert "bounce: 1" in out, out
    assert not UnmatchedBounce.objects.exists()
    bounced.refresh_from_db()
    assert bounced.delivery_outcome == MessageReceiver.Outcome.HARD_BOUNCE
    assert bounced.outcome_detail.startswith(SERVER_REPLY)
    (event,) = DeliveryEvent.objects.filter(receiver=bounced)
    assert event.event_type == DeliveryEvent.Type.BOUNCED
    suppression = Suppression.objects.get(address=address.lower())
    assert suppression.reason == Suppression.Reason.HARD_BOUNCE
    assert (
        MessageReceiver.objects.filter(message=first)
        .exclude(pk=bounced.pk)
        .filter(delivery_outcome="")
        .count()
        == 2
    )

    # 3. The status page: "After sending" counts, the reason, the receiver's badge; the filter.
    page.goto(f"{base}/messages/{first.pk}/")
    expect(page.locator("#outcome-counts")).to_be_visible()
    expect(page.locator("#outcome-hard_bounce")).to_have_text("1")
    for other in ("delivered", "deferred", "soft_bounce", "complained", "rejected"):
        expect(page.locator(f"#outcome-{other}")).to_have_text("0")
    groups = page.locator("#bounce-groups li")
    expect(groups).to_have_count(1)
    expect(groups.first).to_have_attribute("data-outcome", "hard_bounce")
    expect(groups.first).to_have_attribute("data-count", "1")
    expect(groups.first).to_contain_text(SERVER_REPLY)
    expect(groups.first).to_contain_text("User unknown")
    row = receiver_row(page, bounced)
    expect(row).to_have_attribute("data-outcome", "hard_bounce")
    expect(row.locator(".outcome-badge.outcome-hard_bounce")).to_have_text("Bounced")
    expect(row).to_contain_text(SERVER_REPLY)
    for other in receivers.values():
        if other.pk != bounced.pk:
            expect(receiver_row(page, other)).to_have_attribute("data-outcome", "")
            expect(receiver_row(page, other).locator(".outcome-badge")).to_have_count(0)
    page.locator("#id_outcome").select_option("hard_bounce")
    expect(page).to_have_url(re.compile(r"[?&]outcome=hard_bounce"))
    expect(receiver_rows(page)).to_have_count(1)
    expect(receiver_rows(page).first).to_have_attribute("data-receiver-id", str(bounced.pk))

    # The receiver's page: the report, the suppression, why it cannot be resent, no Resend.
    row.get_by_test_id("receiver-detail-link").click()
    expect(page).to_have_url(re.compile(rf"/messages/receivers/{bounced.pk}/$"))
    expect(page.locator("#receiver-outcome")).to_have_attribute("data-outcome", "hard_bounce")
    timeline = page.locator("#event-timeline li[data-event-type]")
    expect(timeline).to_have_count(1)
    expect(timeline.first).to_have_attribute("data-event-type", "bounced")
    expect(timeline.first).to_contain_text("Bounced")
    expect(timeline.first).to_contain_text(SERVER_REPLY)
    expect(page.locator("#receiver-suppressed")).to_contain_text(f"No email goes to {address.lower()}")
    expect(page.locator("#receiver-suppressed")).to_contain_text("suppressed: bounced on")
    expect(page.locator("#resend-refusal")).to_contain_text("lift the suppression")
    expect(page.locator("#resend-receiver")).to_have_count(0)

    # 4. A new draft to the same three users: the compose page and the send page say one of them
    #    is suppressed; the send records it as failed and never hands it to the mail server.
    page.locator("#nav-new-message").click()
    expect(page.locator("#compose-heading")).to_have_text("New message")
    page.locator("#id_context_type").select_option("deadline_moved")
    page.locator("#id_subject_en").fill(SUBJECT)
    write_body(page, "en", BODY)
    for user in students:
        add_recipient(page, user)
    expect(page.locator("#recipient-total")).to_have_attribute("data-count", str(len(students)))
    warning = page.locator("#recipients-suppressed")
    expect(warning).to_have_attribute("data-count", "1")
    expect(warning).to_contain_text(bounced_user.get_full_name())
    expect(warning).to_contain_text("suppressed: bounced on")
    page.locator("#save-and-preview").click()
    expect(page).to_have_url(re.compile(r"/messages/\d+/preview/"))
    second = Message.objects.exclude(pk=first.pk).get()
    page.locator("#send-link").click()
    expect(page.locator("#send-suppressed")).to_have_attribute("data-count", "1")
    confirm_send(page, second, len(students))
    expect(page.locator("#message-status")).to_have_attribute("data-status", "error")
    expect(page.locator("#count-sent")).to_have_text("2")
    expect(page.locator("#count-failed")).to_have_text("1")
    finished(second, Message.Status.ERROR)
    skipped = MessageReceiver.objects.get(message=second, user=bounced_user)
    assert skipped.status == MessageReceiver.Status.FAILED
    assert skipped.permanent_failure
    assert skipped.last_error.startswith("suppressed: bounced on"), skipped.last_error
    assert SERVER_REPLY in skipped.last_error
    assert skipped.delivery_outcome == MessageReceiver.Outcome.SUPPRESSED
    second_mail = mail_of(smtp_sink, second)
    assert len(second_mail) == 2
    assert address not in {rcpt for mail in second_mail for rcpt in mail.rcpt_tos}
    expect(receiver_row(page, skipped)).to_contain_text("suppressed: bounced on")

    # 5. Lift the suppression on the Suppressed addresses page (behind a confirmation).
    page.locator("#nav-suppressions").click()
    expect(page).to_have_url(re.compile(r"/messages/suppressions/$"))
    listed = page.locator(f'#suppression-table tr[data-address="{address.lower()}"]')
    expect(listed).to_have_count(1)
    expect(listed).to_have_attribute("id", f"suppression-{suppression.pk}")
    expect(listed).to_contain_text(SERVER_REPLY)
    questions: list[str] = []

    def accept(dialog) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    listed.get_by_test_id("lift-suppression").click()
    expect(listed).to_have_count(0)
    assert questions and address.lower() in questions[0]
    assert not Suppression.objects.exists()
    lifted = AuditEvent.objects.get(action=AuditEvent.Action.SUPPRESSION_LIFTED)
    assert lifted.actor == staff
    assert lifted.details["address"] == address.lower()

    # Now both of that user's receivers can be resent.
    for receiver in (bounced, skipped):
        page.goto(f"{base}/messages/receivers/{receiver.pk}/")
        expect(page.locator("#receiver-suppressed")).to_have_count(0)
        expect(page.locator("#resend-refusal")).to_have_count(0)
        expect(page.locator("#resend-receiver")).to_be_visible()

    # 6. Not one console error or CSP violation on any page.
    page.wait_for_load_state("networkidle")
    no_problems(e2e_problems)


def test_a_bounce_is_not_listed_as_a_failure(
    e2e_page, e2e_problems, live_server, huey_queue, smtp_mailer, bounce_settings, staff, students, tmp_path
):
    message = sent_message(staff, students)
    bounced = MessageReceiver.objects.get(message=message, user=students[0])
    assert smtp_mailer.received and all(m.mail_from.startswith("bounces+r") for m in smtp_mailer.received)
    assert "bounce: 1" in read_bounce(bounced, tmp_path / "bounces")

    page = e2e_page
    sign_in(page, live_server.url, staff, f"/messages/{message.pk}/")
    expect(page.locator("#outcome-hard_bounce")).to_have_text("1")
    expect(page.locator("#bounce-groups li")).to_have_count(1)  # the bounce is listed here ...
    expect(page.locator("#count-failed")).to_have_text("0")
    expect(page.locator("#count-error")).to_have_text("0")
    # ... and not again as a failure without a reason.
    expect(page.locator("#failure-groups")).to_have_count(0, timeout=2_000)
    expect(page.locator("#no-failures")).to_be_visible(timeout=2_000)
    no_problems(e2e_problems)
