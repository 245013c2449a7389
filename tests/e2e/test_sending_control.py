"""Scheduling and controlling a send from the staff UI, in a real Chromium.

A staff member schedules a draft for later (typed into the datetime-local inputs), finds it in
the list with its time, and takes it back to draft; a time already past is refused in place;
a send in progress is paused, resumed and cancelled from its status page (each behind a
confirmation dialog, swapped in place by htmx); and a send that paused itself says why.

The huey queue is real but nobody consumes it (`huey_queue`, no consumer): what the views
enqueue (the scheduled start, the delivery after a resume, the report to the sender) waits
there, so every state the browser sees is the one the test put in the database.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Page, expect

from messaging.compose import composing
from messaging.engine import delivery, sending, transitions
from messaging.engine.channels import DeliveryResult
from messaging.models import AuditEvent, Message, MessageReceiver
from tests.e2e.conftest import composed_draft, make_staff, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

Status = Message.Status
RStatus = MessageReceiver.Status
SENDER_PERMISSIONS = ("view_message", "compose_message", "send_message")
SUBJECT = "Room change for {{ recipient_first_name }}"
BODY = "<p>Hello {{ recipient_name }},</p><p>The lecture moves to room 101.</p>"
SAME_ERROR = {"rule": "same_error", "count": 10, "error": "550 5.1.1 No such user"}
FAILURE_RATE = {"rule": "failure_rate", "failed": 12, "window": 50, "error": "451 4.3.0 Try again later"}


# Setup ---------------------------------------------------------------------------------------------


@pytest.fixture
def staff(make_user):
    return make_staff(make_user, SENDER_PERMISSIONS)


@pytest.fixture
def students(make_user):
    return [make_user(language="en", first_name=f"Ada{i}", last_name="Lovelace") for i in range(4)]


def draft(staff, users) -> Message:
    return composed_draft(staff, users, SUBJECT, BODY)


def sending_message(staff, users, sent: int = 1) -> Message:
    """A message in `sending` whose receivers exist, `sent` of them delivered and the rest
    not_sent: the real path (queue → preparing → receivers → sending) without a delivery run."""
    message = draft(staff, users)
    assert transitions.queue(message, [u.pk for u in users])
    sending.start_preparing(message, "e2e-preparer")
    assert sending.prepare(message, "e2e-preparer", **composing.prepare_arguments(message))
    if sent:
        claim = transitions.claim_batch(message.pk, "e2e-worker", limit=sent)
        for receiver in claim.receivers:
            assert transitions.record_result(receiver, DeliveryResult.ok(), claim.worker_id)
        transitions.roll_up(message.pk)
    message.refresh_from_db()
    assert message.status == Status.SENDING
    assert message.receivers.filter(status=RStatus.NOT_SENT).count() == len(users) - sent
    return message


def local_input(moment) -> str:
    """What a datetime-local input holds for `moment`: the site's time zone, to the minute."""
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M")


def in_a_while(**delta):
    """A whole-minute time relative to now (the inputs have no seconds)."""
    return timezone.localtime(timezone.now() + timedelta(**delta)).replace(second=0, microsecond=0)


# Steps ---------------------------------------------------------------------------------------------


def confirm_and_click(page: Page, selector: str, *, accept: bool = True) -> str:
    """Click a control behind an hx-confirm dialog; accept (or dismiss) it. Returns its text."""
    seen: list[str] = []

    def answer(dialog) -> None:
        seen.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", answer)
    page.locator(selector).click()
    assert seen, f"clicking {selector} asked for no confirmation"
    return seen[0]


def status_is(page: Page, status: str) -> None:
    expect(page.locator("#message-status")).to_have_attribute("data-status", status)


def counts(page: Page, **expected: int) -> None:
    for status, value in expected.items():
        expect(page.locator(f"#count-{status}")).to_have_text(str(value))


def audit(page: Page, action: str):
    return page.locator(f"#audit-trail li[data-action={action}]")


def page_marker(page: Page) -> object:
    return page.evaluate("() => window.__e2eMarker")


