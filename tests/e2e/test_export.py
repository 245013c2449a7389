"""The receivers of a message as CSV, in a real Chromium: staff filter the status page's table
to the failed receivers, see how many match, and download exactly those.

The message is delivered in this process over real SMTP (the sink refuses *@bounce.example
with 550, so those receivers end `failed`), the path staff-composed messages take.
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from playwright.sync_api import expect

from messaging.compose import composing
from messaging.engine import delivery, sending, transitions
from messaging.models import Message, MessageReceiver
from tests.e2e.conftest import composed_draft, make_staff, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def staff(make_user):
    return make_staff(make_user, ("view_message",))


@pytest.fixture
def students(make_user):
    delivered = [make_user(first_name=f"Åse{i}", last_name="Ødegård") for i in range(3)]
    refused = [
        make_user(first_name="=Bjørn", last_name=f"Bounce{i}", email=f"student{i}@bounce.example")
        for i in range(2)
    ]
    return delivered, refused


def delivered_message(staff, users) -> Message:
    """Queue → prepare → one delivery run, in this process over real SMTP (smtp_mailer)."""
    message = composed_draft(staff, users, "Exam moved", "<p>Hello {{ recipient_name }}</p>")
    assert transitions.queue(message, [u.pk for u in users])
    sending.start_preparing(message, "e2e-preparer")
    assert sending.prepare(message, "e2e-preparer", **composing.prepare_arguments(message))
    delivery.deliver_message(message.pk)
    message.refresh_from_db()
    return message


def test_filtered_receivers_download_as_csv(
    e2e_page, e2e_problems, live_server, smtp_mailer, staff, students
):
    page = e2e_page
    delivered, refused = students
    message = delivered_message(staff, delivered + refused)
    failed = set(
        MessageReceiver.objects.filter(message=message, status=MessageReceiver.Status.FAILED).values_list(
            "pk", flat=True
        )
    )
    assert len(failed) == len(refused)

    sign_in(page, live_server.url, staff, f"/messages/{message.pk}/")
    rows = page.locator("#receiver-table tbody tr[data-receiver-id]")
    expect(rows).to_have_count(len(delivered) + len(refused))
    expect(page.locator("#receiver-match-count")).to_have_count(0)  # no filter: no count

    # Filter in place (htmx): the total comes with the table.
    page.locator("#id_status").select_option("failed")
    expect(page).to_have_url(re.compile(r"[?&]status=failed"))
    expect(rows).to_have_count(len(refused))
    expect(page.locator("#receiver-match-count")).to_have_text(f"{len(refused)} receivers match")
    link = page.locator("#receiver-export")
    expect(link).to_have_attribute(
        "href", re.compile(rf"/messages/{message.pk}/receivers\.csv\?.*status=failed")
    )

    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == f"message-{message.pk}-receivers.csv"
    with open(download.path(), encoding="utf-8-sig", newline="") as file:  # the BOM is for Excel
        table = list(csv.reader(io.StringIO(file.read())))
    assert table[0][:3] == ["Receiver id", "Name", "Username"]
    assert {int(row[0]) for row in table[1:]} == failed
    assert {row[5] for row in table[1:]} == {"failed"}
    assert all(row[1].startswith("'=Bjørn Bounce") for row in table[1:])  # a formula, neutralised
    assert all(row[11].startswith("550") for row in table[1:])

    # Back to every receiver: the count goes away, the link downloads all of them.
    page.locator("#id_status").select_option("")
    expect(rows).to_have_count(len(delivered) + len(refused))
    expect(page.locator("#receiver-match-count")).to_have_count(0)
    href = link.get_attribute("href")
    assert href.startswith(f"/messages/{message.pk}/receivers.csv") and "status=failed" not in href

    page.wait_for_load_state("networkidle")
    assert not e2e_problems.csp_violations, "\n".join(e2e_problems.csp_violations)
    assert not e2e_problems.console_errors, "\n".join(e2e_problems.console_errors)
    assert not e2e_problems.page_errors, "\n".join(e2e_problems.page_errors)
