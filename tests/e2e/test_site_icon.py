"""No console error on any page, the admin included (issue 30): every page names the site's icon,
and /favicon.ico, which a browser asks for when a page names none, answers with that icon
instead of a 404 (headless Chromium asks for no icon at all, so this is checked by hand)."""

from __future__ import annotations

from urllib.parse import urljoin

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from messaging.preferences import links
from tests.e2e.conftest import composed_draft
from tests.e2e.test_accessibility import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ICON = "/static/messaging/favicon.svg"


def assert_icon_loads(page, context: str) -> None:
    icon = page.locator('link[rel="icon"]')
    expect(icon).to_have_count(1)
    url = urljoin(page.url, icon.get_attribute("href"))
    answer = page.request.get(url)
    assert answer.status == 200, f"{context}: the icon {url} answered {answer.status}"
    assert answer.headers["content-type"] == "image/svg+xml", f"{context}: {answer.headers['content-type']}"


def test_every_page_names_an_icon_and_logs_no_error(e2e_page, e2e_problems, live_server, make_user):
    page = e2e_page
    base = live_server.url
    ada = make_user(language="en", first_name="Ada", last_name="Lovelace")
    admin = make_user(username="admin", is_staff=True, is_superuser=True)
    draft = composed_draft(admin, [ada], "Exam moved", "<p>Room 101.</p>")
    anonymous = [
        reverse("admin:login"),
        reverse("login"),
        reverse("preferences:manage_signed", args=[links.manage_token(ada.pk)]),
    ]
    signed_in = [
        reverse("admin:index"),
        reverse("admin:messaging_message_changelist"),
        reverse("admin:messaging_message_change", args=[draft.pk]),
        reverse("admin:messaging_messagereceiver_changelist"),
        reverse("admin:auth_user_change", args=[ada.pk]),
        reverse("messaging:message_list"),
        reverse("messaging:message_edit", args=[draft.pk]),
    ]
    for path in anonymous:
        page.goto(f"{base}{path}")
        page.wait_for_load_state("load")
        assert_icon_loads(page, path)
    sign_in(page, base, admin)
    for path in signed_in:
        page.goto(f"{base}{path}")
        page.wait_for_load_state("load")
        assert_icon_loads(page, path)

    assert not e2e_problems.console_errors, "\n".join(e2e_problems.console_errors)
    assert not e2e_problems.page_errors, "\n".join(e2e_problems.page_errors)
    assert not e2e_problems.failed_requests, "\n".join(e2e_problems.failed_requests)


def test_favicon_ico_is_the_sites_icon(e2e_page, live_server):
    first = e2e_page.request.get(f"{live_server.url}/favicon.ico", max_redirects=0)
    assert first.status == 301 and first.headers["location"] == ICON
    icon = e2e_page.request.get(f"{live_server.url}/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.body().startswith(b"<svg")