def no_problems(problems) -> None:
    assert not problems.csp_violations, "\n".join(problems.csp_violations)
    assert not problems.page_errors, "\n".join(problems.page_errors)


# Scheduling ----------------------------------------------------------------------------------------


def test_schedule_see_it_in_the_list_and_take_it_back_to_draft(
    e2e_page, e2e_problems, live_server, huey_queue, staff, students
):
    page = e2e_page
    base = live_server.url
    message = draft(staff, students)
    send_at, expires_at = in_a_while(days=2, hours=1), in_a_while(days=3)
    sign_in(page, base, staff, f"/messages/{message.pk}/send/")

    # Send now is the default; choose later and type the times.
    expect(page.locator("#id_when_0")).to_be_checked()
    page.locator("#id_when_1").check()
    page.locator("#id_send_at").fill(local_input(send_at))
    page.locator("#id_expires_at").fill(local_input(expires_at))
    page.locator("#confirm-send").click()

    # The status page: scheduled, with the time and the ways back.
    expect(page).to_have_url(re.compile(rf"/messages/{message.pk}/$"))
    status_is(page, "scheduled")
    expect(page.locator("#scheduled-note")).to_be_visible()
    expect(page.locator("#send-at time")).to_have_attribute("datetime", send_at.isoformat())
    expect(page.locator("#expires-at time")).to_have_attribute("datetime", expires_at.isoformat())
    expect(page.locator("#reschedule-link")).to_be_visible()
    expect(page.locator("#unschedule-button")).to_be_visible()
    expect(page.locator("#cancel-button")).to_be_visible()
    expect(page.locator("#pause-button")).to_have_count(0)
    expect(audit(page, "scheduled")).to_have_count(1)
    shown_at = page.locator("#send-at time").inner_text()
    message.refresh_from_db()
    assert message.status == Status.SCHEDULED
    assert (message.send_at, message.expires_at) == (send_at, expires_at)
    assert not message.receivers.exists()  # recipients are resolved when it starts

    # Reschedule opens the send page prefilled with the times chosen.
    page.locator("#reschedule-link").click()
    expect(page).to_have_url(re.compile(rf"/messages/{message.pk}/send/$"))
    expect(page.locator("#id_when_1")).to_be_checked()
    expect(page.locator("#id_send_at")).to_have_value(local_input(send_at))
    expect(page.locator("#id_expires_at")).to_have_value(local_input(expires_at))

    # The list shows the badge and the time under it.
    page.goto(f"{base}/messages/")
    row = page.locator(f"#message-{message.pk}")
    expect(row.locator('[data-label="scheduled"]')).to_be_visible()
    expect(row.get_by_test_id("send-at")).to_have_text(shown_at)

    # Take it back to draft: the edit page, and nothing is scheduled any more.
    row.get_by_test_id("message-link").click()
    expect(page).to_have_url(re.compile(rf"/messages/{message.pk}/$"))
    page.locator("#unschedule-button").click()
    expect(page).to_have_url(re.compile(rf"/messages/{message.pk}/edit/$"))
    message.refresh_from_db()
    assert message.status == Status.DRAFT
    assert (message.send_at, message.expires_at) == (None, None)
    page.goto(f"{base}/messages/{message.pk}/")
    status_is(page, "draft")
    expect(page.locator("#scheduled-note")).to_have_count(0)
    expect(audit(page, "unscheduled")).to_have_count(1)
    no_problems(e2e_problems)


