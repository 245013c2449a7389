"""Statuses people read correctly, in a real Chromium: temporary and permanent failures look
different, the page keeps refreshing (and says when) while a retry is pending, its counts follow
a user deleted meanwhile, and "Resend failed" asks first and by default resends only what can
succeed."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from messaging.models import AuditEvent, MessageReceiver
from messaging.tracking.views import messages as status_views
from tests.e2e.conftest import assert_accessible, make_staff, sign_in
from tests.tracking.test_status_reading import PERMANENT, RETRYING, SENT, make_send

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PERMISSIONS = ("view_message", "compose_message", "send_message", "resend_message")
BADGE_COLOURS = """() => [...document.querySelectorAll("#receiver-table [data-label]")]
    .map((badge) => [badge.dataset.label, getComputedStyle(badge).backgroundColor])"""


def updated_text(page) -> str:
    return page.locator("#updated-at time").get_attribute("datetime")


def test_failures_read_right_and_the_page_stays_current(
    e2e_page, e2e_problems, live_server, make_user, monkeypatch, screenshot
):
    monkeypatch.setattr(status_views, "RETRY_POLL_SECONDS", 1)  # the live server runs in this process
    page = e2e_page
    staff = make_staff(make_user, PERMISSIONS)
    message = make_send(make_user, SENT, SENT, RETRYING, PERMANENT, PERMANENT)
    sign_in(page, live_server.url, staff, f"/messages/{message.pk}/")

    # How it went, at a glance; temporary (amber) and permanent (red) failures differ.
    expect(page.locator("#message-status")).to_have_attribute("data-label", "sent_partly")
    expect(page.locator("#message-status")).to_contain_text("Sent, 3 not delivered")
    colours = dict(page.evaluate(BADGE_COLOURS))
    assert colours["retrying"] != colours["failed_permanently"] != colours["sent"]
    assert colours["failed_permanently"] == "rgb(220, 53, 69)"  # Bootstrap's danger
    screenshot("status-reading-labels")
    assert_accessible(page, "status page with temporary and permanent failures")

    # A retry is pending: the page keeps refreshing, and says when it last did.
    expect(page.locator("#receiver-results")).to_have_attribute("data-polling", "true")
    first = updated_text(page)
    expect(page.locator("#updated-at time")).not_to_have_attribute("datetime", first, timeout=10_000)

    # A user deleted meanwhile (the admin, a cleanup job): counts and resend follow.
    leaving = message.receivers.filter(permanent_failure=True).first()
    get_user_model().objects.filter(pk=leaving.user_id).delete()
    expect(page.locator("#count-total")).to_have_text("4")
    expect(page.locator("#count-failed")).to_have_text("2")
    expect(page.locator("#resend-all-failed")).to_have_attribute("data-count", "2")
    expect(page.locator("#receiver-table tbody tr[data-receiver-id]")).to_have_count(4)

    # Resend asks first: one can succeed, one failed permanently and is left alone by default.
    page.locator("#resend-all-failed").click()
    expect(page.locator("#plan-can-succeed")).to_have_attribute("data-count", "1")
    expect(page.locator("#plan-permanent")).to_have_attribute("data-count", "1")
    expect(page.locator("#confirm-resend")).to_contain_text("Resend 1 receiver")
    page.locator("#include-permanent").check()
    expect(page.locator("#confirm-resend")).to_contain_text("Resend 2 receivers")
    page.locator("#include-permanent").uncheck()
    assert_accessible(page, "resend confirmation")
    screenshot("status-reading-resend-confirmation")
    page.locator("#confirm-resend").click()
    expect(page).to_have_url(re.compile(rf"/messages/{message.pk}/$"))
    expect(page.locator("#flash-messages")).to_contain_text("1 receiver was queued again.")
    left_alone = "1 receiver that failed permanently was left alone."
    expect(page.locator("#flash-messages")).to_contain_text(left_alone)
    still_permanent = message.receivers.get(permanent_failure=True)
    assert still_permanent.status == MessageReceiver.Status.FAILED
    event = AuditEvent.objects.get(message=message, action=AuditEvent.Action.RESENT_ALL)
    assert event.details == {"receivers": 1, "include_permanent": False}

    assert not e2e_problems.csp_violations, "\n".join(e2e_problems.csp_violations)
    assert not e2e_problems.page_errors, "\n".join(e2e_problems.page_errors)
    assert not e2e_problems.console_errors, "\n".join(e2e_problems.console_errors)
