"""The charts of issue 13 in a real Chromium: the status page draws sent and failed over time
from status_data["timeline"] and redraws as each 2 s poll brings new points (the chart itself
is kept across the swaps), and the message list draws the emails sent per week. Both under the
strict CSP, without console errors.

The huey queue is real but nobody consumes it (`huey_queue`): the message stays `sending` with
the counts the test gives it, so the page keeps polling.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from messaging.compose import composing
from messaging.engine import sending, transitions
from messaging.engine.channels import DeliveryResult
from messaging.models import Message, MessageReceiver
from tests.e2e.conftest import assert_accessible, composed_draft, make_staff, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def staff(make_user):
    return make_staff(make_user, ("view_message", "send_message"))


@pytest.fixture
def students(make_user):
    return [make_user(language="en", first_name=f"Ada{i}", last_name="Lovelace") for i in range(4)]


def sending_message(staff, users, sent: int) -> Message:
    """In `sending`, `sent` receivers delivered, published by roll_up (which starts the timeline)."""
    message = composed_draft(staff, users, "Room change", "<p>The lecture moves to room 101.</p>")
    assert transitions.queue(message, [u.pk for u in users])
    sending.start_preparing(message, "e2e-preparer")
    assert sending.prepare(message, "e2e-preparer", **composing.prepare_arguments(message))
    claim = transitions.claim_batch(message.pk, "e2e-worker", limit=sent)
    for receiver in claim.receivers:
        assert transitions.record_result(receiver, DeliveryResult.ok(), claim.worker_id)
    transitions.roll_up(message.pk)
    message.refresh_from_db()
    assert message.status == Message.Status.SENDING
    return message


def no_problems(problems) -> None:
    assert not problems.csp_violations, "\n".join(problems.csp_violations)
    assert not problems.console_errors, "\n".join(problems.console_errors)
    assert not problems.page_errors, "\n".join(problems.page_errors)


def test_the_status_page_draws_progress_and_redraws_after_each_poll(
    e2e_page, e2e_problems, live_server, huey_queue, staff, students
):
    page = e2e_page
    message = sending_message(staff, students, sent=1)
    timeline = message.status_data["timeline"]
    assert [point[1:] for point in timeline] == [[0, 0], [1, 0]]
    sign_in(page, live_server.url, staff, f"/messages/{message.pk}/")

    chart = page.locator("#progress-chart")
    canvas = chart.locator("canvas")
    expect(canvas).to_have_count(1)
    expect(canvas).to_be_visible()
    expect(canvas).to_have_attribute("role", "img")
    expect(canvas).to_have_attribute("aria-label", "Chart: emails sent and failed over time")
    expect(canvas).to_have_attribute("aria-describedby", "progress-chart-text")
    expect(chart).to_have_attribute("data-points", "2")
    expect(page.locator("#progress-chart-text")).to_have_text(
        re.compile(r"^1 sent, 0 failed as of \d\d:\d\d\.$")
    )
    box = canvas.bounding_box()
    assert box["width"] > 300 and box["height"] > 100
    # The legend names the series with the translated labels from the data attributes.
    expect(chart.locator(".u-legend")).to_contain_text("Sent")
    expect(chart.locator(".u-legend")).to_contain_text("Failed")
    # Bootstrap's success and danger colours.
    colours = page.evaluate(
        """() => [...document.querySelectorAll('#progress-chart .u-legend .u-marker')]
                 .map(m => getComputedStyle(m).borderColor)"""
    )
    assert colours[1:] == ["rgb(25, 135, 84)", "rgb(220, 53, 69)"]
    assert_accessible(page, "the status page with its progress chart")
    page.evaluate("() => { document.getElementById('progress-chart').e2eMarker = 'kept' }")

    # The next polls bring more points: the same chart (kept by hx-preserve) draws them.
    last = timeline[-1][0]
    Message.objects.filter(pk=message.pk).update(
        status_data={
            **message.status_data,
            "timeline": [*timeline, [last + 3, 2, 1], [last + 6, 2, 2]],
            "summary": {
                "receiver_counts": {
                    **message.status_data["summary"]["receiver_counts"],
                    "sent": 2,
                    "error": 2,
                },
                "total": 4,
            },
        }
    )
    expect(chart).to_have_attribute("data-points", "4")
    expect(page.locator("#count-sent")).to_have_text("2")
    expect(page.locator("#progress-chart-text")).to_have_text(re.compile(r"^2 sent, 2 failed as of "))
    expect(canvas).to_have_count(1)
    assert page.evaluate("() => document.getElementById('progress-chart').e2eMarker") == "kept"
    assert page.locator("#progress-chart .uplot").count() == 1

    # A garbled timeline draws nothing new and breaks nothing.
    with page.expect_response(re.compile(rf"/messages/{message.pk}/")):
        Message.objects.filter(pk=message.pk).update(status_data={**message.status_data, "timeline": "junk"})
    expect(chart).to_have_attribute("data-points", "0")
    expect(canvas).to_have_count(1)
    no_problems(e2e_problems)


def test_the_list_draws_the_emails_sent_per_week(e2e_page, e2e_problems, live_server, staff, students):
    message = Message.objects.create(status=Message.Status.SENT, created_by=staff)
    now = timezone.now()
    for weeks_ago, user in [(0, students[0]), (0, students[1]), (3, students[2])]:
        MessageReceiver.objects.create(
            message=message,
            user=user,
            status=MessageReceiver.Status.SENT,
            sent_datetime=now - timedelta(weeks=weeks_ago),
        )
    page = e2e_page
    sign_in(page, live_server.url, staff, "/messages/")

    chart = page.locator("#sends-per-week-chart")
    canvas = chart.locator("canvas")
    expect(canvas).to_be_visible()
    expect(canvas).to_have_attribute("role", "img")
    expect(canvas).to_have_attribute("aria-label", "Chart: emails sent per week")
    expect(chart).to_have_attribute("data-points", "12")
    rows = page.locator("#sends-per-week-table tbody tr")
    expect(rows).to_have_count(12)
    expect(rows.last.locator("td").last).to_have_text("2")
    expect(rows.nth(8).locator("td").last).to_have_text("1")
    assert_accessible(page, "the message list with its weekly chart")
    # The list's own htmx filtering leaves the chart alone.
    page.locator("#message-filter button[type=submit]").first.click()
    expect(page.locator("#message-results")).to_be_visible()
    expect(chart.locator("canvas")).to_have_count(1)
    no_problems(e2e_problems)