def test_a_past_time_or_an_expiry_before_the_send_time_is_refused_in_place(
    e2e_page, e2e_problems, live_server, huey_queue, staff, students
):
    page = e2e_page
    message = draft(staff, students)
    send_url = re.compile(rf"/messages/{message.pk}/send/$")
    sign_in(page, live_server.url, staff, f"/messages/{message.pk}/send/")

    # A time already past.
    past = local_input(in_a_while(hours=-1))
    page.locator("#id_when_1").check()
    page.locator("#id_send_at").fill(past)
    page.locator("#confirm-send").click()
    expect(page).to_have_url(send_url)
    expect(page.locator(".invalid-feedback[data-field=send_at]")).to_contain_text(
        "This time has already passed"
    )
    expect(page.locator("#id_when_1")).to_be_checked()  # what was typed is kept
    expect(page.locator("#id_send_at")).to_have_value(past)

    # An expiry before the send time.
    page.locator("#id_send_at").fill(local_input(in_a_while(days=2)))
    page.locator("#id_expires_at").fill(local_input(in_a_while(days=1)))
    page.locator("#confirm-send").click()
    expect(page).to_have_url(send_url)
    expect(page.locator(".invalid-feedback[data-field=expires_at]")).to_contain_text(
        "allowed to go out after its send time"
    )
    expect(page.locator(".invalid-feedback[data-field=send_at]")).to_have_count(0)

    # Nothing changed.
    message.refresh_from_db()
    assert message.status == Status.DRAFT
    assert (message.send_at, message.expires_at) == (None, None)
    assert not AuditEvent.objects.filter(message=message).exists()
    no_problems(e2e_problems)


# Pause, resume, cancel -------------------------------------------------------------------------------


def test_pause_resume_and_cancel_from_the_status_page(
    e2e_page, e2e_problems, live_server, huey_queue, staff, students
):
    page = e2e_page
    message = sending_message(staff, students, sent=1)
    not_sent = len(students) - 1
    sign_in(page, live_server.url, staff, f"/messages/{message.pk}/")
    page.evaluate("() => { window.__e2eMarker = 1; }")
    status_is(page, "sending")
    counts(page, total=len(students), sent=1, not_sent=not_sent, cancelled=0)
    expect(page.locator("#resume-button")).to_have_count(0)

    # Pause.
    question = confirm_and_click(page, "#pause-button")
    assert "Pause sending?" in question
    status_is(page, "paused")
    expect(page.locator("#paused-banner")).to_contain_text(f"Paused by {staff.get_full_name()}")
    expect(page.locator("#paused-reason")).to_have_count(0)  # not an automatic pause
    expect(page.locator("#pause-button")).to_have_count(0)
    expect(page.locator("#resume-button")).to_be_visible()
    expect(audit(page, "paused")).to_have_count(1)
    message.refresh_from_db()
    assert message.status == Status.PAUSED
    assert message.status_data["paused"]["by"] == staff.pk

    # Cancel, but dismiss the dialog: nothing happens (resuming below would otherwise fail).
    confirm_and_click(page, "#cancel-button", accept=False)

    # Resume.
    confirm_and_click(page, "#resume-button")
    status_is(page, "sending")
    expect(page.locator("#paused-banner")).to_have_count(0)
    expect(page.locator("#pause-button")).to_be_visible()
    expect(audit(page, "resumed")).to_have_count(1)
    message.refresh_from_db()
    assert message.status == Status.SENDING

    # Cancel: the receivers not sent yet are cancelled, the sent one is kept.
    question = confirm_and_click(page, "#cancel-button")
    assert "cannot be undone" in question
    status_is(page, "cancelled")
    counts(page, total=len(students), sent=1, not_sent=0, cancelled=not_sent)
    expect(page.locator("#cancelled-note")).to_contain_text(f"{not_sent} receivers were not sent")
    for control in ("#pause-button", "#resume-button", "#cancel-button"):
        expect(page.locator(control)).to_have_count(0)
    expect(audit(page, "cancelled")).to_have_count(1)
    expect(audit(page, "cancelled")).to_contain_text(f"{not_sent} receivers")
    assert page_marker(page) == 1, "a control reloaded the page instead of updating it in place"

    message.refresh_from_db()
    assert message.status == Status.CANCELLED
    receivers = MessageReceiver.objects.filter(message=message)
    assert receivers.filter(status=RStatus.SENT).count() == 1
    assert receivers.filter(status=RStatus.CANCELLED, cancel_reason="cancelled").count() == not_sent
    assert AuditEvent.objects.filter(message=message, action="cancelled").count() == 1
    no_problems(e2e_problems)


