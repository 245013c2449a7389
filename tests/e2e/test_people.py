""" "What did we send to this student?" in a real Chromium (issue 13): staff search a student by
full name (typed surname first), open the person, then the receiver, and read exactly the subject
and content that student got, in Norwegian.

The message is delivered in this process over real SMTP (queue → prepare → deliver, as a worker
does), so each receiver holds what its recipient received, rendered in their language.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from messaging.models import Message, MessageReceiver
from tests.e2e.conftest import deliver_in_process, make_staff, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CONTENT = {
    "en": {
        "subject": "Exam moved, {{ recipient_first_name }}",
        "body": "<p>Hello {{ recipient_name }},</p><p>The exam has moved to <strong>room 101</strong>.</p>",
    },
    "nb": {
        "subject": "Eksamen er flyttet, {{ recipient_first_name }}",
        "body": "<p>Hei {{ recipient_name }},</p><p>Eksamen er flyttet til <strong>rom 101</strong>.</p>",
    },
}


@pytest.fixture
def staff(make_user):
    return make_staff(make_user, ["view_message"])


@pytest.fixture
def students(make_user):
    kari = make_user(language="nb", username="kari.n", first_name="Kari", last_name="Nordmann")
    ola = make_user(language="en", username="ola.n", first_name="Ola", last_name="Nordmann")
    return kari, ola


def sent_message(staff, users) -> Message:
    message = Message.objects.create(
        created_by=staff,
        context_type=Message.ContextType.DEADLINE_MOVED,
        composed_content=CONTENT,
        virtual_message_receivers={"chosen_user_ids": [u.pk for u in users], "group_ids": []},
    )
    return deliver_in_process(message, users)


def test_staff_find_a_student_and_see_what_was_sent_to_them(
    e2e_page, e2e_problems, live_server, smtp_mailer, staff, students
):
    page = e2e_page
    kari, ola = students
    message = sent_message(staff, students)
    got = MessageReceiver.objects.get(message=message, user=kari)
    assert got.language == "nb" and got.subject == "Eksamen er flyttet, Kari"

    sign_in(page, live_server.url, staff)
    page.locator("#nav-people").click()
    expect(page).to_have_url(re.compile(r"/messages/people/$"))

    # Surname first: every word matches some part of the name; Ola Nordmann drops out.
    with page.expect_response(re.compile(r"/messages/people/\?q=")):
        page.locator("#person-search").press_sequentially("Nordmann Kari", delay=20)
    expect(page.locator("#person-results [data-person-id]")).to_have_count(1)
    expect(page.locator(f'#person-results [data-person-id="{ola.pk}"]')).to_have_count(0)
    row = page.locator(f'#person-results [data-person-id="{kari.pk}"]')
    expect(row.get_by_test_id("received-count")).to_have_text("1")
    expect(page).to_have_url(re.compile(r"/messages/people/\?q=Nordmann(\+|%20)Kari$"))  # shareable

    row.get_by_test_id("person-link").click()
    expect(page).to_have_url(re.compile(rf"/messages/people/{kari.pk}/$"))
    expect(page.locator("#person-language")).to_have_text("Norwegian Bokmål")
    expect(page.locator("#person-address")).to_have_text(kari.email)
    receiver_row = page.locator(f'#person-receiver-table tr[data-receiver-id="{got.pk}"]')
    expect(receiver_row).to_contain_text("Eksamen er flyttet, Kari")
    expect(receiver_row.locator(".status-badge")).to_have_attribute("data-status", "sent")

    # The filter narrows the table in place (htmx); nothing failed, so a failed filter is empty.
    with page.expect_response(re.compile(rf"/messages/people/{kari.pk}/\?")):
        page.get_by_test_id("filter-status").select_option("failed")
    expect(page.locator("#person-receiver-table tr[data-receiver-id]")).to_have_count(0)
    with page.expect_response(re.compile(rf"/messages/people/{kari.pk}/\?")):
        page.get_by_test_id("filter-status").select_option("sent")
    expect(receiver_row).to_be_visible()

    receiver_row.get_by_test_id("receiver-detail-link").click()
    expect(page).to_have_url(re.compile(rf"/messages/receivers/{got.pk}/$"))
    expect(page.locator("#receiver-subject")).to_have_text(got.subject)
    expect(page.locator("#receiver-plain")).to_have_text(got.message_content_plain)
    assert "Hei Kari Nordmann" in got.message_content_plain and "rom 101" in got.message_content_plain
    html = page.frame_locator("#receiver-html")
    expect(html.locator("body")).to_contain_text("Hei Kari Nordmann")
    expect(html.locator("strong")).to_have_text("rom 101")

    assert not e2e_problems.csp_violations, "\n".join(e2e_problems.csp_violations)
    assert not e2e_problems.console_errors, "\n".join(e2e_problems.console_errors)
    assert not e2e_problems.page_errors, "\n".join(e2e_problems.page_errors)
