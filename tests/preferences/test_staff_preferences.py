"""Recipients decide (staff side): how preferences settle each receiver through the real prepare
path, what the status, receiver and person pages say about skipped and held receivers, the
"important" flag on the compose form (permission, audit, duplicate), the compose summary's
delivery modes, and the admin of context type settings, preferences and time zones."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from messaging.compose import composing
from messaging.engine import resending, status, transitions
from messaging.models import (
    AuditEvent,
    ContextTypeSetting,
    DeliveryMode,
    Message,
    MessageReceiver,
    MessagingProfile,
    NotificationPreference,
)
from messaging.tracking import status_labels
from tests.conftest import grant
from tests.engine_helpers import SEND_ARGS, LanguageSubject

pytestmark = pytest.mark.django_db

S = MessageReceiver.Status
STAFF_PERMS = ["view_message", "compose_message", "send_message", "resend_message"]
HTMX = {"HTTP_HX_REQUEST": "true"}


def draft_for(users, **fields) -> Message:
    return Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]}, **fields)


def send(message: Message) -> Message:
    message.prepare_and_send(LanguageSubject(), **SEND_ARGS)
    message.refresh_from_db()
    return message


def prefer(user, context_type: str, mode: str) -> None:
    # Stored directly: set_mode refuses enforced types, and a row may predate a type being enforced.
    NotificationPreference.objects.create(user=user, context_type=context_type, mode=mode)


def statuses(message: Message) -> dict[int, str]:
    return dict(message.receivers.values_list("user_id", "status"))


@pytest.fixture
def people(make_user):
    """Five users and how each wants comments: off, daily, weekly, immediately, nothing chosen."""
    users = {name: make_user(username=name) for name in ("off", "daily", "weekly", "now", "default")}
    for name in ("off", "daily", "weekly"):
        prefer(users[name], "comment", name)
    prefer(users["now"], "comment", DeliveryMode.IMMEDIATELY)
    return users


@pytest.fixture
def staff(make_user):
    staff = make_user(is_staff=True, username="important_staff", first_name="Ida", last_name="Important")
    return grant(staff, *STAFF_PERMS, "ignore_preferences")


@pytest.fixture
def plain_staff(make_user):
    return grant(make_user(is_staff=True, username="plain_staff"), *STAFF_PERMS)


# The engine: preferences applied while preparing ----------------------------------------------------


class TestPreparing:
    def test_each_users_choice_for_an_optional_type(self, people, scripted_channel):
        message = send(draft_for(people.values(), context_type="comment"))
        got = statuses(message)
        assert got[people["off"].pk] == S.SKIPPED
        assert got[people["daily"].pk] == got[people["weekly"].pk] == S.HELD
        assert got[people["now"].pk] == got[people["default"].pk] == S.SENT
        assert sorted(scripted_channel.attempted) == sorted([people["now"].email, people["default"].email])
        held = message.receivers.filter(status=S.HELD)
        assert all(r.next_attempt_datetime and r.next_attempt_datetime > timezone.now() for r in held)
        assert not message.receivers.filter(status=S.SKIPPED, sent_datetime__isnull=False).exists()

    def test_skipped_and_held_are_not_failures(self, people, scripted_channel):
        message = send(draft_for(people.values(), context_type="comment"))
        assert message.status == Message.Status.SENT
        counts = status.receiver_counts(message.pk)
        assert (counts[S.SKIPPED], counts[S.HELD], counts[S.SENT]) == (1, 2, 2)
        assert status.not_delivered(counts, {}) == 0
        assert status_labels.message_label(message.status, 5, 0).key == "sent"
        assert not MessageReceiver.objects.filter(message=message).resendable().exists()
        assert resending.resend_failed(message) == 0
        assert statuses(message)[people["off"].pk] == S.SKIPPED

    def test_an_enforced_type_reaches_everyone_immediately(self, people, scripted_channel):
        for user in people.values():
            prefer(user, "deadline_moved", DeliveryMode.OFF)
        message = send(draft_for(people.values(), context_type="deadline_moved"))
        assert set(statuses(message).values()) == {S.SENT}
        assert len(scripted_channel.attempted) == 5

    def test_the_admins_default_applies_to_those_who_chose_nothing(self, people, make_user, scripted_channel):
        ContextTypeSetting.objects.create(context_type="comment", default_mode=DeliveryMode.DAILY)
        message = send(draft_for(people.values(), context_type="comment"))
        got = statuses(message)
        assert got[people["default"].pk] == S.HELD
        assert got[people["now"].pk] == S.SENT  # their own choice wins over the default
        assert got[people["off"].pk] == S.SKIPPED

    def test_enforcing_a_type_in_the_admin_overrides_off(self, people, scripted_channel):
        ContextTypeSetting.objects.create(
            context_type="comment", default_mode=DeliveryMode.IMMEDIATELY, enforced=True
        )
        message = send(draft_for(people.values(), context_type="comment"))
        assert set(statuses(message).values()) == {S.SENT}

    def test_an_important_message_ignores_everyones_choice(self, people, scripted_channel):
        message = send(draft_for(people.values(), context_type="comment", ignore_preferences=True))
        assert set(statuses(message).values()) == {S.SENT}
        assert message.status == Message.Status.SENT


# Status, receiver and person pages -------------------------------------------------------------------


@pytest.fixture
def preferred_send(people, scripted_channel):
    return send(draft_for(people.values(), context_type="comment"))


def receiver_of(message: Message, user) -> MessageReceiver:
    return message.receivers.get(user=user)


def count_on(content: str, name: str) -> str:
    return re.search(rf'id="count-{name}">(\d+)<', content).group(1)


class TestStatusPage:
    def test_counts_say_skipped_and_held_and_the_send_succeeded(self, staff_client, preferred_send):
        content = staff_client.get(
            reverse("messaging:message_status", args=[preferred_send.pk])
        ).content.decode()
        assert (count_on(content, "skipped"), count_on(content, "held"), count_on(content, "sent")) == (
            "1",
            "2",
            "2",
        )
        assert 'id="message-status" data-status="sent" data-label="sent"' in content
        assert "not delivered" not in content
        assert 'id="resend-all-failed"' not in content
        assert 'id="preference-note"' in content

    def test_a_send_without_preferences_shows_no_preference_counts(
        self, staff_client, make_user, scripted_channel
    ):
        message = send(draft_for([make_user()], context_type="comment"))
        content = staff_client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert 'id="count-skipped"' not in content and 'id="preference-note"' not in content

    @pytest.mark.parametrize(("chosen", "expected"), [("skipped", {"off"}), ("held", {"daily", "weekly"})])
    def test_filter_by_skipped_and_held(self, staff_client, preferred_send, people, chosen, expected):
        url = reverse("messaging:message_status", args=[preferred_send.pk])
        content = staff_client.get(url, {"status": chosen}, **HTMX).content.decode()
        shown = set(map(int, re.findall(r'data-receiver-id="(\d+)"', content)))
        assert shown == {receiver_of(preferred_send, people[name]).pk for name in expected}
        assert re.search(rf'id="receiver-match-count" data-count="{len(expected)}"', content)
        assert f'data-label="{chosen}"' in content

    def test_held_rows_say_when_the_digest_is_due(self, staff_client, preferred_send):
        content = staff_client.get(
            reverse("messaging:message_status", args=[preferred_send.pk])
        ).content.decode()
        assert content.count('data-testid="digest-due"') == 2

    def test_the_filter_offers_both_states(self, staff_client, preferred_send):
        content = staff_client.get(
            reverse("messaging:message_status", args=[preferred_send.pk])
        ).content.decode()
        assert '<option value="skipped">Skipped by preference</option>' in content
        assert '<option value="held">Held for digest</option>' in content

    def test_an_important_message_says_so(self, staff_client, make_user, scripted_channel):
        message = send(draft_for([make_user()], context_type="comment", ignore_preferences=True))
        content = staff_client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert 'id="status-important"' in content
        assert "Important: sent regardless of preferences" in content


def digest_for(user, held: list[MessageReceiver], sent: bool) -> MessageReceiver:
    """A digest email of `user` carrying `held` (sent already, or not yet)."""
    message = Message.objects.create(context_type="digest", status=Message.Status.SENDING)
    digest = MessageReceiver.objects.create(
        message=message,
        user=user,
        send_to=user.email,
        subject="Your digest",
        status=S.SENT if sent else S.NOT_SENT,
        sent_datetime=timezone.now() if sent else None,
    )
    held_now = MessageReceiver.objects.filter(pk__in=[r.pk for r in held])
    assert transitions.attach_due_to_digest(message.pk, held_now) == len(held)
    return digest


class TestReceiverPage:
    def test_held_receiver_shows_when_its_digest_is_due(self, staff_client, preferred_send, people):
        held = receiver_of(preferred_send, people["daily"])
        content = staff_client.get(reverse("messaging:receiver_detail", args=[held.pk])).content.decode()
        assert 'data-label="held"' in content
        due = re.search(r'<div class="small" id="digest-due">.*?</div>', content, re.S).group(0)
        assert f'datetime="{timezone.localtime(held.next_attempt_datetime).isoformat()}"' in due

    def test_skipped_receiver_is_explained_and_offers_no_resend(self, staff_client, preferred_send, people):
        skipped = receiver_of(preferred_send, people["off"])
        content = staff_client.get(reverse("messaging:receiver_detail", args=[skipped.pk])).content.decode()
        assert 'data-label="skipped"' in content and 'id="skipped-note"' in content
        assert 'id="resend-receiver"' not in content

    def test_held_receiver_links_to_its_digest_and_the_digest_lists_it(
        self, staff_client, preferred_send, people
    ):
        held = receiver_of(preferred_send, people["daily"])
        digest = digest_for(people["daily"], [held], sent=False)
        content = staff_client.get(reverse("messaging:receiver_detail", args=[held.pk])).content.decode()
        assert 'data-label="in_digest"' in content
        assert reverse("messaging:receiver_detail", args=[digest.pk]) in content
        digest_page = staff_client.get(
            reverse("messaging:receiver_detail", args=[digest.pk])
        ).content.decode()
        assert f'data-receiver-id="{held.pk}"' in digest_page

    def test_once_the_digest_went_out_the_receiver_is_sent_in_it(self, staff_client, preferred_send, people):
        held = receiver_of(preferred_send, people["daily"])
        digest_for(people["daily"], [held], sent=True)
        transitions.settle_digests()
        held.refresh_from_db()
        assert held.status == S.SENT
        content = staff_client.get(reverse("messaging:receiver_detail", args=[held.pk])).content.decode()
        assert 'data-label="sent_in_digest"' in content
        status_page = staff_client.get(reverse("messaging:message_status", args=[preferred_send.pk]))
        assert 'id="count-sent-in-digests" data-count="1"' in status_page.content.decode()


class TestPersonPage:
    def test_lists_how_the_person_gets_each_type(self, staff_client, people):
        content = staff_client.get(
            reverse("messaging:person_detail", args=[people["off"].pk])
        ).content.decode()
        assert 'data-context-type="comment" data-mode="off"' in content
        assert 'data-context-type="deadline_moved" data-mode="immediately"' in content
        assert 'data-context-type="digest"' not in content

    def test_skipped_and_held_are_filters_there_too(self, staff_client, preferred_send, people):
        url = reverse("messaging:person_detail", args=[people["off"].pk])
        content = staff_client.get(url, {"status": "skipped"}, **HTMX).content.decode()
        assert f'data-receiver-id="{receiver_of(preferred_send, people["off"]).pk}"' in content


# Important: ignore preferences ---------------------------------------------------------------------


def compose_data(user_ids, **overrides) -> dict:
    data = {
        "context_type": "comment",
        "subject_en": "Exam moved",
        "body_en": "<p>To Friday</p>",
        "subject_nb": "",
        "body_nb": "",
        "users": [str(pk) for pk in user_ids],
    }
    data.update(overrides)
    return data


def actions_of(message: Message) -> list[str]:
    return list(message.audit_events.order_by("id").values_list("action", flat=True))


class TestImportant:
    def test_staff_with_the_permission_see_the_checkbox(self, client, staff):
        client.force_login(staff)
        content = client.get(reverse("messaging:message_create")).content.decode()
        assert 'name="ignore_preferences"' in content
        assert "Important: deliver to everyone immediately, ignoring their preferences" in content

    def test_marking_and_unmarking_are_saved_and_audited(self, client, staff, people):
        client.force_login(staff)
        client.post(
            reverse("messaging:message_create"), compose_data([people["off"].pk], ignore_preferences="on")
        )
        message = Message.objects.get()
        assert message.ignore_preferences is True
        assert actions_of(message) == [AuditEvent.Action.CREATED, AuditEvent.Action.MARKED_IMPORTANT]
        assert message.audit_events.get(action=AuditEvent.Action.MARKED_IMPORTANT).actor == staff

        edit = reverse("messaging:message_edit", args=[message.pk])
        client.post(
            edit, compose_data([people["off"].pk], subject_en="Exam moved again", ignore_preferences="on")
        )
        assert actions_of(message)[-1] == AuditEvent.Action.EDITED  # still important: no new mark
        client.post(edit, compose_data([people["off"].pk]))
        message.refresh_from_db()
        assert message.ignore_preferences is False
        assert actions_of(message)[-2:] == [AuditEvent.Action.EDITED, AuditEvent.Action.UNMARKED_IMPORTANT]

    def test_without_the_permission_there_is_no_checkbox_and_a_posted_one_is_ignored(
        self, client, plain_staff, people
    ):
        client.force_login(plain_staff)
        assert (
            'name="ignore_preferences"'
            not in client.get(reverse("messaging:message_create")).content.decode()
        )
        response = client.post(
            reverse("messaging:message_create"), compose_data([people["off"].pk], ignore_preferences="on")
        )
        assert response.status_code == 302
        message = Message.objects.get()
        assert message.ignore_preferences is False
        assert AuditEvent.Action.MARKED_IMPORTANT not in actions_of(message)

    def test_without_the_permission_a_colleagues_mark_is_kept_and_shown(
        self, client, staff, plain_staff, people
    ):
        message = composing.save_draft(
            Message(
                context_type="comment",
                composed_content={"en": {"subject": "S", "body": "<p>B</p>"}},
                virtual_message_receivers={"chosen_user_ids": [people["off"].pk], "group_ids": []},
                ignore_preferences=True,
            ),
            staff,
        )
        client.force_login(plain_staff)
        edit = reverse("messaging:message_edit", args=[message.pk])
        assert 'id="important-note"' in client.get(edit).content.decode()
        client.post(edit, compose_data([people["off"].pk], subject_en="Changed"))
        message.refresh_from_db()
        assert message.ignore_preferences is True
        assert AuditEvent.Action.UNMARKED_IMPORTANT not in actions_of(message)

    def test_the_service_refuses_a_change_by_someone_without_the_permission(self, plain_staff):
        draft = Message(
            composed_content={"en": {"subject": "S", "body": "<p>B</p>"}}, ignore_preferences=True
        )
        with pytest.raises(composing.ImportantNotAllowed):
            composing.save_draft(draft, plain_staff)
        assert not Message.objects.exists()
        assert composing.save_draft(
            Message(composed_content={"en": {"subject": "S", "body": "<p>B</p>"}}, ignore_preferences=True)
        ).ignore_preferences  # code (no actor) may

    def test_the_draft_preview_and_send_pages_say_so(self, client, staff, people):
        client.force_login(staff)
        client.post(
            reverse("messaging:message_create"), compose_data([people["off"].pk], ignore_preferences="on")
        )
        message = Message.objects.get()
        preview = client.get(reverse("messaging:message_preview", args=[message.pk])).content.decode()
        assert 'id="important-note"' in preview and 'data-everyone-immediately="important"' in preview
        send_page = client.get(reverse("messaging:message_send", args=[message.pk])).content.decode()
        assert 'id="send-important"' in send_page
        edit = client.get(reverse("messaging:message_edit", args=[message.pk])).content.decode()
        assert re.search(r'<input type="checkbox"[^>]*name="ignore_preferences"[^>]*checked', edit)

    @pytest.mark.parametrize(("who", "kept"), [("staff", True), ("plain_staff", False)])
    def test_duplicate_keeps_the_mark_only_for_staff_who_may_set_it(
        self, request, client, staff, people, who, kept
    ):
        original = draft_for([people["off"]], ignore_preferences=True)
        actor = request.getfixturevalue(who)
        client.force_login(actor)
        client.post(reverse("messaging:message_duplicate", args=[original.pk]))
        copy = Message.objects.exclude(pk=original.pk).get()
        assert copy.ignore_preferences is kept
        assert (AuditEvent.Action.MARKED_IMPORTANT in actions_of(copy)) is kept


# The compose summary --------------------------------------------------------------------------------


def summary(client, **params) -> str:
    response = client.get(reverse("messaging:recipient_summary"), params, **HTMX)
    assert response.status_code == 200
    return response.content.decode()


class TestSummary:
    def test_counts_how_each_recipient_gets_the_chosen_type(self, client, staff, people):
        client.force_login(staff)
        content = summary(client, users=[u.pk for u in people.values()], context_type="comment")
        assert 'data-immediately="2" data-digest="2" data-off="1"' in content
        assert "2 get it immediately" in content and "2 in a digest" in content
        assert "1 has turned this type off (they will not get it)" in content

    def test_groups_count_too_and_an_admin_default_changes_the_counts(self, client, staff, people):
        group = Group.objects.create(name="INF1000")
        group.user_set.add(*people.values())
        ContextTypeSetting.objects.create(context_type="comment", default_mode=DeliveryMode.WEEKLY)
        client.force_login(staff)
        content = summary(client, groups=[group.pk], context_type="comment")
        assert 'data-immediately="1" data-digest="3" data-off="1"' in content

    def test_an_enforced_type_reaches_everyone(self, client, staff, people):
        client.force_login(staff)
        content = summary(client, users=[people["off"].pk], context_type="deadline_moved")
        assert 'data-everyone-immediately="enforced"' in content
        assert "Everyone gets it immediately: this type cannot be turned off." in content

    def test_an_important_message_reaches_everyone(self, client, staff, people):
        client.force_login(staff)
        content = summary(client, users=[people["off"].pk], context_type="comment", ignore_preferences="on")
        assert 'data-everyone-immediately="important"' in content
        assert "Everyone gets it immediately: marked important." in content

    @pytest.mark.parametrize("context_type", ["", "digest", "no_such_type"])
    def test_no_usable_type_leaves_the_modes_out(self, client, staff, people, context_type):
        client.force_login(staff)
        content = summary(client, users=[people["off"].pk], context_type=context_type)
        assert 'id="delivery-modes"' not in content and 'data-count="1"' in content

    def test_the_compose_page_asks_again_when_type_or_importance_changes(self, client, staff, people):
        client.force_login(staff)
        client.post(reverse("messaging:message_create"), compose_data([people["off"].pk, people["daily"].pk]))
        message = Message.objects.get()
        content = client.get(reverse("messaging:message_edit", args=[message.pk])).content.decode()
        tag = re.search(r'<div id="recipient-summary"[^>]*>', content).group(0)
        assert "change from:#id_context_type" in tag and "change from:#id_ignore_preferences" in tag
        assert "#id_context_type" in re.search(r'hx-include="([^"]*)"', tag).group(1)
        assert 'data-immediately="0" data-digest="1" data-off="1"' in content

    def test_the_send_page_shows_the_modes(self, client, staff, people):
        client.force_login(staff)
        client.post(reverse("messaging:message_create"), compose_data([u.pk for u in people.values()]))
        message = Message.objects.get()
        content = client.get(reverse("messaging:message_send", args=[message.pk])).content.decode()
        assert 'data-immediately="2" data-digest="2" data-off="1"' in content

    def test_compose_offers_no_engine_made_type(self, client, staff):
        client.force_login(staff)
        content = client.get(reverse("messaging:message_create")).content.decode()
        offered = set(
            re.findall(
                r'<option value="([^"]+)"',
                re.search(r'<select name="context_type".*?</select>', content, re.S).group(0),
            )
        )
        assert {"comment", "deadline_moved", "other"} <= offered
        assert "digest" not in offered


# Admin ----------------------------------------------------------------------------------------------


class TestAdmin:
    @pytest.mark.parametrize("model", ["contexttypesetting", "notificationpreference"])
    def test_changelist_and_add_pages_load(self, admin_client, people, model):
        ContextTypeSetting.objects.create(context_type="feedback", default_mode=DeliveryMode.DAILY)
        assert admin_client.get(reverse(f"admin:messaging_{model}_changelist")).status_code == 200
        assert admin_client.get(reverse(f"admin:messaging_{model}_add")).status_code == 200

    def test_context_type_setting_offers_the_registry_and_explains_itself(self, admin_client):
        content = admin_client.get(reverse("admin:messaging_contexttypesetting_add")).content.decode()
        assert '<option value="feedback_updated">' in content
        assert '<option value="digest">' not in content  # made by the engine, always immediate
        assert "overrides the default the code gives this type" in content

    def test_a_setting_saved_in_the_admin_applies(self, admin_client):
        response = admin_client.post(
            reverse("admin:messaging_contexttypesetting_add"),
            {"context_type": "comment", "label": "Comments", "default_mode": "daily"},
        )
        assert response.status_code == 302
        from messaging.preferences import context_types

        config = context_types.get("comment")
        assert (config.label, config.default_mode, config.enforced) == ("Comments", "daily", False)

    def test_the_digest_type_cannot_be_changed_there(self, admin_client):
        response = admin_client.post(
            reverse("admin:messaging_contexttypesetting_add"),
            {"context_type": "digest", "default_mode": "daily"},
        )
        assert response.status_code == 200 and not ContextTypeSetting.objects.exists()

    def test_preferences_are_listed_and_searchable_by_user(self, admin_client, people):
        url = reverse("admin:messaging_notificationpreference_changelist")
        content = admin_client.get(url, {"q": "weekly"}).content.decode()
        assert "weekly" in content and ">off<" not in content

    def test_time_zone_is_editable_and_checked(self, admin_client, people):
        profile = MessagingProfile.objects.get(user=people["off"])
        url = reverse("admin:messaging_messagingprofile_change", args=[profile.pk])
        refused = admin_client.post(url, {"time_zone": "Mars/Olympus"})
        assert refused.status_code == 200
        assert "is not a time zone name" in refused.content.decode()
        profile.refresh_from_db()
        assert profile.time_zone == ""
        assert admin_client.post(url, {"time_zone": "America/New_York"}).status_code == 302
        profile.refresh_from_db()
        assert profile.time_zone == "America/New_York"
        assert profile.languagecode == "en"  # read-only here

    def test_the_message_admin_shows_importance_read_only(self, admin_client, people):
        message = draft_for([people["off"]], ignore_preferences=True)
        content = admin_client.get(
            reverse("admin:messaging_message_change", args=[message.pk])
        ).content.decode()
        assert "important: ignore preferences" in content.lower()
        assert 'name="ignore_preferences"' not in content
