"""Permission matrix generated from messaging.urls: no URL can escape it.

Every URL pattern must be listed in PERMISSIONS. For GET and POST: anonymous → login redirect,
non-staff (even with every permission) → 403, staff without the permission (but with all the
others) → 403, staff with only that permission → 200/302 (405 for a method the view refuses).
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, reverse

from messaging import urls as messaging_urls
from messaging.compose import attachments, composing
from messaging.feedback import suppressions
from messaging.models import Message, MessageTemplate, Suppression, UnmatchedBounce

VIEW, COMPOSE, SEND, RESEND = "view_message", "compose_message", "send_message", "resend_message"
LIFT = "lift_suppression"
ALL = [VIEW, COMPOSE, SEND, RESEND, LIFT]
PUBLIC = None

# url name → (permission codename, methods the view answers)
PERMISSIONS = {
    "message_list": (VIEW, {"GET"}),
    "message_create": (COMPOSE, {"GET", "POST"}),
    "message_edit": (COMPOSE, {"GET", "POST"}),
    "message_duplicate": (COMPOSE, {"POST"}),
    "message_delete": (COMPOSE, {"GET", "POST"}),
    "message_preview": (VIEW, {"GET"}),
    "message_send_test": (SEND, {"POST"}),
    "message_send": (SEND, {"GET", "POST"}),
    "message_status": (VIEW, {"GET"}),
    "message_unschedule": (SEND, {"POST"}),
    "message_pause": (SEND, {"POST"}),
    "message_resume": (SEND, {"POST"}),
    "message_cancel": (SEND, {"POST"}),
    "message_resend_failed": (RESEND, {"GET", "POST"}),
    "receiver_export": (VIEW, {"GET"}),  # a message's receivers as CSV
    "receiver_detail": (VIEW, {"GET"}),
    "receiver_resend": (RESEND, {"POST"}),
    "recipient_search": (COMPOSE, {"GET"}),
    "recipient_summary": (COMPOSE, {"GET"}),
    "group_members": (COMPOSE, {"GET"}),  # its pk is a group's
    "operations": (VIEW, {"GET"}),
    "person_search": (VIEW, {"GET"}),
    "person_detail": (VIEW, {"GET"}),  # its pk is a user's
    "person_revoke_links": (SEND, {"POST"}),  # its pk is a user's
    "suppression_list": (VIEW, {"GET"}),
    "suppression_lift": (LIFT, {"POST"}),
    "unmatched_bounce_download": (VIEW, {"GET"}),
    "unmatched_bounce_dismiss": (LIFT, {"POST"}),
    "attachment_download": (VIEW, {"GET"}),
    "message_save_as_template": (COMPOSE, {"GET", "POST"}),
    "template_list": (COMPOSE, {"GET"}),
    "template_create": (COMPOSE, {"GET", "POST"}),
    "template_start": (COMPOSE, {"POST"}),
    "template_edit": (COMPOSE, {"GET", "POST"}),
    "template_delete": (COMPOSE, {"GET", "POST"}),
    "set_language": (PUBLIC, {"GET", "POST"}),  # only sets the language cookie
}
URL_NAMES = [p.name for p in messaging_urls.urlpatterns if isinstance(p, URLPattern)]
CASES = [(name, method) for name in URL_NAMES for method in ("GET", "POST")]


def test_every_url_is_in_the_permission_map():
    assert all(isinstance(p, URLPattern) for p in messaging_urls.urlpatterns), "include()s need their own map"
    assert sorted(URL_NAMES) == sorted(PERMISSIONS)


def test_every_protected_view_declares_its_permission():
    for pattern in messaging_urls.urlpatterns:
        codename = PERMISSIONS[pattern.name][0]
        if codename is not PUBLIC:
            assert getattr(pattern.callback, "required_permissions", None) == (f"messaging.{codename}",), (
                pattern.name
            )


def grant(user, codenames):
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="messaging", codename__in=codenames)
    )
    return user


@pytest.fixture
def objects(make_user, django_capture_on_commit_callbacks, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path  # the attachment's file
    owner = make_user(is_staff=True)
    receiver_user = make_user(email="")  # no address: its receiver fails, so it can be resent
    content = {"en": {"subject": "S", "body": "<p>B</p>"}}
    chosen = {"chosen_user_ids": [receiver_user.pk], "group_ids": []}
    draft = composing.save_draft(Message(composed_content=content, virtual_message_receivers=chosen), owner)
    sent = composing.save_draft(Message(composed_content=content, virtual_message_receivers=chosen), owner)
    with django_capture_on_commit_callbacks(execute=True):
        composing.queue_send(sent, owner)
    suppressions.suppress("gone@example.org", Suppression.Reason.HARD_BOUNCE)
    unmatched = UnmatchedBounce.objects.create(reason="Not a delivery report.", raw=b"Subject: x\n\ny")
    return {
        "draft": draft,
        "sent": sent,
        "receiver": sent.receivers.get(),
        "suppression": Suppression.objects.get(),
        "unmatched_bounce": unmatched,
        "person": receiver_user,
        "group": Group.objects.create(name="INF1000"),
        "template": MessageTemplate.objects.create(name="Weekly", composed_content=content),
        "attachment": attachments.add(draft, [SimpleUploadedFile("plan.pdf", b"%PDF-1.4")])[0],
    }


def url_for(name: str, objects) -> str:
    pattern = next(p for p in messaging_urls.urlpatterns if p.name == name)
    if "pk" not in pattern.pattern.converters:
        return reverse(f"messaging:{name}")
    if name == "receiver_export":  # its pk is the message's
        return reverse(f"messaging:{name}", args=[objects["sent"].pk])
    for kind in ("receiver", "suppression", "unmatched_bounce", "person", "group", "template", "attachment"):
        if name.startswith(f"{kind}_"):
            return reverse(f"messaging:{name}", args=[objects[kind].pk])
    sample = objects["sent"] if name in {"message_status", "message_resend_failed"} else objects["draft"]
    return reverse(f"messaging:{name}", args=[sample.pk])


def request(client, method: str, url: str):
    return client.get(url) if method == "GET" else client.post(url, {})


@pytest.mark.parametrize(("name", "method"), CASES)
def test_anonymous_is_sent_to_login(client, objects, name, method):
    response = request(client, method, url_for(name, objects))
    if PERMISSIONS[name][0] is PUBLIC:
        return
    assert response.status_code == 302 and response["Location"].startswith(reverse("login")), (name, method)


@pytest.mark.parametrize(("name", "method"), CASES)
def test_non_staff_gets_403(client, make_user, objects, name, method):
    if PERMISSIONS[name][0] is PUBLIC:
        return
    client.force_login(grant(make_user(is_staff=False), ALL))
    assert request(client, method, url_for(name, objects)).status_code == 403, (name, method)


@pytest.mark.parametrize(("name", "method"), CASES)
def test_inactive_staff_gets_nothing(client, make_user, objects, name, method):
    if PERMISSIONS[name][0] is PUBLIC:
        return
    user = grant(make_user(is_staff=True), ALL)
    client.force_login(user)
    user.is_active = False
    user.save()
    response = request(client, method, url_for(name, objects))
    assert response.status_code in (302, 403) and b"<table" not in response.content, (name, method)


@pytest.mark.parametrize(("name", "method"), CASES)
def test_staff_without_the_permission_gets_403(client, make_user, objects, name, method):
    codename = PERMISSIONS[name][0]
    if codename is PUBLIC:
        return
    client.force_login(grant(make_user(is_staff=True), [p for p in ALL if p != codename]))
    response = request(client, method, url_for(name, objects))
    assert response.status_code == 403, (name, method)
    assert b"data-testid" not in response.content or b'id="forbidden"' in response.content


@pytest.mark.parametrize(("name", "method"), CASES)
def test_staff_with_the_permission_gets_through(client, make_user, objects, name, method):
    codename, methods = PERMISSIONS[name]
    client.force_login(grant(make_user(is_staff=True), [codename] if codename else []))
    response = request(client, method, url_for(name, objects))
    expected = {200, 302} if method in methods else {405}
    assert response.status_code in expected, (name, method, response.status_code)


def test_htmx_request_of_anonymous_redirects_the_page(client, objects):
    response = client.get(reverse("messaging:message_list"), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Redirect"].startswith(reverse("login"))
