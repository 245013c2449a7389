"""manage.py messaging_demo: idempotent demo data that shows every path of the engine."""

from __future__ import annotations

import re
import stat
from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import RequestFactory

from messaging.compose import composing
from messaging.engine import recipients
from messaging.engine.recipients import notification_address
from messaging.models import (
    DeliveryMode,
    Message,
    MessageReceiver,
    MessagingProfile,
    NotificationPreference,
    UserEmail,
)

pytestmark = pytest.mark.django_db
User = get_user_model()
SIGN_IN = re.compile(r"Sign in at http://127\.0\.0\.1:8000/ as staff / (\S+)")


def signs_in(password: str) -> bool:
    """The staff login works with this password (django-axes wants the sign-in's request)."""
    return authenticate(RequestFactory().post("/login/"), username="staff", password=password) is not None


def run_demo(*args) -> str:
    out = StringIO()
    call_command("messaging_demo", *args, stdout=out)
    return out.getvalue()


def snapshot() -> dict:
    return {
        "users": sorted(User.objects.values_list("username", "first_name", "last_name", "email")),
        "profiles": sorted(MessagingProfile.objects.values_list("user__username", "languagecode")),
        "emails": sorted(UserEmail.objects.values_list("user__username", "email", "is_primary")),
        "groups": sorted(Group.objects.values_list("name", "user__username")),
        "messages": sorted(Message.objects.values_list("id", "status", "metadata")),
        "preferences": sorted(
            NotificationPreference.objects.values_list("user__username", "context_type", "mode")
        ),
    }


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path, monkeypatch):
    """The kept password lives in VAR_DIR: each test starts without one."""
    settings.VAR_DIR = tmp_path
    monkeypatch.delenv("MESSAGING_DEMO_PASSWORD", raising=False)
    return tmp_path


@pytest.fixture
def demo() -> str:
    return run_demo()


def test_counts(demo):
    assert User.objects.count() == 201
    assert set(Group.objects.values_list("name", flat=True)) >= {
        "INF1000 students",
        "INF1000 examiners",
        "MAT1100 students",
        "Staff",
    }
    for group in Group.objects.all():
        assert group.user_set.exists(), group.name
    assert Message.objects.drafts().count() == 2
    assert "200 users (200 created" in demo


def test_running_twice_changes_nothing(demo):
    before = snapshot()
    output = run_demo()
    assert snapshot() == before
    assert "0 created, 0 updated" in output and "(0 created)" in output


def test_rerun_restores_changed_demo_users(demo):
    before = snapshot()
    several = UserEmail.objects.filter(is_primary=True).exclude(email__endswith=".example").first().user
    several.messaging_emails.filter(is_primary=True).delete()
    UserEmail.objects.create(user=several, email="extra@example.org")
    several.email = "changed@example.org"
    several.save()
    MessagingProfile.objects.filter(user=several).update(languagecode="xx")
    run_demo()
    after = snapshot()
    assert after["users"] == before["users"]
    assert after["profiles"] == before["profiles"]
    assert [e[1:] for e in after["emails"]] == [e[1:] for e in before["emails"]]


def test_some_students_chose_digests_or_turned_a_type_off(demo):
    chosen = set(NotificationPreference.objects.values_list("context_type", "mode"))
    assert chosen == {
        (Message.ContextType.FEEDBACK, DeliveryMode.DAILY),
        (Message.ContextType.COMMENT, DeliveryMode.WEEKLY),
        (Message.ContextType.OTHER, DeliveryMode.OFF),
    }
    assert NotificationPreference.objects.filter(user__is_staff=True).count() == 0
    NotificationPreference.objects.filter(mode=DeliveryMode.OFF).update(mode=DeliveryMode.WEEKLY)
    before = NotificationPreference.objects.count()
    run_demo()
    assert NotificationPreference.objects.count() == before
    assert NotificationPreference.objects.filter(mode=DeliveryMode.OFF).count() > 0


def test_languages_are_mixed(demo):
    languages = list(
        MessagingProfile.objects.exclude(user__username="staff").values_list("languagecode", flat=True)
    )
    assert languages.count("en") >= 40
    assert languages.count("nb") >= 40
    assert len(languages) == 200


def test_names_are_realistic(demo):
    user = User.objects.exclude(username="staff").order_by("pk").first()
    assert user.first_name and user.last_name
    assert user.username == user.username.lower() and user.username.isascii()
    assert any(not name.isascii() for name in User.objects.values_list("first_name", flat=True)) or any(
        not name.isascii() for name in User.objects.values_list("last_name", flat=True)
    )


def test_addresses_show_every_path(demo):
    users = User.objects.exclude(username="staff").prefetch_related("messaging_emails")
    addresses = [notification_address(u) for u in users]
    no_address = [u for u in users if not u.email and not u.messaging_emails.all()]
    several = [u for u in users if len(u.messaging_emails.all()) > 1]
    assert len(no_address) >= 2
    assert len(several) >= 2
    for user in several:
        assert sum(e.is_primary for e in user.messaging_emails.all()) == 1
    assert sum(a.endswith("@tempfail.example") for a in addresses) >= 2
    assert sum(a.endswith("@bounce.example") for a in addresses) >= 2


