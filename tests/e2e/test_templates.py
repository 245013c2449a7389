"""Message templates in a real Chromium: save a draft as a template, start a new message from it
(its content is in both language tabs), edit that draft without changing the template, manage
templates (edit with an error, delete). Every page is checked by axe, and no page logs a console
error or a CSP violation."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from messaging.compose import composing, message_templates
from messaging.models import Message, MessageTemplate
from tests.e2e.conftest import assert_accessible, make_staff, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PERMISSIONS = ("view_message", "compose_message", "send_message")
EN = {
    "subject": "Exam moved, {{ recipient_first_name }}",
    "body": "<p>Hello {{ recipient_name }},</p><p>The exam has moved to <strong>room 101</strong>.</p>",
}
NB = {
    "subject": "Eksamen flyttet, {{ recipient_first_name }}",
    "body": "<p>Hei {{ recipient_name }},</p><p>Eksamen er flyttet til <strong>rom 101</strong>.</p>",
}


@pytest.fixture
def staff(make_user):
    return make_staff(make_user, PERMISSIONS)


@pytest.fixture
def draft(staff, make_user) -> Message:
    message = Message(
        context_type=Message.ContextType.DEADLINE_MOVED,
        composed_content={"en": dict(EN), "nb": dict(NB)},
        virtual_message_receivers={"chosen_user_ids": [make_user(language="nb").pk], "group_ids": []},
    )
    return composing.save_draft(message, staff)


def no_problems(problems) -> None:
    assert not problems.csp_violations, "\n".join(problems.csp_violations)
    assert not problems.console_errors, "\n".join(problems.console_errors)
    assert not problems.page_errors, "\n".join(problems.page_errors)


def expect_language_content(page: Page, code: str, content: dict) -> None:
    """The tab shows the subject in its field and the body (as the editor or the textarea shows it)."""
    page.locator(f"#tab-{code}").click()
    expect(page.locator(f"#pane-{code}")).to_have_class(re.compile(r"\bshow\b"))
    expect(page.locator(f"#id_subject_{code}")).to_have_value(content["subject"])
    expect(page.locator(f"#pane-{code}")).to_contain_text("101")


def test_save_a_draft_as_template_and_start_a_new_message_from_it(
    e2e_page, e2e_problems, live_server, staff, draft, screenshot
):
    page = e2e_page
    base = live_server.url
    sign_in(page, base, staff, next_path=f"/messages/{draft.pk}/edit/")

    # Save the draft as a template: a page asks for its name and says what is copied.
    page.locator("#save-as-template-link").click()
    expect(page.locator("h1")).to_have_text("Save as template")
    expect(page.locator("#template-source-context-type")).to_have_text("Deadline moved")
    expect(page.locator("#template-source-languages")).to_have_text("English, Norwegian Bokmål")
    assert_accessible(page, "save-as-template")
    page.locator("#id_name").fill("Exam moved")
    page.locator("#save-as-template-submit").click()
    expect(page).to_have_url(re.compile(rf"/messages/{draft.pk}/edit/$"))
    expect(page.get_by_test_id("flash-success")).to_contain_text("Saved as the template “Exam moved”.")
    template = MessageTemplate.objects.get()
    assert template.composed_content == {"en": EN, "nb": NB}

    # The same name again, for the same context type: an error in place, nothing saved.
    page.locator("#save-as-template-link").click()
    page.locator("#id_name").fill("exam moved")
    page.locator("#save-as-template-submit").click()
    expect(page.locator("#id_name")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#id_name-errors")).to_contain_text("already exists")
    assert_accessible(page, "save-as-template-error")
    assert MessageTemplate.objects.count() == 1

    # The templates page lists it with its context type and languages.
    page.locator("#nav-templates").click()
    row = page.locator(f"#template-{template.pk}")
    expect(row).to_contain_text("Deadline moved")
    expect(row).to_contain_text("English, Norwegian Bokmål")
    expect(row).to_contain_text("Stella Staff")
    assert_accessible(page, "template-list")
    screenshot("templates-01-list")

    # A new message starts from it: chosen at the top of the new-message page.
    page.locator("#nav-new-message").click()
    expect(page.locator("#start-template")).to_be_visible()
    assert_accessible(page, "compose-new-with-templates")
    page.locator("#start-template").select_option(label="Exam moved")
    page.locator("#start-template-submit").click()
    expect(page).to_have_url(re.compile(r"/messages/\d+/edit/$"))
    new_draft = Message.objects.exclude(pk=draft.pk).get()
    assert page.url.endswith(f"/messages/{new_draft.pk}/edit/")
    expect(page.get_by_test_id("flash-success")).to_contain_text("A new draft was made from the template")
    expect(page.locator("#id_context_type")).to_have_value("deadline_moved")
    expect_language_content(page, "nb", NB)
    expect_language_content(page, "en", EN)
    expect(page.locator("#recipient-total")).to_have_attribute("data-count", "0")
    screenshot("templates-02-new-draft")

    # Editing the new draft leaves the template (and the first draft) as they were.
    page.locator("#id_subject_en").fill("Exam moved to room 102, {{ recipient_first_name }}")
    page.locator("#save-draft").click()
    expect(page.get_by_test_id("flash-success")).to_contain_text("Draft saved.")
    new_draft.refresh_from_db()
    assert new_draft.composed_content["en"]["subject"] == "Exam moved to room 102, {{ recipient_first_name }}"
    template.refresh_from_db()
    assert template.composed_content == {"en": EN, "nb": NB}
    draft.refresh_from_db()
    assert draft.composed_content["en"]["subject"] == EN["subject"]

    no_problems(e2e_problems)


def test_manage_templates(e2e_page, e2e_problems, live_server, staff, screenshot):
    page = e2e_page
    base = live_server.url
    template = message_templates.save_template(
        MessageTemplate(
            name="Exam moved", context_type="deadline_moved", composed_content={"en": EN, "nb": NB}
        ),
        staff,
    )
    sign_in(page, base, staff, next_path="/messages/templates/")

    # A new template, written on the same language tabs as a draft.
    page.locator("#new-template").click()
    expect(page.locator("h1")).to_have_text("New template")
    page.wait_for_load_state()  # the editor (a deferred script) has replaced the textarea, or never will
    assert_accessible(page, "template-create")
    page.locator("#id_name").fill("Feedback ready")
    page.locator("#id_context_type").select_option("feedback")
    page.locator("#id_subject_en").fill("Your feedback is ready")
    body = page.locator("#id_body_en")
    if body.is_visible():  # the plain textarea; with the rich-text editor, type into it instead
        body.fill("<p>Read it on the course page.</p>")
    else:
        page.locator("#pane-en [contenteditable=true]").first.fill("Read it on the course page.")
    page.locator("#save-template").click()
    expect(page.get_by_test_id("flash-success")).to_contain_text("Template “Feedback ready” saved.")
    created = MessageTemplate.objects.get(name="Feedback ready")
    assert created.context_type == "feedback"
    assert "Read it on the course page." in created.composed_content["en"]["body"]

    # Editing: a name taken for the context type is an error in place; nothing is saved.
    page.goto(f"{base}/messages/templates/{template.pk}/edit/")
    assert_accessible(page, "template-edit")
    page.locator("#tab-nb").click()
    expect(page.locator("#id_subject_nb")).to_have_value(NB["subject"])
    assert_accessible(page, "template-edit-nb-tab")
    page.locator("#id_name").fill("Feedback ready")
    page.locator("#id_context_type").select_option("feedback")
    page.locator("#save-template").click()
    expect(page.locator("#form-errors")).to_be_visible()
    expect(page.locator("#id_name")).to_have_attribute("aria-invalid", "true")
    assert_accessible(page, "template-edit-error")
    screenshot("templates-03-edit-error")
    template.refresh_from_db()
    assert (template.name, template.context_type) == ("Exam moved", "deadline_moved")

    # "New message" from a row of the list.
    page.goto(f"{base}/messages/templates/")
    page.locator(f"#template-{template.pk}").get_by_test_id("start-from-template").click()
    expect(page).to_have_url(re.compile(r"/messages/\d+/edit/$"))
    expect(page.locator("#id_subject_en")).to_have_value(EN["subject"])

    # Delete asks first; messages made from the template stay.
    page.goto(f"{base}/messages/templates/")
    page.locator(f"#template-{template.pk}").get_by_test_id("template-delete-link").click()
    expect(page.locator("h1")).to_have_text("Delete template")
    assert_accessible(page, "template-delete")
    page.locator("#confirm-delete").click()
    expect(page.get_by_test_id("flash-success")).to_contain_text("Template “Exam moved” deleted.")
    expect(page.locator(f"#template-{template.pk}")).to_have_count(0)
    assert Message.objects.get().composed_content["en"]["subject"] == EN["subject"]

    no_problems(e2e_problems)
