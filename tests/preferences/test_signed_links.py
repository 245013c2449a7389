"""Signed links do one thing for one person (issue 23, item 5): each names its purpose and its
user; a read link opens only a receiver of its user; a forwarded link touches nobody else; every
link of a user can be revoked at once (person page, management command; audited) and a revoked
link says so; links survive a key rotation through SECRET_KEY_FALLBACKS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import signing
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from messaging.models import AuditEvent, DeliveryMode, Message, MessageReceiver, MessagingProfile
from messaging.models import NotificationPreference as Preference
from messaging.preferences import link_revocation, links
from tests.conftest import grant

pytestmark = pytest.mark.django_db

ONE_CLICK_BODY = "List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"
NOT_VALID, EXPIRED, WITHDRAWN = "This link is not valid", "This link has expired", "This link was withdrawn"
ALL_OPTIONAL_IMMEDIATE = {
    f"mode-{key}": "immediately" for key in ("other", "comment", "feedback", "feedback_updated")
}
T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)


def saved(user) -> dict[str, str]:
    return dict(Preference.objects.filter(user=user).values_list("context_type", "mode"))


def manage_path(token: str) -> str:
    return reverse("preferences:manage_signed", args=[token])


def one_click_path(token: str) -> str:
    return reverse("preferences:one_click", args=[token])


def read_path(token: str) -> str:
    return reverse("preferences:read", args=[token])


def make_receiver(user, subject: str = "Feedback on assignment 2") -> MessageReceiver:
    message = Message.objects.create(context_type=Message.ContextType.FEEDBACK)
    return MessageReceiver.objects.create(
        message=message,
        user=user,
        language="en",
        send_to=user.email,
        subject=subject,
        message_content_plain=f"{subject}: well done.",
    )


def revoke(user, when: datetime) -> None:
    with time_machine.travel(when, tick=False):
        link_revocation.revoke_links(user)


@pytest.fixture
def kari(make_user):
    return make_user(language="en", username="kari", first_name="Kari", email="kari@uni.example")


@pytest.fixture
def ola(make_user):
    return make_user(language="en", username="ola", first_name="Ola", email="ola@uni.example")


# One purpose per link --------------------------------------------------------------------------------


def tokens_of(user, receiver) -> dict[str, str]:
    return {
        links.MANAGE: links.manage_token(user.pk),
        links.ONE_CLICK: links.one_click_token(user.pk, ["feedback"]),
        links.READ: links.read_token(user.pk, receiver.pk),
    }


class TestPurpose:
    def test_each_token_opens_its_own_page(self, client, kari):
        tokens = tokens_of(kari, make_receiver(kari))
        assert client.get(manage_path(tokens[links.MANAGE])).status_code == 200
        assert client.get(one_click_path(tokens[links.ONE_CLICK])).status_code == 200
        assert client.get(read_path(tokens[links.READ])).status_code == 200

    @pytest.mark.parametrize("purpose", [links.ONE_CLICK, links.READ])
    def test_the_manage_page_refuses_other_purposes(self, client, kari, purpose):
        path = manage_path(tokens_of(kari, make_receiver(kari))[purpose])
        response = client.post(path, {**ALL_OPTIONAL_IMMEDIATE, "mode-feedback": "off"})
        assert response.status_code == 400 and NOT_VALID in response.content.decode()
        assert client.get(path).status_code == 400
        assert saved(kari) == {}

    @pytest.mark.parametrize("purpose", [links.MANAGE, links.READ])
    def test_the_one_click_url_refuses_other_purposes(self, client, kari, purpose):
        path = one_click_path(tokens_of(kari, make_receiver(kari))[purpose])
        response = client.post(path, ONE_CLICK_BODY, content_type=FORM)
        assert response.status_code == 400 and NOT_VALID in response.content.decode()
        assert saved(kari) == {}

    @pytest.mark.parametrize("purpose", [links.MANAGE, links.ONE_CLICK])
    def test_the_read_page_refuses_other_purposes(self, client, kari, purpose):
        receiver = make_receiver(kari)
        response = client.get(read_path(tokens_of(kari, receiver)[purpose]))
        assert response.status_code == 400 and NOT_VALID in response.content.decode()
        assert receiver.subject not in response.content.decode()

    def test_a_hand_signed_one_click_token_works_with_its_own_salt_and_purpose(self, client, kari):
        """The control for the test below: what it changes is all that makes those fail."""
        assert len(set(links.SALTS.values())) == 3
        signer = signing.TimestampSigner(salt=links.SALTS[links.ONE_CLICK])
        token = signer.sign_object({"p": links.ONE_CLICK, "u": kari.pk, "t": ["feedback"]})
        assert client.post(one_click_path(token), ONE_CLICK_BODY, content_type=FORM).status_code == 200
        assert saved(kari) == {"feedback": DeliveryMode.OFF}

    @pytest.mark.parametrize(
        ("salt_of", "payload"),
        [
            (links.ONE_CLICK, {"p": links.MANAGE}),
            (links.ONE_CLICK, {}),  # the old shape: no purpose named
            (links.MANAGE, {"p": links.ONE_CLICK}),
        ],
        ids=[
            "one-click salt, manage payload",
            "one-click salt, no purpose",
            "manage salt, one-click payload",
        ],
    )
    def test_the_salt_and_the_payload_must_both_be_one_click(self, client, kari, salt_of, payload):
        """Signed with the real key: a one-click token needs its salt and to name its purpose."""
        signer = signing.TimestampSigner(salt=links.SALTS[salt_of])
        token = signer.sign_object({**payload, "u": kari.pk, "t": ["feedback"]})
        response = client.post(one_click_path(token), ONE_CLICK_BODY, content_type=FORM)
        assert response.status_code == 400 and NOT_VALID in response.content.decode()
        assert saved(kari) == {}


# One person per link ---------------------------------------------------------------------------------


class TestOnePerson:
    def test_a_read_link_opens_only_a_receiver_of_its_user(self, client, kari, ola):
        olas = make_receiver(ola, subject="The grade of Ola")
        # Signed with the real key and salt for Kari, naming Ola's receiver: what someone who can
        # sign would try. The link is Kari's, the receiver is not.
        forged = read_path(links.read_token(kari.pk, olas.pk))
        response = client.get(forged)
        assert response.status_code == 400 and NOT_VALID in response.content.decode()
        assert "The grade of Ola" not in response.content.decode()
        assert client.get(read_path(links.read_token(ola.pk, olas.pk))).status_code == 200

    def test_a_read_link_of_an_inactive_user_is_refused(self, client, kari):
        receiver = make_receiver(kari)
        path = read_path(links.read_token(kari.pk, receiver.pk))
        kari.is_active = False
        kari.save()
        assert client.get(path).status_code == 400

    def test_a_forwarded_manage_link_changes_only_its_user(self, client, kari, ola):
        """Whoever opens Kari's link, and whatever the form names, only Kari's settings change."""
        client.force_login(ola)
        data = {
            **ALL_OPTIONAL_IMMEDIATE,
            "mode-feedback": "off",
            "user": str(ola.pk),
            "user_id": str(ola.pk),
            "u": str(ola.pk),
            "username": "ola",
        }
        path = manage_path(links.manage_token(kari.pk))
        assert client.post(f"{path}?user={ola.pk}", data).status_code == 302
        assert saved(kari) == {"feedback": DeliveryMode.OFF}
        assert saved(ola) == {}

    def test_a_forwarded_one_click_link_turns_off_only_its_user(self, client, kari, ola):
        client.force_login(ola)
        path = one_click_path(links.one_click_token(kari.pk, ["feedback"]))
        assert client.post(path, f"{ONE_CLICK_BODY}&user={ola.pk}", content_type=FORM).status_code == 200
        assert saved(kari) == {"feedback": DeliveryMode.OFF} and saved(ola) == {}

    def test_the_one_click_page_does_not_hand_out_a_manage_link(self, client, kari):
        """An unsubscribe link sits in a header that mail providers and link scanners read: it
        leads to the sign-in page, never to a signed preference page."""
        path = one_click_path(links.one_click_token(kari.pk, ["feedback"]))
        for response in (client.get(path), client.post(path, ONE_CLICK_BODY, content_type=FORM)):
            assert response.context["manage_url"] == reverse("preferences:manage")


# Revoking ---------------------------------------------------------------------------------------------


class TestRevoked:
    def test_a_revoked_manage_link_says_so_and_saves_nothing(self, client, kari):
        with time_machine.travel(T0, tick=False):
            path = manage_path(links.manage_token(kari.pk))
        revoke(kari, T0 + timedelta(minutes=5))
        with time_machine.travel(T0 + timedelta(minutes=10)):
            response = client.get(path)
            content = response.content.decode()
            assert response.status_code == 400 and WITHDRAWN in content
            assert NOT_VALID not in content and EXPIRED not in content
            assert 'data-reason="revoked"' in content and 'href="/preferences/"' in content
            assert "Sign in" in content and "next email" in content
            post = client.post(path, {**ALL_OPTIONAL_IMMEDIATE, "mode-feedback": "off"})
            assert post.status_code == 400 and WITHDRAWN in post.content.decode()
        assert saved(kari) == {}

    def test_a_post_through_a_revoked_one_click_link_turns_nothing_off(self, client, kari):
        with time_machine.travel(T0, tick=False):
            path = one_click_path(links.one_click_token(kari.pk, ["feedback", "comment"]))
        revoke(kari, T0 + timedelta(seconds=30))
        with time_machine.travel(T0 + timedelta(minutes=1)):
            response = client.post(path, ONE_CLICK_BODY, content_type=FORM)
            assert response.status_code == 400 and WITHDRAWN in response.content.decode()
            assert client.get(path).status_code == 400
        assert saved(kari) == {}

    def test_a_revoked_read_link_shows_nothing_of_the_message(self, client, kari):
        receiver = make_receiver(kari)
        with time_machine.travel(T0, tick=False):
            path = read_path(links.read_token(kari.pk, receiver.pk))
        revoke(kari, T0 + timedelta(hours=1))
        with time_machine.travel(T0 + timedelta(hours=2)):
            response = client.get(path)
        content = response.content.decode()
        assert response.status_code == 400 and WITHDRAWN in content
        assert receiver.subject not in content

    def test_links_made_after_the_revocation_work(self, client, kari):
        revoke(kari, T0)
        with time_machine.travel(T0 + timedelta(seconds=1), tick=False):
            manage = manage_path(links.manage_token(kari.pk))
            one_click = one_click_path(links.one_click_token(kari.pk, ["feedback"]))
        with time_machine.travel(T0 + timedelta(minutes=1)):
            assert client.get(manage).status_code == 200
            assert client.post(one_click, ONE_CLICK_BODY, content_type=FORM).status_code == 200
        assert saved(kari) == {"feedback": DeliveryMode.OFF}

    def test_a_link_signed_in_the_second_of_the_revocation_is_revoked(self, client, kari):
        """The token's time is in whole seconds: within the revocation's second, refuse."""
        revoke(kari, T0 + timedelta(microseconds=500_000))
        with time_machine.travel(T0 + timedelta(microseconds=900_000), tick=False):
            same_second = manage_path(links.manage_token(kari.pk))
        with time_machine.travel(T0 + timedelta(minutes=1)):
            assert WITHDRAWN in client.get(same_second).content.decode()

    def test_revoking_one_user_leaves_the_others_links_working(self, client, kari, ola):
        with time_machine.travel(T0, tick=False):
            olas = manage_path(links.manage_token(ola.pk))
        revoke(kari, T0 + timedelta(minutes=1))
        with time_machine.travel(T0 + timedelta(minutes=2)):
            assert client.get(olas).status_code == 200

    def test_the_withdrawn_page_is_in_the_recipients_language(self, client, make_user):
        nb = make_user(language="nb")
        with time_machine.travel(T0, tick=False):
            path = manage_path(links.manage_token(nb.pk))
        revoke(nb, T0 + timedelta(minutes=1))
        with time_machine.travel(T0 + timedelta(minutes=2)):
            response = client.get(path, HTTP_ACCEPT_LANGUAGE="en")
        assert response.status_code == 400 and response.context["reason"] == "revoked"
        assert response["Content-Language"] == "nb" and '<html lang="nb">' in response.content.decode()

    def test_issued_at_is_the_signing_second(self, kari):
        with time_machine.travel(T0 + timedelta(microseconds=700_000), tick=False):
            token = links.one_click_token(kari.pk, ["feedback"])
        with time_machine.travel(T0 + timedelta(minutes=1)):
            assert links.load_one_click(token).issued_at == T0


class TestRevokeService:
    def test_it_sets_the_moment_and_audits(self, make_user, kari):
        staff = make_user(is_staff=True)
        with time_machine.travel(T0, tick=False):
            assert link_revocation.revoke_links(kari, actor=staff) == T0
        assert MessagingProfile.objects.get(user=kari).links_revoked_at == T0
        event = AuditEvent.objects.get(action=AuditEvent.Action.LINKS_REVOKED)
        assert event.actor == staff and event.message is None
        assert event.details == {"user_id": kari.pk, "username": "kari"}

    def test_it_makes_a_profile_when_there_is_none(self, client, make_user):
        user = make_user(language=None)
        with time_machine.travel(T0, tick=False):
            path = manage_path(links.manage_token(user.pk))
            assert client.get(path).status_code == 200  # no profile: never revoked
        revoke(user, T0 + timedelta(minutes=1))
        assert MessagingProfile.objects.get(user=user).links_revoked_at == T0 + timedelta(minutes=1)
        with time_machine.travel(T0 + timedelta(minutes=2)):
            assert WITHDRAWN in client.get(path).content.decode()


# The person page's button ------------------------------------------------------------------------------


def person_url(user) -> str:
    return reverse("messaging:person_detail", args=[user.pk])


def revoke_url(user) -> str:
    return reverse("messaging:person_revoke_links", args=[user.pk])


class TestPersonPage:
    @pytest.fixture
    def viewer(self, make_user):
        return grant(make_user(is_staff=True, username="viewer"), "view_message")

    @pytest.fixture
    def sender(self, make_user):
        return grant(make_user(is_staff=True, username="sender"), "view_message", "send_message")

    def test_staff_without_the_send_permission_get_no_button_and_403(self, client, viewer, kari):
        client.force_login(viewer)
        assert 'id="revoke-links-button"' not in client.get(person_url(kari)).content.decode()
        assert client.post(revoke_url(kari)).status_code == 403
        assert MessagingProfile.objects.get(user=kari).links_revoked_at is None
        assert not AuditEvent.objects.filter(action=AuditEvent.Action.LINKS_REVOKED).exists()

    def test_the_button_asks_first(self, client, sender, kari):
        client.force_login(sender)
        content = client.get(person_url(kari)).content.decode()
        assert 'id="revoke-links-button"' in content and f'hx-post="{revoke_url(kari)}"' in content
        assert 'hx-confirm="Revoke every link in the emails sent to this person so far' in content
        assert "Never revoked" in content

    def test_revoking_is_audited_says_so_and_old_links_stop_working(self, client, sender, kari):
        # Staff act at the real time (a session idle for months would have ended).
        with time_machine.travel(timezone.now() - timedelta(minutes=1), tick=False):
            old = manage_path(links.manage_token(kari.pk))
        client.force_login(sender)
        response = client.post(revoke_url(kari))
        assert response.status_code == 302 and response["Location"] == person_url(kari)
        event = AuditEvent.objects.get(action=AuditEvent.Action.LINKS_REVOKED)
        assert event.actor == sender and event.details == {"user_id": kari.pk, "username": "kari"}
        page = client.get(person_url(kari)).content.decode()
        assert "no longer work; the next email has new ones" in page  # the success message
        assert "Never revoked" not in page and "Revoked <time datetime=" in page
        assert client.get(old).status_code == 400

    def test_htmx_is_sent_to_the_page(self, client, sender, kari):
        client.force_login(sender)
        response = client.post(revoke_url(kari), HTTP_HX_REQUEST="true")
        assert response["HX-Redirect"] == person_url(kari)
        assert MessagingProfile.objects.get(user=kari).links_revoked_at is not None

    def test_only_post_and_only_people_who_exist(self, client, sender, kari):
        client.force_login(sender)
        assert client.get(revoke_url(kari)).status_code == 405
        assert client.post(reverse("messaging:person_revoke_links", args=[999_999])).status_code == 404
        assert MessagingProfile.objects.get(user=kari).links_revoked_at is None


# The management command -------------------------------------------------------------------------------


class TestCommand:
    def test_by_username_and_address_audited_as_the_command(self, kari, ola, make_user, capsys):
        bystander = make_user()
        with time_machine.travel(T0, tick=False):
            call_command("messaging_revoke_links", "kari", "OLA@uni.example", "kari")
        assert MessagingProfile.objects.get(user=kari).links_revoked_at == T0
        assert MessagingProfile.objects.get(user=ola).links_revoked_at == T0
        assert MessagingProfile.objects.get(user=bystander).links_revoked_at is None
        events = AuditEvent.objects.filter(action=AuditEvent.Action.LINKS_REVOKED)
        assert sorted(e.details["username"] for e in events) == ["kari", "ola"]  # kari once
        for event in events:
            assert event.actor is None and event.details["source"] == "manage.py messaging_revoke_links"
        assert "kari" in capsys.readouterr().out

    def test_an_unknown_name_exits_non_zero_and_revokes_nobody(self, kari, ola):
        with pytest.raises(CommandError, match=r"nobody@uni\.example") as failed:
            call_command("messaging_revoke_links", "kari", "nobody@uni.example", "ola")
        assert failed.value.returncode != 0  # what manage.py exits with
        assert not MessagingProfile.objects.filter(links_revoked_at__isnull=False).exists()
        assert not AuditEvent.objects.filter(action=AuditEvent.Action.LINKS_REVOKED).exists()

    def test_an_address_shared_by_two_users_revokes_nobody(self, make_user):
        make_user(email="shared@uni.example")
        make_user(email="shared@uni.example")
        with pytest.raises(CommandError, match="More than one"):
            call_command("messaging_revoke_links", "shared@uni.example")
        assert not MessagingProfile.objects.filter(links_revoked_at__isnull=False).exists()


# Key rotation -----------------------------------------------------------------------------------------

OLD_KEY = "old-key-" + "o" * 50
NEW_KEY = "new-key-" + "n" * 50


@pytest.mark.parametrize("purpose", [links.MANAGE, links.ONE_CLICK, links.READ])
def test_a_link_signed_with_a_retired_key_works_while_the_key_is_a_fallback(client, kari, purpose):
    receiver = make_receiver(kari)
    with override_settings(SECRET_KEY=OLD_KEY):
        token = tokens_of(kari, receiver)[purpose]
    path = {links.MANAGE: manage_path, links.ONE_CLICK: one_click_path, links.READ: read_path}[purpose](token)
    with override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY]):
        assert client.get(path).status_code == 200
    with override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[]):
        response = client.get(path)
        assert response.status_code == 400 and NOT_VALID in response.content.decode()