def test_staff_password_is_random_printed_and_the_same_on_the_next_run(demo, var_dir):
    (first,) = SIGN_IN.findall(demo)
    assert len(first) >= 16
    assert signs_in(first)
    staff = User.objects.get(username="staff")
    assert staff.is_staff and staff.is_superuser
    kept = var_dir / "demo-staff-password"
    assert kept.read_text() == first
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert f"kept in {kept} for the next run" in demo

    (second,) = SIGN_IN.findall(run_demo())
    assert second == first
    # Not even re-hashed: a browser signed in before the run stays signed in.
    assert User.objects.get(username="staff").password == staff.password
    assert [p.name for p in var_dir.iterdir()] == ["demo-staff-password"]


def test_a_new_checkout_gets_its_own_password(demo, var_dir):
    (first,) = SIGN_IN.findall(demo)
    (var_dir / "demo-staff-password").unlink()
    (second,) = SIGN_IN.findall(run_demo())
    assert second != first
    assert signs_in(second)
    assert not signs_in(first)


def test_a_changed_password_is_restored(demo):
    (password,) = SIGN_IN.findall(demo)
    staff = User.objects.get(username="staff")
    staff.set_password("changed-in-the-admin")
    staff.save()
    run_demo()
    assert signs_in(password)


def test_password_from_the_environment_is_used_and_kept(monkeypatch, var_dir):
    monkeypatch.setenv("MESSAGING_DEMO_PASSWORD", "correct-horse-battery")
    assert SIGN_IN.findall(run_demo()) == ["correct-horse-battery"]
    assert signs_in("correct-horse-battery")
    monkeypatch.delenv("MESSAGING_DEMO_PASSWORD")
    assert SIGN_IN.findall(run_demo()) == ["correct-horse-battery"]
    assert (var_dir / "demo-staff-password").read_text() == "correct-horse-battery"


def test_fixed_password_option_wins_and_is_kept(monkeypatch):
    monkeypatch.setenv("MESSAGING_DEMO_PASSWORD", "from-the-environment")
    output = run_demo("--password", "correct-horse-battery")
    assert "as staff / correct-horse-battery" in output
    assert signs_in("correct-horse-battery")
    monkeypatch.delenv("MESSAGING_DEMO_PASSWORD")
    assert SIGN_IN.findall(run_demo()) == ["correct-horse-battery"]


def test_drafts_have_content_and_recipients(demo):
    for message in Message.objects.drafts():
        assert message.composed_content["en"]["subject"]
        assert "{{ recipient_" in message.composed_content["en"]["body"]
        receivers = message.virtual_message_receivers
        assert set(receivers) == {"chosen_user_ids", "group_ids"}
        assert receivers["group_ids"]
        assert recipients.resolved_user_ids(message)
        message.full_clean()
    welcome = Message.objects.get(metadata__demo_sample="inf1000-welcome")
    assert set(welcome.composed_content) == {"en", "nb"}


def test_a_template_to_start_from_valid_in_both_languages_and_kept_once_edited(demo):
    from messaging.compose.forms import sanitize_html
    from messaging.engine.rendering import template_syntax_problems
    from messaging.models import MessageTemplate

    (template,) = MessageTemplate.objects.all()
    assert set(template.composed_content) == {"en", "nb"}
    for content in template.composed_content.values():
        # What the compose form would keep: clean HTML, known placeholders only.
        assert sanitize_html(content["body"]) == content["body"]
        assert template_syntax_problems(content["body"]) == []
    template.composed_content["en"]["subject"] = "Edited by staff"
    template.save()
    run_demo()
    assert MessageTemplate.objects.get().composed_content["en"]["subject"] == "Edited by staff"


def test_a_sent_draft_is_replaced_not_duplicated(demo):
    Message.objects.filter(metadata__demo_sample="inf1000-welcome").update(status=Message.Status.SENT)
    run_demo()
    run_demo()
    assert Message.objects.filter(metadata__demo_sample="inf1000-welcome").count() == 2
    assert Message.objects.drafts().count() == 2


def test_the_welcome_draft_can_be_sent(demo, django_capture_on_commit_callbacks, mailoutbox):
    staff = User.objects.get(username="staff")
    message = Message.objects.get(metadata__demo_sample="inf1000-welcome")
    with django_capture_on_commit_callbacks(execute=True):
        count = composing.queue_send(message, actor=staff)
    message.refresh_from_db()
    receivers = MessageReceiver.objects.filter(message=message)
    assert receivers.count() == count > 100
    assert set(receivers.values_list("language", flat=True)) == {"en", "nb"}
    # Users with no address fail clearly; the locmem backend accepts every other address; the
    # students who turned "other" off are skipped, not failed.
    skipped = receivers.filter(status=MessageReceiver.Status.SKIPPED)
    failed = receivers.exclude(status__in=[MessageReceiver.Status.SENT, MessageReceiver.Status.SKIPPED])
    assert set(failed.values_list("send_to", flat=True)) == {""}
    assert failed.count() >= 2
    assert skipped.count() >= 2
    assert message.status == Message.Status.ERROR
    # ... and the staff member who sent it is told (one report, in their language).
    report = Message.objects.get(context_type=Message.ContextType.SENDING_REPORT)
    assert report.metadata == {"report_for": message.pk, "event": "finished_with_failures"}
    assert len(mailoutbox) == count - failed.count() - skipped.count() + 1
    nb = receivers.filter(language="nb", status=MessageReceiver.Status.SENT).first()
    assert nb.subject == "Velkommen til INF1000"
    assert f"Hei {nb.user.first_name}" in nb.message_content_plain
