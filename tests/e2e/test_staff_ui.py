"""The staff UI end to end, in a real Chromium (SPEC §3).

A staff member signs in, composes a two-language draft for a group and some users (a few of
whose addresses the SMTP sink refuses: 451 for @tempfail.example, 550 for @bounce.example),
previews both languages, sends it, watches the live status table reach its final counts without
the page reloading, filters to the failed receivers, and, once the sink accepts them, resends
them (one from its row, the rest with "Resend all failed") and sees every receiver sent.

Everything is real: pytest-django's live_server, a `manage.py run_huey` consumer process on the
test database, and an SMTP sink on loopback. Screenshots of every step go to var/screenshots/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from playwright.sync_api import Page, expect

from messaging.models import Message, MessageReceiver
from tests.conftest import wait_until
from tests.e2e.conftest import make_staff, sign_in, write_body

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# What the sink answers (messaging.operations.mailsink). Set on each test's sink rather than relying on the
# module default, which is one dict shared by every sink (a test that mutates it leaks into others).
SINK_REFUSALS = {
    "@tempfail.example": "451 4.3.0 Try again later",
    "@bounce.example": "550 5.1.1 No such user here",
}
PERMISSIONS = ("view_message", "compose_message", "send_message", "resend_message")
EN_SUBJECT = "Exam moved, {{ recipient_first_name }}"
EN_BODY = "<p>Hello {{ recipient_name }},</p><p>The exam has moved to <strong>room 101</strong>.</p>"
NB_SUBJECT = "Eksamen flyttet, {{ recipient_first_name }}"
NB_BODY = "<p>Hei {{ recipient_name }},</p><p>Eksamen er flyttet til <strong>rom 101</strong>.</p>"


@dataclass
class Cast:
    staff: object
    group: Group
    group_members: list
    direct: list  # chosen one by one in the recipient search
    tempfail: list  # 451 from the sink
    bounce: list  # 550 from the sink

    @property
    def everyone(self) -> list:
        return [*self.group_members, *self.direct]

    @property
    def refused(self) -> list:
        return [*self.tempfail, *self.bounce]


@pytest.fixture
def cast(make_user, smtp_sink) -> Cast:
    """Recipients: a group of four (one refused by the sink) and three users chosen directly (two refused)."""
    smtp_sink.handler.refusals = dict(SINK_REFUSALS)
    staff = make_staff(make_user, PERMISSIONS)
    group = Group.objects.create(name="Course INF1000 students")
    en_ok = [make_user(language="en", first_name=f"Ada{i}", last_name="Lovelace") for i in range(2)]
    nb_ok = [make_user(language="nb", first_name=f"Ola{i}", last_name="Nordmann") for i in range(2)]
    tempfail_nb = make_user(
        language="nb", first_name="Kari", last_name="Utsatt", email="kari@tempfail.example"
    )
    bounce_en = make_user(language="en", first_name="Bob", last_name="Bounce", email="bob@bounce.example")
    group_members = [*en_ok, nb_ok[0], tempfail_nb]
    group.user_set.add(*group_members)
    tempfail_en = make_user(
        language="en", first_name="Tom", last_name="Tempfail", email="tom@tempfail.example"
    )
    direct = [nb_ok[1], tempfail_en, bounce_en]
    return Cast(
        staff=staff,
        group=group,
        group_members=group_members,
        direct=direct,
        tempfail=[tempfail_nb, tempfail_en],
        bounce=[bounce_en],
    )


# Steps ---------------------------------------------------------------------------------------------


def add_recipient(page: Page, query: str, testid: str, chip: str) -> None:
    search = page.locator("#recipient-search")
    search.fill(query)
    # Adding a recipient refreshes the live summary (htmx); the rest of the form must survive.
    with page.expect_response(re.compile(r"/messages/recipients/summary/")):
        page.get_by_test_id(testid).click()
    expect(
        page.locator("#compose-form #id_subject_en"),
        "the recipient summary refresh replaced the compose form",
    ).to_be_attached()
    expect(page.locator(f'#chosen-recipients [data-recipient="{chip}"]')).to_be_visible()
    search.fill("")


def show_language_tab(page: Page, code: str) -> None:
    page.locator(f"#tab-{code}").click()
    expect(page.locator(f"#tab-{code}")).to_have_class(re.compile(r"\bactive\b"))
    expect(page.locator(f"#pane-{code}")).to_have_class(re.compile(r"\bshow\b"))
    # Bootstrap fades the pane in: wait for the end of the transition.
    expect(page.locator(f"#pane-{code}")).to_have_css("opacity", "1")


def counts(page: Page, **expected: int) -> None:
    for status, value in expected.items():
        expect(page.locator(f"#count-{status}")).to_have_text(str(value))


def receiver_rows(page: Page):
    return page.locator("#receiver-table tbody tr[data-receiver-id]")


def receiver_row(page: Page, user):
    return page.locator(f'#receiver-table tbody tr[data-receiver-id="{receiver_of(user).pk}"]')


def receiver_of(user) -> MessageReceiver:
    return MessageReceiver.objects.get(user=user)


def sent_to(sink, user) -> bool:
    return any(user.email in mail.rcpt_tos for mail in sink.received)


def page_marker(page: Page) -> object:
    return page.evaluate("() => window.__e2eMarker")


# The scenario --------------------------------------------------------------------------------------


def test_compose_preview_send_watch_filter_and_resend(
    e2e_page, e2e_problems, screenshot, live_server, huey_consumer, smtp_sink, cast
):
    page = e2e_page
    total = len(cast.everyone)
    refused = len(cast.refused)

    # 1. Sign in (the login redirect first).
    sign_in(page, live_server.url, cast.staff, screenshot=screenshot)

    # 2. Compose: context type, both languages, a group and three users.
    page.locator("#nav-new-message").click()
    expect(page.locator("#compose-heading")).to_have_text("New message")
    page.locator("#id_context_type").select_option("deadline_moved")
    page.locator("#id_subject_en").fill(EN_SUBJECT)
    write_body(page, "en", EN_BODY)
    show_language_tab(page, "nb")
    expect(page.get_by_test_id("fallback-badge-nb")).to_be_visible()
    page.locator("#id_subject_nb").fill(NB_SUBJECT)
    write_body(page, "nb", NB_BODY)
    expect(page.get_by_test_id("fallback-badge-nb")).to_be_hidden()  # nb has its own text now

    add_recipient(page, "INF1000", f"search-group-{cast.group.pk}", f"groups-{cast.group.pk}")
    for user in cast.direct:
        add_recipient(page, user.last_name, f"search-user-{user.pk}", f"users-{user.pk}")
    # The live summary counts distinct users (nobody is counted twice) per language.
    expect(page.locator("#recipient-total")).to_have_attribute("data-count", str(total))
    languages = page.locator("#recipient-languages")
    en_count = sum(1 for u in cast.everyone if u.messaging_profile.languagecode == "en")
    expect(languages.locator('[data-language="en"]')).to_have_attribute("data-count", str(en_count))
    expect(languages.locator('[data-language="nb"]')).to_have_attribute("data-count", str(total - en_count))
    expect(page.locator("#recipients-without-address")).to_have_count(0)
    show_language_tab(page, "en")
    screenshot("02-compose")

    page.locator("#save-and-preview").click()

    # 3. Preview: both languages side by side, personalised for a real sample recipient.
    expect(page).to_have_url(re.compile(r"/messages/\d+/preview/"))
    message = Message.objects.get()
    assert message.is_draft
    assert set(message.composed_content) == {"en", "nb"}
    for code in ("en", "nb"):
        expect(page.locator(f"#preview-{code}")).to_be_visible()
        expect(page.get_by_test_id(f"fallback-warning-{code}")).to_have_count(0)
        expect(page.get_by_test_id(f"preview-error-{code}")).to_have_count(0)
    en_sample = page.locator("#sample-en option:checked")
    nb_sample = page.locator("#sample-nb option:checked")
    expect(en_sample).to_have_count(1)
    expect(nb_sample).to_have_count(1)
    en_user = get_user_model().objects.get(pk=en_sample.get_attribute("value"))
    nb_user = get_user_model().objects.get(pk=nb_sample.get_attribute("value"))
    assert en_user.messaging_profile.languagecode == "en"
    assert nb_user.messaging_profile.languagecode == "nb"
    expect(page.get_by_test_id("preview-subject-en")).to_have_text(f"Exam moved, {en_user.first_name}")
    expect(page.get_by_test_id("preview-subject-nb")).to_have_text(f"Eksamen flyttet, {nb_user.first_name}")
    expect(page.get_by_test_id("preview-address-en")).to_have_text(en_user.email)
    expect(page.get_by_test_id("preview-plain-en")).to_contain_text(f"Hello {en_user.get_full_name()},")
    expect(page.get_by_test_id("preview-plain-nb")).to_contain_text(f"Hei {nb_user.get_full_name()},")
    expect(page.get_by_test_id("preview-plain-nb")).to_contain_text("rom 101")
    en_frame = page.frame_locator('[data-testid="preview-html-en"]')
    expect(en_frame.locator("strong")).to_have_text("room 101")
    nb_frame = page.frame_locator('[data-testid="preview-html-nb"]')
    expect(nb_frame.locator("strong")).to_have_text("rom 101")
    # Another sample recipient re-renders the column in place.
    other_en = next(u for u in cast.everyone if u.messaging_profile.languagecode == "en" and u != en_user)
    page.locator("#sample-en").select_option(str(other_en.pk))
    expect(page.get_by_test_id("preview-subject-en")).to_have_text(f"Exam moved, {other_en.first_name}")
    screenshot("03-preview")

    # 4. Confirm: the number of receivers is shown before anything is sent.
    page.locator("#send-link").click()
    expect(page).to_have_url(re.compile(rf"/messages/{message.pk}/send/"))
    expect(page.locator("#send-count")).to_have_attribute("data-count", str(total))
    expect(page.locator("#confirm-send")).to_be_enabled()
    expect(page.locator("#confirm-send")).to_contain_text(f"Send to {total} receivers")
    screenshot("04-confirm")
    page.locator("#confirm-send").click()

    # 5. The status page updates itself until the counts are final; the page never reloads.
    expect(page).to_have_url(re.compile(rf"/messages/{message.pk}/$"))
    page.evaluate("() => { window.__e2eMarker = 1; }")
    expect(page.locator("#message-status")).to_have_attribute("data-status", "error")
    counts(page, total=total, sent=total - refused, failed=refused, error=0, not_sent=0)
    expect(receiver_rows(page)).to_have_count(total)
    # 451s are retried by the engine: the page keeps a slow refresh and says when it updated.
    expect(page.locator("#receiver-results")).to_have_attribute("data-polling", "true")
    expect(page.locator("#updated-at")).to_contain_text("retries are pending")
    expect(page.locator("#message-status")).to_have_attribute("data-label", "sent_partly")
    expect(page.locator("#message-status")).to_contain_text(f"Sent, {refused} not delivered")
    expect(page.locator("#failure-groups li")).to_have_count(2)  # 451 and 550
    expect(page.locator("#failure-groups")).to_contain_text("451")
    expect(page.locator("#failure-groups")).to_contain_text("550")
    expect(page.locator("#resend-all-failed")).to_have_attribute("data-count", str(refused))
    assert page_marker(page) == 1, "the status page reloaded instead of updating in place"
    screenshot("05-status-final")
    assert len(smtp_sink.received) == total - refused
    assert {r.status for r in MessageReceiver.objects.filter(user__in=cast.refused)} == {"failed"}

    # 6. Filter to the failed receivers (in place, the URL follows the filter).
    page.locator("#id_status").select_option("failed")
    expect(page).to_have_url(re.compile(r"[?&]status=failed"))
    expect(receiver_rows(page)).to_have_count(refused)
    for user in cast.refused:
        row = receiver_row(page, user)
        expect(row).to_have_attribute("data-status", "failed")
        expect(row).to_contain_text(user.email)
    expect(receiver_row(page, cast.bounce[0])).to_contain_text("550")
    expect(receiver_row(page, cast.bounce[0]).locator("[data-label]")).to_have_attribute(
        "data-label", "failed_permanently"
    )
    expect(receiver_row(page, cast.tempfail[0])).to_contain_text("451")
    tempfailed = receiver_row(page, cast.tempfail[0])
    expect(tempfailed.locator("[data-label]")).to_have_attribute("data-label", "retrying")
    assert page_marker(page) == 1
    screenshot("06-filtered-failed")

    # 7. The sink accepts the tempfail addresses now (bounce.example still refused): resend all
    #    failed at once, and watch it, in place, come back with one failure left.
    #    The confirmation says what will happen; by default the 550s (permanent) stay as they are.
    smtp_sink.handler.refusals = {"@bounce.example": SINK_REFUSALS["@bounce.example"]}
    page.locator("#resend-all-failed").click()
    expect(page.locator("#plan-can-succeed")).to_have_attribute("data-count", str(len(cast.tempfail)))
    expect(page.locator("#plan-permanent")).to_have_attribute("data-count", str(len(cast.bounce)))
    expect(page.locator("#include-permanent")).not_to_be_checked()
    expect(page.locator("#confirm-resend")).to_contain_text(f"Resend {len(cast.tempfail)} receiver")
    screenshot("07a-resend-confirmation")
    page.locator("#confirm-resend").click()
    expect(page).to_have_url(re.compile(rf"/messages/{message.pk}/$"))
    page.evaluate("() => { window.__e2eMarker = 2; }")
    expect(page.locator("#message-status")).to_have_attribute("data-status", "error")
    counts(page, total=total, sent=total - len(cast.bounce), failed=len(cast.bounce), error=0, not_sent=0)
    page.locator("#id_status").select_option("failed")
    expect(receiver_rows(page)).to_have_count(len(cast.bounce))
    bounced = receiver_row(page, cast.bounce[0])
    expect(bounced).to_have_attribute("data-status", "failed")
    expect(bounced.locator("td").nth(4)).to_have_text("0 / 1")  # left alone: not tried again
    expect(page.locator("#resend-all-failed")).to_have_attribute("data-count", str(len(cast.bounce)))
    expect(page.locator("#audit-trail [data-action=resent_all]")).to_have_count(1)
    assert all(sent_to(smtp_sink, user) for user in cast.tempfail)

    # 8. The sink accepts everyone: resend the last one from its row; the row, the counts and
    #    the message status follow live, still without a reload.
    smtp_sink.handler.refusals = {}
    page.once("dialog", lambda dialog: dialog.accept())  # "This failed permanently…"
    bounced.get_by_test_id("resend-receiver").click()
    expect(page.locator("#message-status")).to_have_attribute("data-status", "sent")
    expect(receiver_rows(page)).to_have_count(0)  # still filtered to failed: none left
    counts(page, total=total, sent=total, failed=0, error=0, not_sent=0)
    expect(page.locator("#resend-all-failed")).to_have_count(0)
    expect(page.locator("#no-failures")).to_be_visible()
    expect(page.locator("#audit-trail [data-action=resent]")).to_have_count(1)
    page.locator("#id_status").select_option("sent")
    expect(receiver_rows(page)).to_have_count(total)
    for user in cast.refused:
        expect(receiver_row(page, user)).to_have_attribute("data-status", "sent")
    assert page_marker(page) == 2, "resending one receiver reloaded the page"
    screenshot("07-resent")

    message.refresh_from_db()
    assert message.status == Message.Status.SENT
    receivers_mail = [m for m in smtp_sink.received if cast.staff.email not in m.rcpt_tos]
    assert len(receivers_mail) == total
    assert all(sent_to(smtp_sink, user) for user in cast.everyone)
    # After step 7 the send had finished with a permanent failure and no retry pending: its
    # sender was told, once (the resend that fixed it afterwards is not a new failure).
    wait_until(lambda: sent_to(smtp_sink, cast.staff), timeout=30, message="the report to the sender")
    (report,) = [m for m in smtp_sink.received if cast.staff.email in m.rcpt_tos]
    assert report.message["Subject"] == "Sent with failures: Exam moved, [recipient_first_name]"
    subjects = {mail.message["Subject"] for mail in smtp_sink.received}
    assert f"Eksamen flyttet, {cast.tempfail[0].first_name}" in subjects  # nb
    assert f"Exam moved, {cast.bounce[0].first_name}" in subjects  # en
    assert not e2e_problems.page_errors, e2e_problems.page_errors


def test_no_csp_violations_or_page_errors(
    e2e_page, e2e_problems, live_server, huey_consumer, smtp_sink, cast
):
    """Every page of the scenario and its htmx requests run clean under the strict CSP: no
    violation reported in the console and no uncaught exception in the page."""
    page = e2e_page
    base = live_server.url
    sign_in(page, base, cast.staff)

    # Compose page and its htmx endpoints: recipient search, chip, live summary.
    page.locator("#nav-new-message").click()
    show_language_tab(page, "nb")
    page.locator("#id_subject_nb").fill(NB_SUBJECT)
    page.locator("#recipient-search").fill("INF1000")
    page.get_by_test_id(f"search-group-{cast.group.pk}").click()
    expect(page.locator("#recipient-total")).to_have_attribute("data-count", str(len(cast.group_members)))

    # A draft made directly, so this test does not depend on the compose form's details.
    message = Message.objects.create(
        created_by=cast.staff,
        context_type=Message.ContextType.DEADLINE_MOVED,
        composed_content={
            "en": {"subject": EN_SUBJECT, "body": EN_BODY},
            "nb": {"subject": NB_SUBJECT, "body": NB_BODY},
        },
        virtual_message_receivers={
            "chosen_user_ids": [u.pk for u in cast.direct],
            "group_ids": [cast.group.pk],
        },
    )
    page.goto(f"{base}/messages/{message.pk}/preview/")
    expect(page.get_by_test_id("preview-subject-nb")).to_be_visible()
    page.locator("#sample-nb").select_option(str(cast.tempfail[0].pk))  # htmx re-render
    expect(page.get_by_test_id("preview-subject-nb")).to_contain_text(cast.tempfail[0].first_name)
    page.locator("#send-link").click()
    page.locator("#confirm-send").click()
    expect(page).to_have_url(re.compile(rf"/messages/{message.pk}/$"))

    def finished() -> bool:
        message.refresh_from_db()
        return message.status in {Message.Status.SENT, Message.Status.ERROR}

    wait_until(finished, timeout=30, message="the consumer to finish the message")
    page.goto(f"{base}/messages/{message.pk}/")
    expect(page.locator("#message-status")).to_have_attribute("data-status", "error")
    page.locator("#id_status").select_option("failed")  # htmx filter
    expect(receiver_rows(page)).to_have_count(len(cast.refused))
    page.locator("#resend-all-failed").click()
    page.locator("#include-permanent").check()
    page.locator("#confirm-resend").click()
    expect(page.locator("#message-status")).to_have_attribute("data-status", "error")
    page.get_by_test_id("receiver-detail-link").first.click()
    expect(page).to_have_url(re.compile(r"/messages/receivers/\d+/$"))
    page.locator("#nav-messages").click()
    expect(page.locator(f"#message-{message.pk}")).to_be_visible()
    page.locator("#id_status").select_option("error")  # htmx filter on the list
    expect(page).to_have_url(re.compile(r"status=error"))
    page.wait_for_load_state("networkidle")

    assert not e2e_problems.csp_violations, "\n".join(e2e_problems.csp_violations)
    assert not e2e_problems.page_errors, "\n".join(e2e_problems.page_errors)
