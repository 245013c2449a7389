"""The compose form as a person uses it, in a real Chromium (issue 14): recipients found by full
name in any word order, "N more" when more match, a group's members seen before sending, an error
only on the Norwegian tab shown and focused, leaving with unsaved changes asks first, and the
context type explained. No console error or CSP violation anywhere on the way.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from playwright.sync_api import Page, expect

from messaging.models import Message
from messaging.preferences import context_types
from messaging.tracking.selectors import SEARCH_LIMIT
from tests.e2e.conftest import assert_accessible, composed_draft, make_staff, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def staff(make_user):
    return make_staff(make_user, ["view_message", "compose_message", "send_message"])


@pytest.fixture
def sam(make_user):
    return make_user(language="en", username="s.staff", first_name="Sam", last_name="Staff")


@pytest.fixture
def course(make_user, sam):
    """A group of 3 active members (one without an address) and one who left."""
    group = Group.objects.create(name="INF1000 Spring 2026")
    kari = make_user(language="nb", username="kari.n", first_name="Kari", last_name="Nordmann")
    nils = make_user(language="nb", username="nils.n", first_name="Nils", last_name="Noaddress", email="")
    gone = make_user(language="en", username="gone", first_name="Gone", last_name="Away", is_active=False)
    group.user_set.add(sam, kari, nils, gone)
    return group


def clean(problems) -> None:
    assert not problems.csp_violations, "\n".join(problems.csp_violations)
    assert not problems.console_errors, "\n".join(problems.console_errors)
    assert not problems.page_errors, "\n".join(problems.page_errors)


def show_tab(page: Page, code: str) -> None:
    page.locator(f"#tab-{code}").click()
    expect(page.locator(f"#pane-{code}")).to_have_css("opacity", "1")


# Recipients ----------------------------------------------------------------------------------------


def test_full_name_search_in_any_order_adds_the_person(
    e2e_page, e2e_problems, live_server, make_user, staff, sam
):
    page = e2e_page
    make_user(username="samuel", first_name="Samuel", last_name="Berg")
    sign_in(page, live_server.url, staff, next_path=reverse("messaging:message_create"))

    search = page.locator("#recipient-search")
    search.fill("Staff Sam")
    result = page.get_by_test_id(f"search-user-{sam.pk}")
    expect(result).to_contain_text("Sam Staff")
    expect(result).to_contain_text("s.staff")
    expect(result).to_contain_text(sam.email)
    expect(page.locator("#recipient-search-results [data-add-recipient=users]")).to_have_count(1)
    with page.expect_response(re.compile(r"/messages/recipients/summary/")):
        result.click()
    expect(page.locator(f'#chosen-recipients [data-recipient="users-{sam.pk}"]')).to_contain_text("Sam Staff")
    expect(page.locator("#recipient-total")).to_have_attribute("data-count", "1")
    clean(e2e_problems)


def test_more_matches_than_shown_say_how_many(e2e_page, e2e_problems, live_server, make_user, staff):
    page = e2e_page
    for n in range(SEARCH_LIMIT + 3):
        make_user(first_name="Student", last_name=f"Number{n:02}")
    sign_in(page, live_server.url, staff, next_path=reverse("messaging:message_create"))

    page.locator("#recipient-search").fill("student number")
    more = page.locator("#recipient-search-more-users")
    expect(more).to_have_text("3 more users match; refine your search.")
    expect(page.locator("#recipient-search-results [data-add-recipient=users]")).to_have_count(SEARCH_LIMIT)
    # Refined, everyone it finds is listed.
    page.locator("#recipient-search").fill("student number12")
    expect(page.locator("#recipient-search-results [data-add-recipient=users]")).to_have_count(1)
    expect(more).to_have_count(0)
    clean(e2e_problems)


def test_a_group_is_expanded_to_see_its_members_before_sending(
    e2e_page, e2e_problems, live_server, staff, sam, course
):
    page = e2e_page
    sign_in(page, live_server.url, staff, next_path=reverse("messaging:message_create"))

    # In the search results.
    page.locator("#recipient-search").fill("spring inf1000")
    expect(page.get_by_test_id(f"search-group-{course.pk}")).to_contain_text("(3 members)")
    toggle = page.get_by_test_id(f"search-group-members-{course.pk}")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(toggle).to_have_accessible_name("Members of INF1000 Spring 2026")
    panel = page.locator(f"#search-members-{course.pk}")
    expect(panel).to_be_hidden()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(panel.locator("[data-member]")).to_have_count(3)
    expect(panel).to_contain_text("Sam Staff")
    expect(panel).to_contain_text("Kari Nordmann")
    expect(panel.get_by_test_id("member-without-address")).to_have_count(1)
    expect(panel).not_to_contain_text("Gone Away")
    toggle.click()
    expect(panel).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")

    # Chosen: the chip has the same disclosure; removing the chip removes its members too.
    with page.expect_response(re.compile(r"/messages/recipients/summary/")):
        page.get_by_test_id(f"search-group-{course.pk}").click()
    page.locator("#recipient-search").fill("")
    chip = page.locator(f'#chosen-recipients [data-recipient="groups-{course.pk}"]')
    chip_toggle = page.get_by_test_id(f"chip-members-groups-{course.pk}")
    chip_panel = page.locator(f"#chosen-members-groups-{course.pk}")
    expect(chip_toggle).to_have_attribute("aria-expanded", "false")
    expect(chip_toggle).to_have_accessible_name("Members of INF1000 Spring 2026")
    chip_toggle.click()
    expect(chip_toggle).to_have_attribute("aria-expanded", "true")
    expect(chip_panel.locator("[data-member]")).to_have_count(3)
    assert_accessible(page, "compose with a group's members shown")
    chip.locator("[data-remove-recipient]").click()
    expect(chip).to_have_count(0)
    expect(chip_panel).to_have_count(0)
    expect(page.locator("#recipient-total")).to_have_attribute("data-count", "0")
    clean(e2e_problems)


def test_a_saved_group_chip_can_be_expanded_after_reload(e2e_page, e2e_problems, live_server, staff, course):
    page = e2e_page
    draft = composed_draft(staff, [], "Exam moved", "<p>Room 101.</p>")
    draft.virtual_message_receivers = {"chosen_user_ids": [], "group_ids": [course.pk]}
    draft.save()
    sign_in(page, live_server.url, staff, next_path=reverse("messaging:message_edit", args=[draft.pk]))
    page.get_by_test_id(f"chip-members-groups-{course.pk}").click()
    expect(page.locator(f"#chosen-members-groups-{course.pk} [data-member]")).to_have_count(3)
    clean(e2e_problems)


# Errors --------------------------------------------------------------------------------------------


def test_an_error_only_on_the_nb_tab_is_shown_and_focused(e2e_page, e2e_problems, live_server, staff, sam):
    page = e2e_page
    draft = composed_draft(staff, [sam], "Exam moved", "<p>Room 101.</p>")
    sign_in(page, live_server.url, staff, next_path=reverse("messaging:message_edit", args=[draft.pk]))

    show_tab(page, "nb")
    page.locator("#id_subject_nb").fill("Eksamen flyttet")  # a subject without a body
    show_tab(page, "en")
    page.locator("#save-draft").click()

    expect(page.locator("#form-errors")).to_be_visible()
    expect(page.locator("#tab-nb")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#pane-nb")).to_be_visible()
    expect(page.locator("#pane-en")).to_be_hidden()
    expect(page.locator("#tab-nb")).to_have_accessible_name(re.compile(r"has errors"))
    expect(page.locator("#tab-en")).not_to_have_accessible_name(re.compile(r"has errors"))
    body = page.locator("#id_body_nb")
    expect(body).to_have_attribute("aria-invalid", "true")
    focused_on_body = """() => {
        const body = document.getElementById("id_body_nb");
        const active = document.activeElement;
        return active === body || (active.isContentEditable && body.parentElement.contains(active));
    }"""
    page.wait_for_function(focused_on_body)
    expect(page.locator("#id_subject_nb")).to_have_value("Eksamen flyttet")  # nothing lost
    draft.refresh_from_db()
    assert "nb" not in draft.composed_content  # nothing saved
    assert_accessible(page, "compose with an error on the nb tab")

    # Fixed (the subject cleared), it saves: no question on the way to the saved draft.
    page.locator("#id_subject_nb").fill("")
    page.locator("#save-draft").click()
    expect(page.get_by_test_id("flash-success")).to_be_visible()
    expect(page.locator("#form-errors")).to_have_count(0)
    clean(e2e_problems)


def test_an_invalid_context_type_is_focused(e2e_page, e2e_problems, live_server, staff, sam):
    """Errors outside the tabs only: the first invalid field takes the focus; the tab stays."""
    page = e2e_page
    draft = composed_draft(staff, [sam], "Exam moved", "<p>Room 101.</p>")
    sign_in(page, live_server.url, staff, next_path=reverse("messaging:message_edit", args=[draft.pk]))
    # A value no option has, as a hand-made post would send.
    page.locator("#id_context_type").evaluate("(select) => { select.options[0].value = 'no-such-type'; }")
    page.locator("#id_context_type").select_option(index=0)
    page.locator("#save-draft").click()
    select = page.locator("#id_context_type")
    expect(select).to_have_attribute("aria-invalid", "true")
    expect(select).to_be_focused()
    expect(page.locator("#tab-en")).to_have_attribute("aria-selected", "true")
    clean(e2e_problems)


# Leaving with unsaved changes ----------------------------------------------------------------------


class Dialogs:
    """Every dialog the page opens, answered in turn as told (accept or stay)."""

    def __init__(self, page: Page):
        self.page = page
        self.seen: list[str] = []
        self.answers: list[bool] = []
        page.on("dialog", self.handle)

    def handle(self, dialog) -> None:
        self.seen.append(dialog.type)
        if self.answers.pop(0) if self.answers else True:
            dialog.accept()
        else:
            dialog.dismiss()

    def wait_for(self, count: int) -> None:
        for _ in range(100):
            if len(self.seen) >= count:
                break
            self.page.wait_for_timeout(50)
        assert self.seen == ["beforeunload"] * count


def test_leaving_with_unsaved_changes_asks_first(e2e_page, e2e_problems, live_server, staff, sam):
    page = e2e_page
    draft = composed_draft(staff, [sam], "Exam moved", "<p>Room 101.</p>")
    edit = reverse("messaging:message_edit", args=[draft.pk])
    sign_in(page, live_server.url, staff, next_path=edit)
    back = page.locator("#cancel-link")
    dialogs = Dialogs(page)

    # Nothing changed (a search is not a change): no question.
    page.locator("#recipient-search").fill("sam")
    expect(page.get_by_test_id(f"search-user-{sam.pk}")).to_be_visible()
    back.click()
    expect(page).to_have_url(re.compile(r"/messages/$"))
    assert dialogs.seen == []

    # Typed, then "Back to messages": asked; staying keeps what was typed.
    page.goto(f"{live_server.url}{edit}")
    subject = page.locator("#id_subject_en")
    subject.click()
    subject.fill("Exam moved to Friday")
    dialogs.answers.append(False)
    back.click()
    dialogs.wait_for(1)
    expect(page).to_have_url(re.compile(re.escape(edit) + "$"))
    expect(subject).to_have_value("Exam moved to Friday")

    # Asked again; leaving this time. Nothing was saved.
    dialogs.answers.append(True)
    back.click()
    dialogs.wait_for(2)
    expect(page).to_have_url(re.compile(r"/messages/$"))
    draft.refresh_from_db()
    assert draft.composed_content["en"]["subject"] == "Exam moved"

    # A recipient removed is a change too; saving it leaves without a question.
    page.goto(f"{live_server.url}{edit}")
    page.locator(f'[data-recipient="users-{sam.pk}"] [data-remove-recipient]').click()
    dialogs.answers.append(False)
    back.click()
    dialogs.wait_for(3)
    expect(page).to_have_url(re.compile(re.escape(edit) + "$"))
    page.locator("#save-and-preview").click()
    expect(page).to_have_url(re.compile(r"/preview/$"))
    dialogs.wait_for(3)
    draft.refresh_from_db()
    assert draft.virtual_message_receivers["chosen_user_ids"] == []
    clean(e2e_problems)


def test_a_failed_save_stays_unsaved(e2e_page, e2e_problems, live_server, staff, sam):
    page = e2e_page
    draft = composed_draft(staff, [sam], "Exam moved", "<p>Room 101.</p>")
    edit = reverse("messaging:message_edit", args=[draft.pk])
    sign_in(page, live_server.url, staff, next_path=edit)
    dialogs = Dialogs(page)
    page.locator("#id_subject_en").fill("")
    page.locator("#save-draft").click()
    expect(page.locator("#form-errors")).to_be_visible()
    dialogs.wait_for(0)
    dialogs.answers.append(False)
    page.locator("#cancel-link").click()
    dialogs.wait_for(1)
    expect(page).to_have_url(re.compile(re.escape(edit) + "$"))
    clean(e2e_problems)


# Context type --------------------------------------------------------------------------------------


def test_the_context_type_is_explained_and_the_explanation_follows_the_choice(
    e2e_page, e2e_problems, live_server, staff
):
    page = e2e_page
    sign_in(page, live_server.url, staff, next_path=reverse("messaging:message_create"))
    select = page.locator("#id_context_type")
    help_text = page.get_by_test_id("context-type-help")
    expect(select).to_have_attribute("aria-describedby", "context-type-help")
    expect(help_text).to_have_text(
        str(context_types.explanations()[Message.ContextType.OTHER]), use_inner_text=True
    )
    expect(select).to_have_accessible_description(
        str(context_types.explanations()[Message.ContextType.OTHER])
    )
    select.select_option(Message.ContextType.DEADLINE_MOVED)
    expect(help_text).to_have_text(
        str(context_types.explanations()[Message.ContextType.DEADLINE_MOVED]), use_inner_text=True
    )
    expect(select).to_have_accessible_description(
        str(context_types.explanations()[Message.ContextType.DEADLINE_MOVED])
    )
    select.select_option(Message.ContextType.FEEDBACK)
    expect(help_text).to_have_text(
        str(context_types.explanations()[Message.ContextType.FEEDBACK]), use_inner_text=True
    )
    clean(e2e_problems)


def test_a_draft_sent_meanwhile_is_not_saved_and_says_why(e2e_page, e2e_problems, live_server, staff, sam):
    """Another staff member sent the draft while it was open here: saving changes nothing and the
    form (with what was typed) stays, saying why."""
    page = e2e_page
    draft = composed_draft(staff, [sam], "Exam moved", "<p>Room 101.</p>")
    sign_in(page, live_server.url, staff, next_path=reverse("messaging:message_edit", args=[draft.pk]))
    Message.objects.filter(pk=draft.pk).update(status=Message.Status.SENDING)
    page.locator("#id_subject_en").fill("Exam moved again")
    page.locator("#save-draft").click()
    expect(page.locator("#form-errors")).to_contain_text("This message was sent while you were editing it")
    expect(page.locator("#id_subject_en")).to_have_value("Exam moved again")
    draft.refresh_from_db()
    assert draft.composed_content["en"]["subject"] == "Exam moved"
    clean(e2e_problems)