def test_staff_without_the_send_permission_see_no_controls(
    e2e_page, live_server, huey_queue, make_user, staff, students
):
    viewer = make_staff(make_user, permissions=("view_message",), username="viewer")
    message = sending_message(staff, students, sent=0)
    sign_in(e2e_page, live_server.url, viewer, f"/messages/{message.pk}/")
    status_is(e2e_page, "sending")
    expect(e2e_page.locator("#send-controls")).to_have_count(0)

    client = Client()  # and posting anyway is refused
    client.force_login(viewer)
    response = client.post(reverse("messaging:message_pause", args=[message.pk]))
    assert response.status_code == 403
    message.refresh_from_db()
    assert message.status == Status.SENDING


# Automatic pause -------------------------------------------------------------------------------------


def test_the_banner_and_the_list_say_why_a_send_paused_itself(
    e2e_page, e2e_problems, live_server, huey_queue, staff, students
):
    page = e2e_page
    base = live_server.url
    same_error = sending_message(staff, students[:2])
    failure_rate = sending_message(staff, students[2:])
    assert transitions.pause(same_error.pk, tripped=SAME_ERROR)
    assert transitions.pause(failure_rate.pk, tripped=FAILURE_RATE)
    sign_in(page, base, staff)

    for message in (same_error, failure_rate):
        row = page.locator(f"#message-{message.pk}")
        expect(row.locator('[data-label="paused"]')).to_be_visible()
        expect(row).to_contain_text("paused itself")

    page.goto(f"{base}/messages/{same_error.pk}/")
    status_is(page, "paused")
    banner = page.locator("#paused-banner")
    # Polled every 2 s, so not an alert (it would be read out on every poll): its headline is
    # read out once by the page's live region (tests/e2e/test_accessibility.py).
    expect(banner.locator("strong[data-announce]")).to_have_count(1)
    expect(banner).to_contain_text("paused itself because too many deliveries failed")
    expect(page.locator("#paused-reason")).to_contain_text("The same error came 10 times in a row")
    expect(page.locator("#paused-reason code")).to_have_text(SAME_ERROR["error"])
    expect(page.locator("#resume-button")).to_be_visible()
    expect(page.locator("#cancel-button")).to_be_visible()

    page.goto(f"{base}/messages/{failure_rate.pk}/")
    expect(page.locator("#paused-reason")).to_contain_text("12 of the last 50 attempts failed")
    expect(page.locator("#paused-reason code")).to_have_text(FAILURE_RATE["error"])
    no_problems(e2e_problems)


def test_a_real_delivery_run_that_pauses_itself_shows_it_in_the_audit_trail(
    e2e_page, live_server, huey_queue, smtp_mailer, settings, make_user, staff
):
    """The failure watch of a real delivery run (over SMTP to the sink, which refuses
    @bounce.example with 550) trips after the same error three times in a row."""
    settings.MESSAGING_AUTO_PAUSE_SAME_ERROR = 3
    bounced = [make_user(language="en", email=f"user{i}@bounce.example") for i in range(4)]
    message = sending_message(staff, bounced, sent=0)
    delivery.deliver_message(message.pk)
    message.refresh_from_db()
    assert message.status == Status.PAUSED
    assert message.status_data["paused"]["automatic"] is True
    assert message.receivers.filter(status=RStatus.NOT_SENT).count() == 1  # stopped after the third

    page = e2e_page
    sign_in(page, live_server.url, staff, f"/messages/{message.pk}/")
    status_is(page, "paused")
    expect(page.locator("#paused-reason")).to_contain_text("The same error came 3 times in a row")
    expect(page.locator("#paused-reason code")).to_contain_text("550")
    counts(page, failed=3, not_sent=1)
    # Staff pausing is in the audit trail; the run pausing itself must be too.
    assert AuditEvent.objects.filter(message=message, action=AuditEvent.Action.AUTO_PAUSED).exists(), (
        "an automatic pause records no `auto_paused` audit event (messaging/engine/delivery.py, "
        "_record_and_watch: transitions.pause(..., tripped=...) is not followed by audit.record)"
    )
    expect(audit(page, "auto_paused")).to_have_count(1)
