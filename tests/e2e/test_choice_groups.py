"""Every group of radio buttons or checkboxes has a name a screen reader says (issue 30): asked of
Chromium's accessibility tree, not of the markup, because what counts is what the browser makes of
it (a <legend> names its fieldset only as the fieldset's first child, say).

Each page with choices is visited: the staff compose, send and resend pages, a recipient's email
settings (from an email's link, and signed in) and the admin's lists with action checkboxes.
Besides the named groups each page is expected to have, every radio button on it must be inside a
named group (its own label, "Off", says nothing of what is turned off), and every checkbox inside a
named group or named itself.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from playwright.sync_api import Page, expect

from messaging.compose import composing
from messaging.engine import sending, transitions
from messaging.engine.channels import DeliveryResult
from messaging.models import DeliveryMode, Message, MessageAttachment, MessageReceiver
from messaging.preferences import context_types, links
from messaging.preferences import modes as preferences
from tests.e2e.conftest import composed_draft, make_staff
from tests.e2e.test_accessibility import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PERMISSIONS = ("view_message", "compose_message", "send_message", "resend_message", "ignore_preferences")
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
MODES = ["Immediately", "Daily digest", "Weekly digest", "Off"]
GROUP_ROLES = ("group", "radiogroup")


# The accessibility tree ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    role: str  # "radio" or "checkbox"
    name: str  # its own accessible name
    group: str | None  # the name of the nearest group around it ("" unnamed, None: no group)


def choices(page: Page) -> list[Choice]:
    """Every radio button and checkbox in Chromium's accessibility tree of the page, with the
    name of the group (role group or radiogroup) nearest around it."""
    session = page.context.new_cdp_session(page)
    try:
        nodes = session.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        session.detach()
    by_id = {node["nodeId"]: node for node in nodes}

    def role(node) -> str:
        return node.get("role", {}).get("value", "")

    def name(node) -> str:
        return str(node.get("name", {}).get("value", "")).strip()

    found = []
    for node in nodes:
        if node.get("ignored") or role(node) not in ("radio", "checkbox"):
            continue
        group, parent = None, by_id.get(node.get("parentId"))
        while parent is not None:
            if role(parent) in GROUP_ROLES:
                group = name(parent)
                break
            parent = by_id.get(parent.get("parentId"))
        found.append(Choice(role(node), name(node), group))
    return found


def assert_every_choice_is_named(page: Page, context: str) -> list[Choice]:
    found = choices(page)
    assert found, f"{context}: no radio button or checkbox found; is this the page meant?"
    unnamed = [
        choice
        for choice in found
        if choice.group == ""  # an unnamed group is announced as a group of nothing in particular
        or (choice.group is None and (choice.role == "radio" or not choice.name))
    ]
    assert not unnamed, f"{context}: choices without a named group or a name of their own: {unnamed}"
    return found


def assert_group(page: Page, name: str, role: str, options: list[str | re.Pattern]) -> None:
    """A group called `name` holds exactly `options`, radio buttons or checkboxes (`role`)."""
    group = page.get_by_role("group", name=name, exact=True)
    expect(group).to_have_count(1)
    expect(group).to_have_accessible_name(name)
    expect(group.get_by_role(role)).to_have_count(len(options))
    for option in options:
        expect(group.get_by_role(role, name=option, exact=True)).to_have_count(1)


# The data ------------------------------------------------------------------------------------------


@pytest.fixture
def ada(make_user):
    return make_user(language="en", first_name="Ada", last_name="Lovelace")


@pytest.fixture
def staff(make_user):
    return make_staff(make_user, PERMISSIONS)


def with_attachment(message: Message, filename: str) -> MessageAttachment:
    return MessageAttachment.objects.create(
        message=message,
        file=ContentFile(PDF, name=filename),
        filename=filename,
        content_type="application/pdf",
        size=len(PDF),
        sha256=hashlib.sha256(PDF).hexdigest(),
    )


def failed_for_good(staff, users) -> Message:
    """Sent, every receiver failed permanently (550): the resend page offers to try them anyway."""
    message = composed_draft(staff, users, "Exam moved", "<p>Room 101.</p>")
    assert transitions.queue(message, [u.pk for u in users])
    sending.start_preparing(message, "groups-preparer")
    assert sending.prepare(message, "groups-preparer", **composing.prepare_arguments(message))
    claim = transitions.claim_batch(message.pk, "groups-worker", limit=len(users))
    failure = DeliveryResult(delivered=False, permanent=True, code=550, reason="550 5.1.1 No such user")
    for receiver in claim.receivers:
        assert transitions.record_result(receiver, failure, claim.worker_id)
    transitions.roll_up(message.pk)
    return message


# The pages -----------------------------------------------------------------------------------------


def test_compose_page(e2e_page, live_server, settings, tmp_path, staff, ada):
    settings.MEDIA_ROOT = tmp_path / "media"
    draft = composed_draft(staff, [ada], "Exam schedule", "<p>See the schedule.</p>")
    with_attachment(draft, "schedule.pdf")
    with_attachment(draft, "rooms.pdf")
    sign_in(e2e_page, live_server.url, staff)
    e2e_page.goto(f"{live_server.url}{reverse('messaging:message_edit', args=[draft.pk])}")

    assert_every_choice_is_named(e2e_page, "the compose page")
    assert_group(
        e2e_page,
        "Reply-To",
        "radio",
        ["No Reply-To (replies go to the sender)", f"Replies go to me ({staff.email})"],
    )
    # Chromium puts a space before the colon, which is in a visually hidden span.
    removals = [re.compile(rf"^Remove on save ?: {name}$") for name in ("schedule\\.pdf", "rooms\\.pdf")]
    assert_group(e2e_page, "Attachments", "checkbox", removals)
    important = e2e_page.get_by_role("checkbox", name=re.compile(r"^Important: deliver to everyone"))
    expect(important).to_have_count(1)


def test_send_page(e2e_page, live_server, staff, ada):
    draft = composed_draft(staff, [ada], "Exam schedule", "<p>See the schedule.</p>")
    sign_in(e2e_page, live_server.url, staff)
    e2e_page.goto(f"{live_server.url}{reverse('messaging:message_send', args=[draft.pk])}")

    assert_every_choice_is_named(e2e_page, "the send page")
    assert_group(e2e_page, "When", "radio", ["Send now", "Send at a later time"])


def test_resend_page(e2e_page, live_server, staff, ada):
    message = failed_for_good(staff, [ada])
    sign_in(e2e_page, live_server.url, staff)
    e2e_page.goto(f"{live_server.url}{reverse('messaging:message_resend_failed', args=[message.pk])}")

    (choice,) = assert_every_choice_is_named(e2e_page, "the resend page")
    assert choice == Choice("checkbox", "Also resend the 1 receiver that failed permanently", None)


@pytest.mark.parametrize("how", ["signed link", "signed in"])
def test_email_settings_name_each_type(e2e_page, live_server, ada, how):
    """Each context type's four modes are a group named by the type (the issue: a screen reader
    said "Off" without saying what for)."""
    preferences.set_mode(ada, "feedback", DeliveryMode.WEEKLY)
    if how == "signed link":
        path = reverse("preferences:manage_signed", args=[links.manage_token(ada.pk)])
    else:
        sign_in(e2e_page, live_server.url, ada)
        path = reverse("preferences:manage")
    e2e_page.goto(f"{live_server.url}{path}")

    found = assert_every_choice_is_named(e2e_page, f"the email settings ({how})")
    types = preferences.choices_of(ada)
    assert types and len(found) == len(MODES) * len(types)
    for config, _mode in types:
        assert_group(e2e_page, str(config.label), "radio", MODES)
    chosen = e2e_page.get_by_role("group", name=str(context_types.get("feedback").label), exact=True)
    expect(chosen.get_by_role("radio", name="Weekly digest")).to_be_checked()


@pytest.mark.parametrize("model", ["message", "messagereceiver"])
def test_admin_lists(e2e_page, live_server, make_user, staff, ada, model):
    """The action checkboxes: "select all" and one per row, each saying what it selects."""
    failed_for_good(staff, [ada, make_user()])
    sign_in(e2e_page, live_server.url, make_user(username="admin", is_staff=True, is_superuser=True))
    e2e_page.goto(f"{live_server.url}{reverse(f'admin:messaging_{model}_changelist')}")

    found = assert_every_choice_is_named(e2e_page, f"the admin's {model} list")
    rows = (MessageReceiver if model == "messagereceiver" else Message).objects.count()
    assert len(found) == 1 + rows, found
    assert all(c.role == "checkbox" and c.name for c in found), found
    expect(e2e_page.get_by_role("checkbox", name=re.compile("^Select all"))).to_have_count(1)
