"""A recipient, not staff, changes how they get a kind of message from the link in an email
they really received, in a real Chromium, without signing in; the next message of that kind is
not sent to them. The one-click page, the "read in full" page and a broken link's page are
checked too, each by axe-core.

Messages are delivered in this process over real SMTP (queue → prepare → deliver, as a worker
does); links in them point at the live server (MESSAGING_SITE_URL).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from messaging.models import DeliveryMode, Message, MessageReceiver, NotificationPreference
from messaging.preferences import links
from tests.e2e.conftest import PASSWORD, assert_accessible, deliver_in_process, make_staff

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CONTENT = {
    "en": {
        "subject": "Feedback on assignment 2",
        "body": "<p>Hello {{ recipient_name }},</p><p>Well done.</p>",
    },
    "nb": {
        "subject": "Tilbakemelding på oblig 2",
        "body": "<p>Hei {{ recipient_name }},</p><p>Bra jobbet.</p>",
    },
}
STAFF_NAV = ("#nav-messages", "#nav-new-message", "#nav-templates", "#nav-people", "#nav-operations")


@pytest.fixture
def site(settings, live_server):
    settings.MESSAGING_SITE_URL = live_server.url
    return live_server.url


@pytest.fixture
def staff(make_user):
    return make_staff(make_user, ["view_message"])


@pytest.fixture
def student(make_user):
    return make_user(language="en", first_name="Ada", last_name="Lovelace", email="ada@uni.example")


def send_feedback(staff, users) -> Message:
    message = Message.objects.create(
        created_by=staff,
        context_type=Message.ContextType.FEEDBACK,
        composed_content=CONTENT,
        virtual_message_receivers={"chosen_user_ids": [u.pk for u in users], "group_ids": []},
    )
    return deliver_in_process(message, users)


def received_by(sink, address: str):
    return [mail.message for mail in sink.received if address in mail.rcpt_tos]


def assert_no_staff_navigation(page) -> None:
    for selector in STAFF_NAV:
        expect(page.locator(selector)).to_have_count(0)


def assert_no_problems(problems, expected: str = "") -> None:
    """`expected`: the one console error a page that answers 400 on purpose makes."""
    console_errors = [m for m in problems.console_errors if not (expected and expected in m)]
    assert not problems.csp_violations, "\n".join(problems.csp_violations)
    assert not console_errors, "\n".join(console_errors)
    assert not problems.page_errors, "\n".join(problems.page_errors)


def test_a_recipient_turns_a_type_off_from_the_link_in_their_email(
    e2e_page, e2e_problems, site, smtp_mailer, staff, student
):
    page = e2e_page
    send_feedback(staff, [student])
    (received,) = received_by(smtp_mailer, student.email)
    plain = received.get_body(("plain",)).get_content()
    (url,) = re.findall(rf"{re.escape(site)}/preferences/[^\s/]+/", plain)

    page.goto(url)  # not signed in
    expect(page.locator("h1")).to_have_text("Email settings")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert_no_staff_navigation(page)
    expect(page.locator("#type-deadline_moved")).to_contain_text("Always immediately — cannot be turned off")
    expect(page.locator("#type-deadline_moved input[type=radio]").first).to_be_disabled()
    assert_accessible(page, "the preference page from an email's link")

    feedback = page.locator("#type-feedback")
    expect(feedback.get_by_label("Immediately")).to_be_checked()
    feedback.get_by_label("Off").check()
    page.locator("#preferences-save").click()
    expect(page.get_by_test_id("flash-success")).to_contain_text("Saved.")
    expect(page.locator("#type-feedback").get_by_label("Off")).to_be_checked()
    assert_accessible(page, "the preference page after saving")
    assert NotificationPreference.objects.get(user=student, context_type="feedback").mode == DeliveryMode.OFF

    smtp_mailer.handler.received.clear()
    later = send_feedback(staff, [student])
    assert later.receivers.get().status == MessageReceiver.Status.SKIPPED
    assert received_by(smtp_mailer, student.email) == []
    assert_no_problems(e2e_problems)


def test_one_click_in_the_browser_asks_first(e2e_page, e2e_problems, site, smtp_mailer, staff, make_user):
    page = e2e_page
    kari = make_user(language="nb", first_name="Kari", email="kari@uni.example")
    kari.set_password(PASSWORD)
    kari.save()
    send_feedback(staff, [kari])
    (received,) = received_by(smtp_mailer, kari.email)
    one_click = str(received["List-Unsubscribe"]).strip("<>")

    page.goto(one_click)  # a GET changes nothing
    expect(page.locator("html")).to_have_attribute("lang", "nb")
    assert_no_staff_navigation(page)
    expect(page.locator("#one-click-types li")).to_have_count(1)
    assert_accessible(page, "the one-click page")
    assert not NotificationPreference.objects.filter(user=kari).exists()

    page.locator("#one-click-confirm").click()
    expect(page.locator("#one-click-done")).to_be_visible()
    assert_accessible(page, "the one-click confirmation")
    assert NotificationPreference.objects.get(user=kari, context_type="feedback").mode == DeliveryMode.OFF

    # An unsubscribe link opens no preference page (it does one thing): signing in does.
    page.locator("#one-click-manage").click()
    expect(page).to_have_url(re.compile(r"/login/\?next=/preferences/$"))
    page.locator("#id_username").fill(kari.get_username())
    page.locator("#id_password").fill(PASSWORD)
    page.locator("#login-submit").click()
    expect(page.locator("#type-feedback input[value=off]")).to_be_checked()
    assert_no_problems(e2e_problems)


def test_reading_in_full_and_a_broken_link(e2e_page, e2e_problems, site, smtp_mailer, staff, student):
    page = e2e_page
    message = send_feedback(staff, [student])
    receiver = message.receivers.get()

    page.goto(links.read_url(student.pk, receiver.pk))
    expect(page.locator("#read-subject")).to_have_text("Feedback on assignment 2")
    expect(page.locator("#read-content")).to_contain_text("Hello Ada Lovelace")
    assert_no_staff_navigation(page)
    assert_accessible(page, "a digest item read in full")

    page.goto(f"{site}/preferences/{links.manage_token(student.pk)[:-5]}/")
    expect(page.locator("#bad-link")).to_contain_text("This link is not valid")
    assert_accessible(page, "a broken link's page")
    page.locator("#bad-link-sign-in").click()
    expect(page).to_have_url(re.compile(r"/login/\?next=/preferences/$"))
    assert_no_problems(e2e_problems, expected="status of 400 (Bad Request)")


def test_signed_in_recipient_uses_the_same_page(e2e_page, e2e_problems, site, make_user):
    from tests.e2e.conftest import sign_in

    page = e2e_page
    student = make_user(language="en", username="ada", first_name="Ada", last_name="Lovelace")
    student.set_password(PASSWORD)
    student.save()
    sign_in(page, site, student, next_path="/preferences/")
    assert_no_staff_navigation(page)
    page.locator("#type-comment").get_by_label("Weekly digest").check()
    page.locator("#preferences-save").click()
    expect(page.get_by_test_id("flash-success")).to_be_visible()
    assert (
        NotificationPreference.objects.get(user=student, context_type="comment").mode == DeliveryMode.WEEKLY
    )
    assert_accessible(page, "the signed-in preference page")
    assert_no_problems(e2e_problems)
