"""The live status page in a real Chromium (issue 30 and the status page at scale): staff find a
receiver by full name typed in any word order and case, page through the table by its links,
and a page that polls while nothing changes keeps what it shows (the server answers 204) while
its "Updated" time still moves; the next change comes in by itself."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from messaging.engine import transitions
from messaging.models import Message, MessageReceiver
from tests.e2e.conftest import make_staff, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

R = MessageReceiver.Status
PERMISSIONS = ("view_message", "send_message", "resend_message")


@pytest.fixture
def sending(make_user) -> Message:
    """A message still sending: Ava Harris among 60 receivers, most of them not sent yet."""
    message = Message.objects.create(
        status=Message.Status.SENDING,
        context_type="other",
        composed_content={"en": {"subject": "Exam moved"}},
    )
    people = [make_user(first_name="Ava", last_name="Harris", username="aharris")]
    people += [
        make_user(first_name="Ava", last_name="Jones"),
        make_user(first_name="Harris", last_name="Berg"),
    ]
    people += [make_user(first_name=f"P{i:02}", last_name="Many") for i in range(57)]
    for i, user in enumerate(people):
        status = R.SENT if i % 4 == 1 else R.NOT_SENT
        MessageReceiver.objects.create(
            message=message, user=user, send_to=user.email, language="en", status=status
        )
    transitions.roll_up(message.pk)
    return message


def rows(page):
    return page.locator("#receiver-table tbody tr[data-receiver-id]")


def test_find_a_receiver_by_full_name_page_through_and_stay_current(
    e2e_page, e2e_problems, live_server, make_user, sending
):
    page = e2e_page
    staff = make_staff(make_user, PERMISSIONS)
    status_path = f"/messages/{sending.pk}/"
    sign_in(page, live_server.url, staff, status_path)
    expect(page.locator("#receiver-results")).to_have_attribute("data-polling", "true")
    expect(rows(page)).to_have_count(25)

    # Nothing changes: each poll is answered 204 and the page stays, but "Updated" moves on.
    first_check = page.locator("#updated-at time").get_attribute("datetime")
    with page.expect_response(lambda r: r.request.headers.get("hx-trigger") == "receiver-results") as poll:
        pass
    assert poll.value.status == 204
    expect(page.locator("#updated-at time")).not_to_have_attribute("datetime", first_check)
    expect(rows(page)).to_have_count(25)

    # Page 2 by its link: the link carries where page 1 starts; page 3 is the last.
    with page.expect_response(re.compile(r"\?page=2&seek=1\.")):
        page.locator(".pagination a", has_text="2").first.click()
    expect(rows(page)).to_have_count(25)
    with page.expect_response(re.compile(r"\?page=3&seek=2\.")):
        page.locator(".pagination .next a").click()
    expect(rows(page)).to_have_count(10)
    expect(page.locator(".pagination .next")).to_have_count(0)

    # Surname first, lower case: Ava Harris, not Ava Jones nor Harris Berg.
    search = page.get_by_test_id("filter-q")
    with page.expect_response(re.compile(r"\?q=harris(\+|%20)ava")):
        search.press_sequentially("harris ava", delay=20)
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_contain_text("Ava Harris")
    expect(page.locator("#receiver-match-count")).to_have_attribute("data-count", "1")
    with page.expect_response(re.compile(r"\?q=")):
        search.fill("AVA HARRIS")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_contain_text("Ava Harris")

    # A worker records her result and publishes the counts: the filtered page follows by itself.
    ava = sending.receivers.get(user__username="aharris")
    MessageReceiver.objects.filter(pk=ava.pk).update(status=R.SENT)
    transitions.roll_up(sending.pk)
    expect(rows(page).first).to_have_attribute("data-status", "sent", timeout=10_000)

    assert not e2e_problems.csp_violations, "\n".join(e2e_problems.csp_violations)
    assert not e2e_problems.page_errors, "\n".join(e2e_problems.page_errors)
    assert not e2e_problems.console_errors, "\n".join(e2e_problems.console_errors)
