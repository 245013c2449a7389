"""The compose summary follows the recipients' preferences in a real Chromium: choosing another
context type or ticking "Important" asks the summary again, which says how many get the message
immediately, in a digest or not at all. The page stays accessible and free of console errors.
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from messaging.models import AuditEvent, DeliveryMode, Message, NotificationPreference
from tests.e2e.conftest import assert_accessible, composed_draft, make_staff, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def staff(make_user):
    return make_staff(make_user, ["view_message", "compose_message", "send_message", "ignore_preferences"])


@pytest.fixture
def students(make_user):
    """Three students: comments off, comments in a daily digest, nothing chosen."""
    off, daily, default = (make_user(language="en", username=name) for name in ("off", "daily", "default"))
    NotificationPreference.objects.create(user=off, context_type="comment", mode=DeliveryMode.OFF)
    NotificationPreference.objects.create(user=daily, context_type="comment", mode=DeliveryMode.DAILY)
    return [off, daily, default]


def clean(problems) -> None:
    assert not problems.csp_violations, "\n".join(problems.csp_violations)
    assert not problems.console_errors, "\n".join(problems.console_errors)
    assert not problems.page_errors, "\n".join(problems.page_errors)


def test_the_summary_follows_type_and_importance(e2e_page, e2e_problems, live_server, staff, students):
    draft = composed_draft(staff, students, "Exam moved", "<p>To Friday</p>")  # deadline_moved: enforced
    page = e2e_page
    sign_in(page, live_server.url, staff, next_path=reverse("messaging:message_edit", args=[draft.pk]))
    modes = page.locator("#delivery-modes")
    expect(modes).to_have_attribute("data-everyone-immediately", "enforced")

    page.locator("#id_context_type").select_option("comment")
    expect(modes).to_have_attribute("data-immediately", "1")
    expect(modes).to_have_attribute("data-digest", "1")
    expect(modes).to_have_attribute("data-off", "1")
    expect(modes).to_contain_text("1 has turned this type off (they will not get it)")
    assert_accessible(page, "compose summary with delivery modes")

    page.locator("#id_ignore_preferences").check()
    expect(modes).to_have_attribute("data-everyone-immediately", "important")
    page.locator("#save-draft").click()
    expect(page.get_by_text("Draft saved.")).to_be_visible()
    expect(page.locator("#id_ignore_preferences")).to_be_checked()
    draft.refresh_from_db()
    assert draft.ignore_preferences and draft.context_type == "comment"
    assert draft.audit_events.filter(action=AuditEvent.Action.MARKED_IMPORTANT).exists()

    page.locator("#id_ignore_preferences").uncheck()
    expect(modes).to_have_attribute("data-off", "1")
    clean(e2e_problems)
    assert Message.objects.count() == 1
