"""Issue 14's "done when", in one go: a staff member who has never written HTML composes a
formatted two-language message with an attachment, from a template, to people found by their
full names; previews it, sends a test to a colleague and sends it. A real Chromium, a real huey
consumer and a real SMTP sink: the emails that arrive have the formatting in their HTML part,
readable paragraphs in their plain part, the attachment and the chosen Reply-To.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from messaging.models import Message, MessageTemplate
from tests.conftest import wait_until
from tests.e2e.conftest import assert_accessible, make_staff, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PERMISSIONS = ("view_message", "compose_message", "send_message")
EXAMS = "Exam office <exams@uni.example>"
COLLEAGUE = "colleague@example.org"
LINK_TEXT = "See the schedule"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


@pytest.fixture
def senders(settings):
    settings.DEFAULT_FROM_EMAIL = "Messaging <noreply@uni.example>"
    settings.MESSAGING_ALLOWED_SENDERS = [EXAMS]


@pytest.fixture
def template(make_user):
    return MessageTemplate.objects.create(
        name="Exam moved",
        context_type=Message.ContextType.DEADLINE_MOVED,
        composed_content={
            "en": {"subject": "The exam has moved", "body": "<p>Template text.</p>"},
            "nb": {"subject": "Eksamen er flyttet", "body": "<p>Malltekst.</p>"},
        },
    )


def toolbar_command(page: Page, code: str, name: str):
    return page.locator(
        f'[data-rich-text-for="id_body_{code}"] [role="toolbar"] [data-editor-command="{name}"]'
    )


def next_frame(page: Page) -> None:
    """Let the editor take in the selection the last key made (browsers report selection changes
    asynchronously, and Tiptap focuses on the next frame), as it has long before a person's
    next key; Playwright types faster than that."""
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")


def write_formatted_body(page: Page, code: str, greeting: str, bold: str, items: tuple[str, str]) -> None:
    """Type as anyone would: a greeting with a placeholder token, a paragraph with a bold and a
    linked word, and a bulleted list, using the toolbar only."""
    editor = page.locator(f"#id_body_{code}-editor")
    editor.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.press("Delete")
    page.keyboard.type(f"{greeting} ")
    page.locator(f"#pane-{code} [data-insert-placeholder='recipient_first_name']").click()
    editor.click()
    page.keyboard.press("ControlOrMeta+End")
    page.keyboard.type(",")
    page.keyboard.press("Enter")
    toolbar_command(page, code, "bold").click()
    page.keyboard.type(bold)
    toolbar_command(page, code, "bold").click()
    page.keyboard.type(f" {LINK_TEXT}")
    for _ in LINK_TEXT:  # select the words to link
        page.keyboard.press("Shift+ArrowLeft")
    toolbar_command(page, code, "link").click()
    url = page.locator(f"#id_body_{code}-link-url")
    url.fill("https://uni.example/exams")
    url.press("Enter")
    expect(editor).to_be_focused()
    next_frame(page)
    page.keyboard.press("ArrowRight")  # past the link, at the end of the paragraph
    next_frame(page)
    page.keyboard.press("Enter")
    toolbar_command(page, code, "bullet-list").click()
    page.keyboard.type(items[0])
    page.keyboard.press("Enter")
    page.keyboard.type(items[1])


def show_tab(page: Page, code: str) -> None:
    page.locator(f"#tab-{code}").click()
    expect(page.locator(f"#pane-{code}")).to_have_css("opacity", "1")


def add_person(page: Page, query: str, user) -> None:
    search = page.locator("#recipient-search")
    search.fill(query)
    with page.expect_response(re.compile(r"/messages/recipients/summary/")):
        page.get_by_test_id(f"search-user-{user.pk}").click()
    search.fill("")


def parts(sunk) -> dict:
    mail = sunk.message
    found = {"mail": mail, "attachments": []}
    for part in mail.walk():
        if part.get_content_disposition() == "attachment":
            found["attachments"].append((part.get_filename(), part.get_content_type(), part.get_content()))
        elif part.get_content_type() in ("text/plain", "text/html"):
            found[part.get_content_type()] = part.get_content()
    return found


def test_a_formatted_two_language_message_from_a_template_with_an_attachment(
    e2e_page,
    e2e_problems,
    screenshot,
    live_server,
    make_user,
    smtp_mailer,
    huey_consumer,
    senders,
    template,
    tmp_path,
):
    page = e2e_page
    staff = make_staff(make_user, PERMISSIONS)
    kari = make_user(language="nb", username="kno1", first_name="Kari", last_name="Nordmann")
    ada = make_user(language="en", username="alo7", first_name="Ada", last_name="Lovelace")
    make_user(
        language="en", first_name="Kari", last_name="Hansen"
    )  # found by "kari" alone, not by the full name
    sign_in(page, live_server.url, staff, "/messages/new/")

    # 1. Start from the template: both languages are filled in.
    page.locator("#start-template").select_option(str(template.pk))
    page.locator("#start-template-submit").click()
    expect(page).to_have_url(re.compile(r"/messages/\d+/edit/$"))
    draft = Message.objects.latest("pk")
    expect(page.locator("#id_subject_en")).to_have_value("The exam has moved")
    expect(page.locator("#id_body_en-editor")).to_contain_text("Template text.")

    # 2. Recipients by their full names, in any word order.
    add_person(page, "Nordmann Kari", kari)
    add_person(page, "ada lovelace", ada)
    expect(page.locator("#recipient-total")).to_have_attribute("data-count", "2")

    # 3. A formatted body in each language, written with the toolbar; sender, Reply-To, a file.
    write_formatted_body(page, "en", "Hello", "Room 101.", ("Bring your ID", "Arrive early"))
    show_tab(page, "nb")
    write_formatted_body(page, "nb", "Hei", "Rom 101.", ("Ta med legitimasjon", "Kom tidlig"))
    page.locator("#id_from_email").select_option(EXAMS)
    page.get_by_label(f"Replies go to me ({staff.email})").check()
    schedule = tmp_path / "exam-schedule.pdf"
    schedule.write_bytes(PDF)
    page.get_by_label("Add files").set_input_files(str(schedule))
    screenshot("journey-01-compose")
    page.locator("#save-and-preview").click()

    # 4. The preview: both languages formatted, the sender, Reply-To and the attachment.
    expect(page).to_have_url(re.compile(rf"/messages/{draft.pk}/preview/"))
    expect(page.get_by_test_id("preview-from")).to_have_text(EXAMS)
    expect(page.get_by_test_id("preview-reply-to")).to_have_text(staff.email)
    expect(page.get_by_test_id("preview-attachment")).to_contain_text("exam-schedule.pdf")
    expect(page.get_by_test_id("preview-subject-nb")).to_have_text("Eksamen er flyttet")
    expect(page.get_by_test_id("preview-plain-en")).to_contain_text("**Room 101.**")
    assert_accessible(page, "preview of the journey's draft")
    draft.refresh_from_db()
    body_en = draft.composed_content["en"]["body"]
    assert body_en == (
        "<p>Hello {{ recipient_first_name }},</p>"
        '<p><strong>Room 101.</strong> <a href="https://uni.example/exams" rel="noopener noreferrer">'
        "See the schedule</a></p><ul><li><p>Bring your ID</p></li><li><p>Arrive early</p></li></ul>"
    )

    # 5. A test to a colleague, in Norwegian.
    page.locator("#id_to").fill(COLLEAGUE)
    page.locator("#id_language").select_option("nb")
    page.locator("#send-test-button").click()
    expect(page.get_by_test_id("test-sent")).to_be_visible()
    (test,) = [m for m in smtp_mailer.received if COLLEAGUE in m.rcpt_tos]
    test_parts = parts(test)
    assert test_parts["mail"]["Subject"] == "Eksamen er flyttet"
    assert [name for name, _type, _data in test_parts["attachments"]] == ["exam-schedule.pdf"]

    # 6. Send; the real consumer delivers to both.
    page.locator("#send-link, a[href$='/send/']").first.click()
    expect(page).to_have_url(re.compile(rf"/messages/{draft.pk}/send/"))
    page.locator("#confirm-send").click()
    expect(page).to_have_url(re.compile(rf"/messages/{draft.pk}/$"))
    wait_until(
        lambda: {kari.email, ada.email} <= {to for m in smtp_mailer.received for to in m.rcpt_tos},
        timeout=60,
        message="both students' emails at the sink",
    )
    screenshot("journey-02-sent")

    for user, language in ((ada, "en"), (kari, "nb")):
        (received,) = [m for m in smtp_mailer.received if user.email in m.rcpt_tos]
        got = parts(received)
        mail = got["mail"]
        assert mail["From"] == EXAMS
        assert mail["Reply-To"] == staff.email
        assert got["attachments"] == [("exam-schedule.pdf", "application/pdf", PDF)]
        html, plain = got["text/html"], got["text/plain"].replace("\r\n", "\n")
        first_name = user.first_name
        if language == "en":
            assert f"<p>Hello {first_name},</p>" in html
            assert "<strong>Room 101.</strong>" in html
            assert "<li><p>Bring your ID</p></li>" in html
            paragraphs = [p.strip() for p in plain.split("\n\n") if p.strip()]
            assert paragraphs[0] == f"Hello {first_name},"
            assert paragraphs[1].startswith("**Room 101.** [See the schedule](https://uni.example/exams)")
            assert paragraphs[2:] == ["* Bring your ID", "* Arrive early"]
        else:
            assert f"<p>Hei {first_name},</p>" in html
            assert "<strong>Rom 101.</strong>" in html
            assert f"Hei {first_name}," in plain.split("\n\n")[0]
    assert e2e_problems.page_errors == []
    assert e2e_problems.csp_violations == []
    assert e2e_problems.console_errors == []
