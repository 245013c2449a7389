"""The status page tells what happened, in a real Chromium (issue 30).

- Cancelled with mail in flight (a real consumer, a sink that answers slowly): the page keeps
  polling while workers still record what they had handed to the server, stops by itself, and
  its final counts are what the sink received and what the database says, without a reload.
  The message list, open beside it, does the same for the message's row.
- Resend, Pause, Resume and Cancel pressed while a poll is in flight, again and again: the
  action's answer is shown, the poll's is dropped, and no answer lands on elements another one
  replaced (no htmx console error: static/messaging/app.js, checkAnswer).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from messaging.engine import transitions
from messaging.models import AuditEvent, Message, MessageReceiver
from messaging.operations import audit
from messaging.operations.mailsink import MailSink
from tests.conftest import Consumer, wait_until
from tests.e2e.conftest import make_staff, sign_in
from tests.e2e.test_sending_control import confirm_and_click, counts, sending_message, status_is
from tests.process_helpers import ENGINE_ENV, deliveries, email_url, message_ids, queue_message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

R = MessageReceiver.Status
PERMISSIONS = ("view_message", "compose_message", "send_message", "resend_message")
# Enough that the send is far from done when Cancel lands: 2 workers x 2 connections at 0.3 s.
RECEIVERS = 120
DATA_DELAY = 0.3
SWITCHES = 10
RESENDS = 3


def shown(page: Page, status: str) -> int:
    return int(page.locator(f"#count-{status}").inner_text())


def stopped_polling(page: Page) -> None:
    expect(page.locator("#receiver-results")).to_have_attribute("data-polling", "false")
    expect(page.locator("#receiver-results")).not_to_have_attribute("hx-trigger", re.compile("."))


def is_poll(message: Message):
    path = f"/messages/{message.pk}/"
    return lambda request: (
        request.method == "GET"
        and request.url.split("?")[0].endswith(path)
        and request.headers.get("hx-request") == "true"
    )


def test_cancel_with_mail_in_flight_converges_to_what_the_server_received(
    e2e_page, e2e_problems, live_server, huey_queue, engine_settings, make_user, django_user_model, capsys
):
    page = e2e_page
    staff = make_staff(make_user, PERMISSIONS)
    with MailSink(data_delay=DATA_DELAY) as sink:
        message = queue_message(django_user_model, RECEIVERS, "inflight")
        sign_in(page, live_server.url, staff, f"/messages/{message.pk}/")
        page.evaluate("() => { window.__e2eMarker = 1; }")
        listing = page.context.new_page()
        listing.on(
            "console", lambda msg: msg.type == "error" and e2e_problems.console_errors.append(msg.text)
        )
        listing.on("pageerror", lambda exc: e2e_problems.page_errors.append(str(exc)))
        listing.goto(f"{live_server.url}/messages/")
        expect(listing.locator("#message-results")).to_have_attribute("data-polling", "true")
        listing.evaluate("() => { window.__e2eMarker = 1; }")
        consumer = Consumer(email_url(sink), workers=2, **ENGINE_ENV).start()
        try:
            wait_until(lambda: len(sink.received) >= 5, timeout=30, interval=0.05, message="5 deliveries")
            confirm_and_click(page, "#cancel-button")
            status_is(page, "cancelled")
            delivered_at_cancel = len(sink.received)
            # No reload: the page polls on until no receiver can change, then stops by itself.
            stopped_polling(page)
            page_counts = {s: shown(page, s) for s in ("total", "sent", "cancelled", "not_sent", "failed")}
            expect(listing.locator("#message-results")).to_have_attribute("data-polling", "false")
            listed = listing.locator(f"#message-{message.pk} td").all_inner_texts()[-3:]
            delivered_when_stopped = len(sink.received)
        finally:
            consumer.stop()
        counted = deliveries(sink)

    expected = message_ids(message)
    in_database = {s: MessageReceiver.objects.filter(message=message, status=s).count() for s in R.values}
    with capsys.disabled():
        print(
            f"\ncancel in flight: receivers={RECEIVERS} delivered_at_cancel={delivered_at_cancel} "
            f"page sent={page_counts['sent']} cancelled={page_counts['cancelled']} "
            f"sink distinct Message-IDs={len(counted)} database sent={in_database[R.SENT]} "
            f"cancelled={in_database[R.CANCELLED]}"
        )

    assert page.evaluate("() => window.__e2eMarker") == 1, "the page was reloaded"
    assert delivered_at_cancel < RECEIVERS, "the send finished before the cancel: nothing was tested"
    assert len(counted) == delivered_when_stopped, "mail reached the server after the page stopped"
    assert set(counted.values()) == {1}, "a Message-ID was delivered more than once"
    assert set(counted) <= set(expected)
    assert page_counts["sent"] == len(counted) == in_database[R.SENT]
    assert page_counts["cancelled"] == in_database[R.CANCELLED] == RECEIVERS - len(counted)
    assert (page_counts["total"], page_counts["not_sent"], page_counts["failed"]) == (RECEIVERS, 0, 0)
    assert listing.evaluate("() => window.__e2eMarker") == 1, "the message list was reloaded"
    assert [int(n) for n in listed] == [RECEIVERS, len(counted), 0], "the list's row: receivers, sent, failed"
    expect(page.locator("#cancelled-note")).to_contain_text(f"{RECEIVERS - len(counted)} receivers")
    assert not e2e_problems.console_errors, "\n".join(e2e_problems.console_errors)
    assert not e2e_problems.page_errors, "\n".join(e2e_problems.page_errors)


# Counts, in the page, the requests htmx starts while one of the other kind is still unanswered.
COUNT_OVERLAPS = """() => {
  const open = { get: 0, post: 0 };
  window.__overlaps = 0;
  const kind = (event) => (event.detail.requestConfig.verb === "post" ? "post" : "get");
  document.body.addEventListener("htmx:beforeRequest", (event) => {
    const mine = kind(event);
    if (open[mine === "post" ? "get" : "post"]) window.__overlaps += 1;
    open[mine] += 1;
  });
  document.body.addEventListener("htmx:afterRequest", (event) => { open[kind(event)] -= 1; });
  // Actions whose own answer was swapped in (not dropped for a poll's, nor left to the next poll).
  window.__actionsShown = 0;
  document.body.addEventListener("htmx:afterSwap", (event) => {
    if (kind(event) === "post" && event.detail.elt.id === "receiver-results") window.__actionsShown += 1;
  });
}"""


# Put in the page once (page.evaluate(HOLD_ANSWER)): holds a request's answer (its xhr's load,
# which htmx sets before htmx:beforeSend) until the answer of the request `isOther` picks is in.
HOLD_ANSWER = """() => {
  window.holdAnswer = (xhr, isOther) => {
    const load = xhr.onload;
    let otherAnswered = false, held = null;
    const answered = (event) => {
      if (!isOther(event)) return;
      document.removeEventListener("htmx:afterRequest", answered);
      otherAnswered = true;
      if (held) setTimeout(held, 0);
    };
    document.addEventListener("htmx:afterRequest", answered);
    xhr.onload = function () {
      const run = () => load.call(xhr);
      if (otherAnswered) run(); else held = run;
    };
  };
}"""


# Presses the button (htmx asks its confirmation) as soon as the next poll has gone out, so the
# poll's answer and the action's cross. Which one the page takes in first is up to the network;
# `late` makes it the poll's that comes second (its load is held until the action's answer is
# in), as when the poll, rendering the whole page, is the slower one.
CLICK_DURING_NEXT_POLL = """([selector, late]) => new Promise((resolve) => {
  const armed = (event) => {
    if (event.detail.elt.id !== "receiver-results" || event.detail.requestConfig.verb !== "get") return;
    document.body.removeEventListener("htmx:beforeSend", armed);
    if (late) holdAnswer(event.detail.xhr, (done) => done.detail.requestConfig.verb !== "get");
    setTimeout(() => document.querySelector(selector).click(), 0);
    resolve();
  };
  document.body.addEventListener("htmx:beforeSend", armed);
})"""


def click_during_next_poll(page: Page, selector: str, *, confirm: bool = True, late: bool = False) -> None:
    """Presses it as soon as the next poll has gone out (accepting its confirmation if it asks)."""
    if confirm:
        page.once("dialog", lambda dialog: dialog.accept())
    settled(page)
    page.evaluate(CLICK_DURING_NEXT_POLL, [selector, late])


def settled(page: Page) -> None:
    """Nothing htmx swapped in is still settling (for 20 ms a swapped-in button is not htmx's yet:
    a click would submit the page)."""
    page.wait_for_function("() => !document.querySelector('.htmx-settling, .htmx-swapping, .htmx-added')")
    page.wait_for_timeout(50)


# Starts `first` (a click, or a search typed into the receiver filter), then `second` while the
# first's request is on its way, and takes the first's answer in only after the second's: the
# first answer's target (or the form that asked) was replaced meanwhile by the second.
CROSS_ANSWERS = """([first, second]) => new Promise((resolve) => {
  const start = (step) => {
    if (step.click) { document.querySelector(step.click).click(); return; }
    const input = document.querySelector("#receiver-filter input[type=search]");
    input.value = step.search;
    input.form.requestSubmit();
  };
  const sent = [];
  const track = (event) => {
    if (event.detail.requestConfig.elt.id === "receiver-results") return;  // a poll
    sent.push(event.detail.xhr);
    if (sent.length === 1) {
      holdAnswer(sent[0], (done) => done.detail.xhr === sent[1]);
      setTimeout(() => start(second), 0);
    } else {
      document.body.removeEventListener("htmx:beforeSend", track);
      resolve();
    }
  };
  // Begins just after a poll was answered: no poll answer lands meanwhile, and what that one
  // swapped in is htmx's by then (for its 20 ms of settling a button would submit the page).
  const afterPoll = (event) => {
    if (event.detail.requestConfig.elt.id !== "receiver-results") return;
    document.removeEventListener("htmx:afterRequest", afterPoll);
    setTimeout(() => {
      document.body.addEventListener("htmx:beforeSend", track);
      start(first);
    }, 100);
  };
  document.addEventListener("htmx:afterRequest", afterPoll);
})"""


def cross_answers(page: Page, first: dict, second: dict) -> None:
    page.once("dialog", lambda dialog: dialog.accept())
    page.evaluate(CROSS_ANSWERS, [first, second])


def test_actions_while_a_poll_is_in_flight_log_no_error(
    e2e_page, e2e_problems, live_server, huey_queue, make_user, capsys
):
    page = e2e_page
    staff = make_staff(make_user, PERMISSIONS)
    students = [make_user(language="en", first_name=f"Ada{i}", last_name="Lovelace") for i in range(8)]
    message = sending_message(staff, students, sent=1)
    failed = list(message.receivers.filter(status=R.NOT_SENT).order_by("id")[:RESENDS])
    MessageReceiver.objects.filter(pk__in=[r.pk for r in failed]).update(
        status=R.FAILED, sending_failed_count=1, last_error="451 busy"
    )
    transitions.roll_up(message.pk)
    sign_in(page, live_server.url, staff, f"/messages/{message.pk}/")
    status_is(page, "sending")
    page.evaluate(COUNT_OVERLAPS)
    page.evaluate(HOLD_ANSWER)
    actions = 0

    def something_changed(i: int) -> None:
        # As every 2 s while mail goes out: the next poll is answered with the whole page, not
        # "nothing changed", so its swap and the action's overlap.
        audit.record(message, AuditEvent.Action.TEST_SENT, to=f"colleague{i}@uni.example")

    for i in range(RESENDS):
        something_changed(i)
        click_during_next_poll(page, '[data-testid="resend-receiver"]', confirm=False, late=i % 2 == 1)
        counts(page, failed=RESENDS - i - 1)
        actions += 1
    for i in range(SWITCHES):
        button, status = ("#pause-button", "paused") if i % 2 == 0 else ("#resume-button", "sending")
        expect(page.locator(button)).to_be_visible()
        something_changed(RESENDS + i)
        # Half the time the poll's answer comes first, half the time the action's.
        click_during_next_poll(page, button, late=i % 2 == 1)
        status_is(page, status)
        actions += 1
    # A search whose answer comes after a pause's (its target was replaced: it goes to the new
    # one), and a resume whose answer comes after a search's (its form was replaced with the
    # summary: its summary is swapped against the page, the newer search's receivers stay).
    cross_answers(page, {"search": "Ada1"}, {"click": "#pause-button"})
    expect(page.locator("#receiver-match-count")).to_have_attribute("data-count", "1")
    assert "q=Ada1" in page.url
    # The search's answer, swapped last, may have been rendered before the pause was done: then
    # its summary is a moment older than the pause's, and the next poll brings the pause.
    status_is(page, "paused")
    expect(page.locator("#resume-button")).to_be_visible()
    cross_answers(page, {"click": "#resume-button"}, {"search": "Lovelace Ada2"})
    status_is(page, "sending")
    # The receivers stay those of the newer search, and so does what the page polls for.
    expect(page.locator("#receiver-results tbody tr")).to_have_count(1)
    expect(page.locator("#receiver-results tbody tr")).to_contain_text("Ada2 Lovelace")
    expect(page.locator("#receiver-results")).to_have_attribute("hx-get", re.compile(r"q=Lovelace\+Ada2"))
    expect(page.locator("#resume-button")).to_have_count(0)
    expect(page.locator("#status-summary .alert-success")).to_contain_text("Resumed")
    actions += 2
    something_changed(RESENDS + SWITCHES)
    click_during_next_poll(page, "#cancel-button", late=True)
    status_is(page, "cancelled")
    actions += 1

    # No worker holds a receiver: the page polls no more, and what it shows is what happened.
    stopped_polling(page)
    page.wait_for_timeout(500)
    overlaps, shown_by_actions = page.evaluate("() => [window.__overlaps, window.__actionsShown]")
    with capsys.disabled():
        print(
            f"\nactions during polls: actions={actions} overlapping requests={overlaps} "
            f"answers of actions shown={shown_by_actions}"
        )
    message.refresh_from_db()
    assert message.status == Message.Status.CANCELLED
    assert overlaps >= actions - 2, "an action did not overlap a poll: nothing was tested"
    assert shown_by_actions == actions, "an action's answer was dropped (its result came with a later poll)"
    counts(page, total=8, sent=1, failed=0, cancelled=7)
    assert not e2e_problems.console_errors, "\n".join(e2e_problems.console_errors)
    assert not e2e_problems.page_errors, "\n".join(e2e_problems.page_errors)
    assert not e2e_problems.failed_requests, "\n".join(e2e_problems.failed_requests)
