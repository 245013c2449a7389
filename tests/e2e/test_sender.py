"""Sender, Reply-To and a test to a colleague, in a real Chromium (issue 14 §4 and §5).

A course coordinator chooses the exam office as the sender and has replies come to them, sees
both on the preview, mistypes a colleague's address (an error at the field, nothing sent), then
sends the test to the colleague: the real SMTP sink gets it with that From and Reply-To.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from messaging.models import AuditEvent, Message
from tests.e2e.conftest import assert_accessible, composed_draft, make_staff, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EXAMS = "Exam office <exams@uni.example>"
PERMISSIONS = ("view_message", "compose_message", "send_message")


@pytest.fixture
def senders(settings):
    settings.DEFAULT_FROM_EMAIL = "Messaging <noreply@uni.example>"
    settings.MESSAGING_ALLOWED_SENDERS = [EXAMS, "studies@uni.example"]


def test_choose_sender_and_reply_to_then_test_to_a_colleague(
    e2e_page, e2e_problems, screenshot, live_server, make_user, smtp_mailer, senders
):
    page = e2e_page
    staff = make_staff(make_user, PERMISSIONS)
    student = make_user(language="en", first_name="Ada", last_name="Lovelace")
    draft = composed_draft(staff, [student], "Exam moved", "<p>The exam has moved to room 101.</p>")
    sign_in(page, live_server.url, staff, f"/messages/{draft.pk}/edit/")

    sender = page.locator("#id_from_email")
    expect(sender.locator("option").first).to_have_text("Messaging <noreply@uni.example> (default)")
    sender.select_option(EXAMS)
    page.get_by_label(f"Replies go to me ({staff.email})").check()
    screenshot("sender-01-compose")
    page.locator("#save-and-preview").click()

    expect(page).to_have_url(re.compile(rf"/messages/{draft.pk}/preview/"))
    expect(page.get_by_test_id("preview-from")).to_have_text(EXAMS)
    expect(page.get_by_test_id("preview-reply-to")).to_have_text(staff.email)
    draft.refresh_from_db()
    assert (draft.from_email, draft.reply_to) == (EXAMS, staff.email)

    # A mistyped address: the error is at the field, and nothing is sent.
    address = page.locator("#id_to")
    expect(address).to_have_value(staff.email)  # my own address by default
    address.fill("colleague@example.org, boss@example.org")
    page.locator("#send-test-button").click()
    expect(page.locator("#id_to_error")).to_contain_text("Enter one address only")
    expect(page.locator("#id_to")).to_have_attribute("aria-invalid", "true")
    assert smtp_mailer.received == []
    screenshot("sender-02-test-error")
    assert_accessible(page, "the preview with a test address error")
    # axe leaves empty style="" attributes behind, which htmx's settling would copy onto the
    # swapped-in form (a CSP report that is the test's, not the page's): start from a fresh page.
    page.reload()

    page.locator("#id_to").fill("colleague@example.org")
    page.locator("#id_language").select_option("en")
    page.locator("#send-test-button").click()
    expect(page.get_by_test_id("test-sent")).to_contain_text("colleague@example.org")
    expect(page.locator("#id_to")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#send-test-button")).to_be_enabled()  # another test can follow
    screenshot("sender-03-test-sent")

    (sunk,) = smtp_mailer.received
    assert sunk.rcpt_tos == ("colleague@example.org",)
    assert sunk.mail_from == "exams@uni.example"
    assert str(sunk.message["From"]) == EXAMS
    assert str(sunk.message["Reply-To"]) == staff.email
    assert sunk.message["Subject"] == "Exam moved"
    event = AuditEvent.objects.get(action=AuditEvent.Action.TEST_SENT)
    assert (event.details["to"], event.details["from"]) == ("colleague@example.org", EXAMS)
    assert Message.objects.get(pk=draft.pk).is_draft
    assert_accessible(page, "the preview after a test was sent")

    assert e2e_problems.console_errors == [], e2e_problems.console_errors
    assert e2e_problems.page_errors == []
    assert e2e_problems.csp_violations == []
