"""The Django admin: changelists, search, filters, read-only content and the resend actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from messaging.admin import status_page_url
from messaging.models import AuditEvent, Message, MessageReceiver, MessagingProfile, UserEmail

pytestmark = pytest.mark.django_db

MESSAGE_CHANGELIST = reverse("admin:messaging_message_changelist")
RECEIVER_CHANGELIST = reverse("admin:messaging_messagereceiver_changelist")
S = MessageReceiver.Status


def make_message(subject="Exam moved", status=Message.Status.ERROR, **fields) -> Message:
    fields.setdefault(
        "composed_content",
        {
            "en": {"subject": subject, "body": "<p>Hello</p>"},
            "nb": {"subject": "Eksamen", "body": "<p>Hei</p>"},
        },
    )
    return Message.objects.create(status=status, message_type=["email"], **fields)


def make_receiver(message, user, status=S.NOT_SENT, **fields) -> MessageReceiver:
    fields.setdefault("send_to", user.email)
    fields.setdefault("subject", message.display_subject)
    fields.setdefault("message_content_html", "<p>Hello</p>")
    fields.setdefault("message_content_plain", "Hello")
    fields.setdefault("language", "en")
    if status in (S.FAILED, S.ERROR):
        fields.setdefault("sending_failed_count", 1 if status == S.FAILED else 3)
        fields.setdefault("status_data", {"errors": [{"error_message": "451 Try again later"}]})
    if status == S.SENT:
        fields.setdefault("sending_success_count", 1)
        fields.setdefault("sent_datetime", timezone.now())
    return MessageReceiver.objects.create(message=message, user=user, status=status, **fields)


def rows(response) -> list:
    assert response.status_code == 200, response.content[:2000]
    return list(response.context["cl"].result_list)


def action(client, url, name, objects, capture):
    with capture(execute=True):
        return client.post(
            url,
            {"action": name, "_selected_action": [o.pk for o in objects], "index": 0},
            follow=True,
        )


def page_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.fixture
def mixed(make_user):
    """One message with a sent, a failed and an error receiver, and a draft."""
    alice = make_user(username="alice", email="alice@example.org")
    bob = make_user(username="bob", email="bob@example.org", language="nb")
    carol = make_user(username="carol", email="carol@example.org")
    message = make_message()
    sent = make_receiver(message, alice, S.SENT)
    failed = make_receiver(message, bob, S.FAILED, language="nb", subject="Eksamen")
    error = make_receiver(message, carol, S.ERROR)
    draft = make_message(subject="Welcome party", status=Message.Status.DRAFT, context_type="comment")
    return {"message": message, "sent": sent, "failed": failed, "error": error, "draft": draft}


class TestChangelists:
    @pytest.mark.parametrize(
        "model", ["message", "messagereceiver", "messagingprofile", "useremail", "auditevent"]
    )
    def test_changelist_loads(self, admin_client, mixed, model):
        UserEmail.objects.create(user=mixed["sent"].user, email="alt@example.org", is_primary=True)
        AuditEvent.objects.create(message=mixed["message"], action=AuditEvent.Action.SENT)
        response = admin_client.get(reverse(f"admin:messaging_{model}_changelist"))
        assert response.status_code == 200
        assert rows(response)

    def test_message_columns(self, admin_client, mixed):
        response = admin_client.get(MESSAGE_CHANGELIST)
        by_id = {m.pk: m for m in rows(response)}
        message = by_id[mixed["message"].pk]
        assert (message.n_receivers, message.n_sent, message.n_failed) == (3, 1, 2)
        assert (by_id[mixed["draft"].pk].n_receivers, by_id[mixed["draft"].pk].n_failed) == (0, 0)
        content = response.content.decode()
        assert "Exam moved" in content and "Welcome party" in content
        assert f"?message__id__exact={mixed['message'].pk}" in content

    def test_receiver_count_links_filter_receivers(self, admin_client, mixed):
        other = make_message(subject="Other")
        make_receiver(other, mixed["sent"].user, S.FAILED)
        pk = mixed["message"].pk
        response = admin_client.get(
            RECEIVER_CHANGELIST, {"message__id__exact": pk, "status__in": "failed,error"}
        )
        assert {r.pk for r in rows(response)} == {mixed["failed"].pk, mixed["error"].pk}

    def test_change_pages_load(self, admin_client, mixed):
        AuditEvent.objects.create(message=mixed["message"], actor=mixed["sent"].user, action="sent")
        for url in [
            reverse("admin:messaging_message_change", args=[mixed["message"].pk]),
            reverse("admin:messaging_messagereceiver_change", args=[mixed["error"].pk]),
        ]:
            response = admin_client.get(url)
            assert response.status_code == 200
        assert "451 Try again later" in response.content.decode()

    def test_status_page_link_when_available(self, admin_client, mixed):
        content = admin_client.get(MESSAGE_CHANGELIST).content.decode()
        url = status_page_url(mixed["message"].pk)
        if url is None:  # the staff UI has not named the page yet: the admin still works
            assert "live status" not in content
        else:
            assert url in content

    @pytest.mark.parametrize("changelist", [MESSAGE_CHANGELIST, RECEIVER_CHANGELIST])
    def test_no_query_per_row(self, admin_client, make_user, changelist):
        def count_queries() -> int:
            with CaptureQueriesContext(connection) as ctx:
                assert admin_client.get(changelist).status_code == 200
            return len(ctx.captured_queries)

        def add_rows(n):
            for _ in range(n):
                user = make_user()
                make_receiver(make_message(created_by=user), user, S.FAILED)

        add_rows(2)
        few = count_queries()
        add_rows(10)
        assert count_queries() == few


class TestSearch:
    def search(self, client, url, term) -> set[int]:
        return {o.pk for o in rows(client.get(url, {"q": term}))}

    def test_receivers_by_address_username_subject(self, admin_client, mixed):
        assert self.search(admin_client, RECEIVER_CHANGELIST, "bob@example") == {mixed["failed"].pk}
        assert self.search(admin_client, RECEIVER_CHANGELIST, "carol") == {mixed["error"].pk}
        assert self.search(admin_client, RECEIVER_CHANGELIST, "Eksamen") == {mixed["failed"].pk}
        assert self.search(admin_client, RECEIVER_CHANGELIST, "nobody-here") == set()

    def test_receivers_by_user_email_not_send_to(self, admin_client, mixed):
        mixed["sent"].send_to = "somewhere@else.example"
        mixed["sent"].save()
        assert self.search(admin_client, RECEIVER_CHANGELIST, "alice@example.org") == {mixed["sent"].pk}

    def test_messages_by_content_and_id(self, admin_client, mixed):
        assert self.search(admin_client, MESSAGE_CHANGELIST, "welcome PARTY") == {mixed["draft"].pk}
        assert self.search(admin_client, MESSAGE_CHANGELIST, "Eksamen") == {
            mixed["message"].pk,
            mixed["draft"].pk,
        }
        assert self.search(admin_client, MESSAGE_CHANGELIST, str(mixed["draft"].pk)) >= {mixed["draft"].pk}

    def test_messages_by_non_ascii_content(self, admin_client, mixed):
        mixed["draft"].composed_content["nb"]["body"] = "<p>Første forelesning på mandag</p>"
        mixed["draft"].save()
        assert self.search(admin_client, MESSAGE_CHANGELIST, "første forelesning") == {mixed["draft"].pk}
        assert self.search(admin_client, MESSAGE_CHANGELIST, "på mandag") == {mixed["draft"].pk}

    def test_messages_by_error_text(self, admin_client, mixed):
        mixed["message"].status_data = {"errors": [{"error_message": "TemplateSyntaxError: boom"}]}
        mixed["message"].save()
        assert self.search(admin_client, MESSAGE_CHANGELIST, "templatesyntaxerror") == {mixed["message"].pk}


class TestFilters:
    def filtered(self, client, url, **params) -> set[int]:
        return {o.pk for o in rows(client.get(url, params))}

    def test_receiver_status_and_language(self, admin_client, mixed):
        assert self.filtered(admin_client, RECEIVER_CHANGELIST, status="failed") == {mixed["failed"].pk}
        assert self.filtered(admin_client, RECEIVER_CHANGELIST, language="nb") == {mixed["failed"].pk}
        assert self.filtered(admin_client, RECEIVER_CHANGELIST, language="en") == {
            mixed["sent"].pk,
            mixed["error"].pk,
        }

    def test_receiver_message_type_and_context(self, admin_client, mixed):
        assert len(self.filtered(admin_client, RECEIVER_CHANGELIST, message_type="email")) == 3
        assert self.filtered(admin_client, RECEIVER_CHANGELIST, message__context_type="comment") == set()

    def test_message_status_context_and_type(self, admin_client, mixed):
        assert self.filtered(admin_client, MESSAGE_CHANGELIST, status="draft") == {mixed["draft"].pk}
        assert self.filtered(admin_client, MESSAGE_CHANGELIST, context_type="comment") == {mixed["draft"].pk}
        assert self.filtered(admin_client, MESSAGE_CHANGELIST, message_type="email") == {
            mixed["message"].pk,
            mixed["draft"].pk,
        }

    def test_created_date(self, admin_client, mixed):
        old = make_message(subject="Old news", created_datetime=timezone.now() - timedelta(days=40))
        today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
        params = {  # what the filter's "Today" link sends
            "created_datetime__gte": str(today),
            "created_datetime__lt": str(today + timedelta(days=1)),
        }
        assert old.pk not in self.filtered(admin_client, MESSAGE_CHANGELIST, **params)
        assert mixed["message"].pk in self.filtered(admin_client, MESSAGE_CHANGELIST, **params)

    def test_profile_language(self, admin_client, make_user):
        nb = make_user(language="nb")
        make_user(language="en")
        found = self.filtered(
            admin_client, reverse("admin:messaging_messagingprofile_changelist"), language="nb"
        )
        assert found == {MessagingProfile.objects.get(user=nb).pk}


class TestReadOnly:
    def test_receiver_content_cannot_be_changed(self, admin_client, mixed):
        receiver = mixed["failed"]
        url = reverse("admin:messaging_messagereceiver_change", args=[receiver.pk])
        page = admin_client.get(url).content.decode()
        assert 'name="subject"' not in page and 'name="status"' not in page
        response = admin_client.post(url, {"subject": "Hacked", "status": "sent", "send_to": "x@y.org"})
        assert response.status_code == 403
        receiver.refresh_from_db()
        assert (receiver.subject, receiver.status) == ("Eksamen", S.FAILED)

    def test_message_content_cannot_be_changed(self, admin_client, mixed):
        message = mixed["message"]
        url = reverse("admin:messaging_message_change", args=[message.pk])
        assert 'name="status"' not in admin_client.get(url).content.decode()
        assert admin_client.post(url, {"status": "sent"}).status_code == 403
        message.refresh_from_db()
        assert message.status == Message.Status.ERROR

    @pytest.mark.parametrize("model", ["message", "messagereceiver", "auditevent"])
    def test_nothing_is_added_by_hand(self, admin_client, model):
        assert admin_client.get(reverse(f"admin:messaging_{model}_add")).status_code == 403


class TestResendActions:
    def test_receivers_failed_queued_sent_skipped(
        self, admin_client, admin_user, mixed, django_capture_on_commit_callbacks
    ):
        chosen = [mixed["sent"], mixed["failed"], mixed["error"]]
        response = action(
            admin_client, RECEIVER_CHANGELIST, "resend_receivers", chosen, django_capture_on_commit_callbacks
        )
        assert response.status_code == 200
        (text,) = page_messages(response)
        assert "Queued 2 receivers" in text and "skipped 1" in text
        assert sorted(m.to[0] for m in mail.outbox) == ["bob@example.org", "carol@example.org"]
        for receiver in chosen:
            receiver.refresh_from_db()
        assert [r.status for r in chosen] == [S.SENT, S.SENT, S.SENT]
        assert mixed["sent"].sending_success_count == 1  # never sent twice
        mixed["message"].refresh_from_db()
        assert mixed["message"].status == Message.Status.SENT
        events = AuditEvent.objects.filter(action=AuditEvent.Action.RESENT)
        assert {(e.receiver_id, e.actor_id) for e in events} == {
            (mixed["failed"].pk, admin_user.pk),
            (mixed["error"].pk, admin_user.pk),
        }

    def test_receiver_resend_of_only_sent_ones_says_so(
        self, admin_client, mixed, django_capture_on_commit_callbacks
    ):
        response = action(
            admin_client,
            RECEIVER_CHANGELIST,
            "resend_receivers",
            [mixed["sent"]],
            django_capture_on_commit_callbacks,
        )
        (text,) = page_messages(response)
        assert "Queued 0 receivers" in text and "skipped 1" in text
        assert mail.outbox == []

    def test_messages(self, admin_client, admin_user, mixed, django_capture_on_commit_callbacks):
        response = action(
            admin_client,
            MESSAGE_CHANGELIST,
            "resend_failed_receivers",
            [mixed["message"], mixed["draft"]],
            django_capture_on_commit_callbacks,
        )
        (text,) = page_messages(response)
        assert "Queued 2 receivers" in text and "from 1 message" in text and "skipped 1 message" in text
        assert len(mail.outbox) == 2
        mixed["message"].refresh_from_db()
        assert mixed["message"].status == Message.Status.SENT
        event = AuditEvent.objects.get(action=AuditEvent.Action.RESENT_ALL)
        assert (event.message_id, event.actor_id) == (mixed["message"].pk, admin_user.pk)

    def test_resend_that_fails_again_is_recorded(
        self, admin_client, make_user, django_capture_on_commit_callbacks, settings
    ):
        user = make_user(email="")
        message = make_message()
        receiver = make_receiver(message, user, S.ERROR, send_to="")
        action(
            admin_client,
            RECEIVER_CHANGELIST,
            "resend_receivers",
            [receiver],
            django_capture_on_commit_callbacks,
        )
        receiver.refresh_from_db()
        assert receiver.status == S.ERROR
        assert receiver.sending_failed_count == 4
        assert "no email address" in receiver.errors[-1]["error_message"]

    def test_staff_without_resend_permission_has_no_action(self, client, make_user, mixed):
        staff = make_user(is_staff=True)
        staff.user_permissions.add(*Permission.objects.filter(codename="view_messagereceiver"))
        client.force_login(staff)
        response = client.get(RECEIVER_CHANGELIST)
        assert response.status_code == 200
        assert "resend_receivers" not in response.content.decode()
        staff.user_permissions.add(Permission.objects.get(codename="resend_message"))
        response = client.get(RECEIVER_CHANGELIST)
        assert "resend_receivers" in response.content.decode()
