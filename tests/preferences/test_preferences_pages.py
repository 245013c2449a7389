"""Recipients' preference pages: signed in, or through the signed link in an email; reading a
digest item in full. Any user (never staff-only), in the recipient's language, and no input
changes another user's settings or ends in a server error."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import URLPattern, reverse
from django.utils import timezone

from messaging import conf
from messaging.models import DeliveryMode, Message, MessageReceiver, NotificationPreference
from messaging.preferences import links
from messaging.preferences import modes as preferences
from messaging.preferences import urls as preference_urls

pytestmark = pytest.mark.django_db

MANAGE = "/preferences/"
STAFF_NAV_IDS = ("nav-messages", "nav-new-message", "nav-templates", "nav-people", "nav-operations")
# url name → who may open it: every pattern of messaging.preferences.urls is listed here
# (tests/operations/test_permissions.py covers messaging.urls only).
ACCESS = {
    "manage": "any signed-in user",
    "manage_signed": "whoever holds the user's signed manage token",
    "one_click": "whoever holds the user's signed one-click token (RFC 8058, no CSRF token)",
    "read": "whoever holds the signed read token of the receiver's user",
    "invalid_link": "anyone: the not-valid page",
}


def saved(user) -> dict[str, str]:
    return dict(NotificationPreference.objects.filter(user=user).values_list("context_type", "mode"))


def signed_path(user) -> str:
    return reverse("preferences:manage_signed", args=[links.manage_token(user.pk)])


def form_data(**modes) -> dict[str, str]:
    """Every optional type at its default (as the page posts it), with `modes` changed."""
    data = {"mode-other": "immediately", "mode-comment": "immediately", "mode-feedback": "immediately"}
    data["mode-feedback_updated"] = "immediately"
    data.update({f"mode-{key}": mode for key, mode in modes.items()})
    return data


@pytest.fixture
def student(make_user):
    return make_user(language="en", username="kari", first_name="Kari", last_name="Nordmann")


@pytest.fixture
def student_client(client, student):
    client.force_login(student)
    return client


def test_every_preference_url_is_listed():
    names = [p.name for p in preference_urls.urlpatterns if isinstance(p, URLPattern)]
    assert sorted(names) == sorted(ACCESS)
    assert preference_urls.app_name == "preferences"


class TestSignedIn:
    def test_signing_in_leads_a_recipient_to_their_settings_and_staff_to_the_messages(
        self, client, make_user
    ):
        make_user(username="ola", password="pw-ola-1234")
        response = client.post(reverse("login"), {"username": "ola", "password": "pw-ola-1234"}, follow=True)
        assert response.redirect_chain[-1][0] == MANAGE and response.status_code == 200
        assert "language-form" not in response.content.decode()  # always the recipient's own language
        assert client.get("/")["Location"] == MANAGE
        client.logout()
        make_user(username="sam", password="pw-sam-1234", is_staff=True)
        client.post(reverse("login"), {"username": "sam", "password": "pw-sam-1234"})
        assert client.get("/")["Location"] == reverse("messaging:message_list")

    def test_anonymous_is_sent_to_login(self, client):
        response = client.get(MANAGE)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
        assert client.post(MANAGE, form_data(feedback="off")).status_code == 302
        assert not NotificationPreference.objects.exists()

    def test_a_non_staff_user_sees_every_type_and_no_staff_navigation(self, student_client):
        response = student_client.get(MANAGE)
        assert response.status_code == 200
        content = response.content.decode()
        assert '<html lang="en">' in content
        for nav_id in STAFF_NAV_IDS:
            assert f'id="{nav_id}"' not in content
        for key in ("other", "comment", "deadline_moved", "feedback", "feedback_updated"):
            assert f'id="type-{key}"' in content
        assert 'id="type-digest"' not in content  # not a type anyone composes
        assert "Always immediately — cannot be turned off" in content
        assert 'aria-describedby="help-feedback"' in content and 'id="help-feedback"' in content
        enforced = re.findall(r'<input[^>]*name="mode-deadline_moved"[^>]*>', content)
        assert len(enforced) == 4 and all("disabled" in radio for radio in enforced)
        assert [radio for radio in enforced if "checked" in radio] == [
            next(radio for radio in enforced if 'value="immediately"' in radio)
        ]

    def test_staff_use_it_too(self, client, make_user):
        client.force_login(make_user(is_staff=True))
        assert client.get(MANAGE).status_code == 200

    def test_saving_changes_the_users_choices_and_says_so(self, student_client, student, make_user):
        other = make_user()
        response = student_client.post(MANAGE, form_data(feedback="weekly", comment="off"))
        assert response.status_code == 302 and response["Location"] == MANAGE
        assert saved(student) == {"feedback": DeliveryMode.WEEKLY, "comment": DeliveryMode.OFF}
        assert saved(other) == {}
        page = student_client.get(MANAGE).content.decode()
        assert "Saved." in page
        (feedback_checked,) = re.findall(r'<input[^>]*name="mode-feedback"[^>]*checked[^>]*>', page)
        assert 'value="weekly"' in feedback_checked

    def test_the_enforced_type_cannot_be_turned_off(self, student_client, student):
        response = student_client.post(MANAGE, form_data(deadline_moved="off", feedback="off"))
        assert response.status_code == 200
        assert "always sent immediately" in response.content.decode()
        assert saved(student) == {}

    @pytest.mark.parametrize(
        "data",
        [
            form_data(feedback="never"),
            form_data(feedback=""),
            form_data(feedback="OFF"),
            {"mode-feedback": "off"},  # the other rows missing
        ],
        ids=["unknown mode", "empty mode", "wrong case", "rows missing"],
    )
    def test_bad_modes_are_errors_and_nothing_is_saved(self, student_client, student, data):
        response = student_client.post(MANAGE, data)
        assert response.status_code == 200 and response.context["form"].errors
        assert saved(student) == {}

    def test_forged_fields_are_ignored(self, student_client, student, make_user):
        other = make_user()
        data = {
            **form_data(feedback="daily"),
            "mode-digest": "off",
            "mode-no_such_type": "off",
            "user": str(other.pk),
            "user_id": str(other.pk),
            "context_type": "deadline_moved",
        }
        assert student_client.post(MANAGE, data).status_code == 302
        assert saved(student) == {"feedback": DeliveryMode.DAILY}
        assert saved(other) == {}

    def test_a_refused_row_is_an_error_and_the_others_are_saved(self, student_client, student, monkeypatch):
        real = preferences.set_mode

        def refuse_comment(user, context_type, mode):
            if context_type == "comment":
                raise preferences.PreferenceRefused("made enforced meanwhile")
            return real(user, context_type, mode)

        monkeypatch.setattr(preferences, "set_mode", refuse_comment)
        response = student_client.post(MANAGE, form_data(comment="off", feedback="off"))
        assert response.status_code == 200
        assert "not possible for these messages any more" in response.content.decode()
        assert saved(student) == {"feedback": DeliveryMode.OFF}

    @pytest.mark.parametrize(("language", "shown"), [("nb", "nb"), ("fr", "en"), (None, "en"), ("", "en")])
    def test_the_page_is_in_the_users_language(self, client, make_user, language, shown):
        user = make_user(language=language)
        client.force_login(user)
        response = client.get(MANAGE, HTTP_ACCEPT_LANGUAGE="en" if shown == "nb" else "nb")
        assert f'<html lang="{shown}">' in response.content.decode()
        assert response["Content-Language"] == shown


class TestSignedLink:
    def test_it_works_without_login_for_the_tokens_user(self, client, student):
        path = signed_path(student)
        response = client.get(path)
        assert response.status_code == 200
        content = response.content.decode()
        assert "Kari Nordmann" in content and 'id="type-feedback"' in content
        for nav_id in STAFF_NAV_IDS:
            assert f'id="{nav_id}"' not in content
        response = client.post(path, form_data(feedback="off"))
        assert response.status_code == 302 and response["Location"] == path
        assert saved(student) == {"feedback": DeliveryMode.OFF}
        assert "Saved." in client.get(path).content.decode()

    def test_another_users_token_never_changes_the_signed_in_user(self, client, student, make_user):
        owner = make_user()
        client.force_login(student)
        assert client.post(signed_path(owner), form_data(comment="daily")).status_code == 302
        assert saved(student) == {}
        assert saved(owner) == {"comment": DeliveryMode.DAILY}

    def test_it_is_csrf_protected(self, student):
        client = Client(enforce_csrf_checks=True)
        assert client.post(signed_path(student), form_data(feedback="off")).status_code == 403
        assert saved(student) == {}

    def test_nb_user_gets_norwegian(self, client, make_user):
        user = make_user(language="nb")
        response = client.get(signed_path(user), HTTP_ACCEPT_LANGUAGE="en")
        assert '<html lang="nb">' in response.content.decode()

    @pytest.mark.parametrize(
        "path",
        [
            "/preferences/garbage/",
            "/preferences/a:b:c/",
            "/preferences/%00%ff/",
            "/preferences/read/",
            "/preferences/x/y/z/",
        ],
    )
    def test_garbage_is_the_not_valid_page(self, client, path):
        response = client.get(path)
        assert response.status_code == 400
        content = response.content.decode()
        assert "This link is not valid" in content and f'href="{MANAGE}"' in content

    def test_cut_tampered_and_extra_segments_are_not_valid(self, client, student, make_user):
        token = links.manage_token(student.pk)
        other = links.manage_token(make_user().pk)
        forged = other.split(":")[0] + token[token.index(":") :]
        for path in (
            f"/preferences/{token[:-4]}/",
            f"/preferences/{forged}/",
            f"/preferences/{token}/extra/",
            f"/preferences/{token}/one-click/extra/",
        ):
            response = client.post(path, form_data(feedback="off"))
            assert response.status_code in (400, 403), path  # 403: CSRF refuses a post first
            assert "This link is not valid" in client.get(path).content.decode(), path
        assert not NotificationPreference.objects.exists()

    def test_an_expired_link_says_so(self, client, student):
        with time_machine.travel(timezone.now() - timedelta(days=conf.preference_link_max_age_days() + 1)):
            path = signed_path(student)
        response = client.get(path)
        assert response.status_code == 400 and "This link has expired" in response.content.decode()
        assert client.post(path, form_data(feedback="off")).status_code == 400
        assert saved(student) == {}

    def test_a_deleted_or_inactive_users_link_is_not_valid(self, client, make_user):
        gone, inactive = make_user(), make_user(is_active=False)
        paths = [signed_path(gone), signed_path(inactive)]
        gone.delete()
        for path in paths:
            response = client.get(path)
            assert response.status_code == 400 and "This link is not valid" in response.content.decode()

    def test_a_read_token_is_not_a_preference_link(self, client, student):
        response = client.get(f"/preferences/{links.read_token(student.pk, 1)}/")
        assert response.status_code == 400 and "This link is not valid" in response.content.decode()


class TestRead:
    @pytest.fixture
    def receiver(self, make_user):
        user = make_user(language="nb")
        message = Message.objects.create(context_type=Message.ContextType.FEEDBACK)
        return MessageReceiver.objects.create(
            message=message,
            user=user,
            language="nb",
            send_to=user.email,
            subject="Tilbakemelding på oblig 2",
            message_content_plain="Bra jobbet.",
            message_content_html='<!DOCTYPE html><html lang="nb"><head><meta charset="utf-8"></head>'
            "<body><p>Bra <strong>jobbet</strong>.</p></body></html>",
        )

    def test_it_shows_the_receivers_subject_and_content_in_their_language(self, client, receiver):
        response = client.get(links.read_url(receiver.user_id, receiver.pk).removeprefix(conf.site_url()))
        assert response.status_code == 200
        content = response.content.decode()
        assert '<html lang="nb">' in content
        assert "Tilbakemelding på oblig 2" in content
        assert "<p>Bra <strong>jobbet</strong>.</p>" in content
        assert content.count("<body") == 1 and "<!DOCTYPE html><html" not in content.split("<body", 1)[1]

    def test_plain_only_content_is_shown_too(self, client, receiver):
        MessageReceiver.objects.filter(pk=receiver.pk).update(message_content_html="")
        response = client.get(
            reverse("preferences:read", args=[links.read_token(receiver.user_id, receiver.pk)])
        )
        assert "<p>Bra jobbet.</p>" in response.content.decode()

    def test_bad_tokens_are_refused(self, client, receiver):
        token = links.read_token(receiver.user_id, receiver.pk)
        for bad in (token[:-2], "garbage", links.manage_token(receiver.user_id)):
            response = client.get(reverse("preferences:read", args=[bad]))
            assert response.status_code == 400 and "This link is not valid" in response.content.decode()
        with time_machine.travel(timezone.now() - timedelta(days=conf.preference_link_max_age_days() + 1)):
            old = links.read_token(receiver.user_id, receiver.pk)
        response = client.get(reverse("preferences:read", args=[old]))
        assert response.status_code == 400 and "This link has expired" in response.content.decode()

    def test_a_deleted_receiver_is_not_valid(self, client, receiver):
        path = reverse("preferences:read", args=[links.read_token(receiver.user_id, receiver.pk)])
        receiver.delete()
        assert client.get(path).status_code == 400

    def test_only_get(self, client, receiver):
        path = reverse("preferences:read", args=[links.read_token(receiver.user_id, receiver.pk)])
        assert client.post(path).status_code == 405
