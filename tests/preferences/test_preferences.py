"""Notification preferences: the context type registry (code defaults, staff's admin settings),
resolution per user, the rules a recipient's choice must obey, and the settings checks."""

from __future__ import annotations

import pytest

from messaging import checks
from messaging.models import ContextTypeSetting, DeliveryMode, Message, NotificationPreference
from messaging.preferences import context_types
from messaging.preferences import modes as preferences
from messaging.preferences.modes import PreferenceRefused

ContextType = Message.ContextType
pytestmark = pytest.mark.django_db


@pytest.fixture
def project_type():
    """A context type a project registers in code (AppConfig.ready), removed afterwards."""
    config = context_types.register(
        "assignment_published", "Assignment published", default_mode=DeliveryMode.DAILY
    )
    yield config
    context_types.unregister(config.key)


def test_built_in_types_have_labels_defaults_and_enforcement():
    assert {key for key, _label in context_types.choices()} == set(ContextType.values)
    assert context_types.get(ContextType.DEADLINE_MOVED).enforced
    assert context_types.get(ContextType.SENDING_REPORT).enforced
    assert context_types.get(ContextType.DIGEST).enforced
    assert not context_types.get(ContextType.FEEDBACK).enforced
    assert context_types.get(ContextType.FEEDBACK).default_mode == DeliveryMode.IMMEDIATELY
    assert ContextType.DIGEST not in dict(context_types.composable_choices())


def test_a_project_registers_its_own_type(project_type, make_user):
    assert ("assignment_published", "Assignment published") in context_types.choices()
    assert "assignment_published" in dict(context_types.composable_choices())
    user = make_user()
    assert preferences.modes_for([user.pk], "assignment_published") == {user.pk: DeliveryMode.DAILY}
    # The model fields take their choices from the registry.
    Message(context_type="assignment_published").full_clean(exclude=["created_by"])


def test_register_refuses_bad_keys_and_modes():
    with pytest.raises(ValueError, match="1-30 characters"):
        context_types.register("x" * 31, "Too long")
    with pytest.raises(ValueError, match="Unknown delivery mode"):
        context_types.register("fine", "Fine", default_mode="hourly")
    assert not context_types.is_registered("fine")


def test_the_admin_setting_overrides_the_code(make_user):
    ContextTypeSetting.objects.create(
        context_type=ContextType.COMMENT, label="Examiner comment", default_mode=DeliveryMode.WEEKLY
    )
    config = context_types.get(ContextType.COMMENT)
    assert (config.label, config.default_mode, config.enforced) == (
        "Examiner comment",
        DeliveryMode.WEEKLY,
        False,
    )
    assert dict(context_types.composable_choices())[ContextType.COMMENT] == "Examiner comment"
    user = make_user()
    assert preferences.modes_for([user.pk], ContextType.COMMENT) == {user.pk: DeliveryMode.WEEKLY}


def test_an_unknown_type_is_delivered_immediately_and_cannot_be_turned_off(make_user):
    user = make_user()
    config = context_types.get("nobody_registered_this")
    assert config.enforced and not config.composable
    assert preferences.modes_for([user.pk], "nobody_registered_this") == {user.pk: DeliveryMode.IMMEDIATELY}
    with pytest.raises(PreferenceRefused, match="Unknown context type"):
        preferences.set_mode(user, "nobody_registered_this", DeliveryMode.OFF)
    assert not NotificationPreference.objects.exists()


class TestResolution:
    def test_default_then_the_users_own_choice(self, make_user):
        default, weekly, off = make_user(), make_user(), make_user()
        preferences.set_mode(weekly, ContextType.FEEDBACK, DeliveryMode.WEEKLY)
        preferences.set_mode(off, ContextType.FEEDBACK, DeliveryMode.OFF)
        assert preferences.modes_for([default.pk, weekly.pk, off.pk], ContextType.FEEDBACK) == {
            default.pk: DeliveryMode.IMMEDIATELY,
            weekly.pk: DeliveryMode.WEEKLY,
            off.pk: DeliveryMode.OFF,
        }
        # A choice for one type says nothing about another.
        assert preferences.modes_for([off.pk], ContextType.OTHER) == {off.pk: DeliveryMode.IMMEDIATELY}

    def test_enforced_types_reach_everyone_immediately(self, make_user):
        user = make_user()
        # Written around the service (as if the type was optional when the user chose).
        NotificationPreference.objects.create(user=user, context_type=ContextType.DEADLINE_MOVED, mode="off")
        assert preferences.modes_for([user.pk], ContextType.DEADLINE_MOVED) == {
            user.pk: DeliveryMode.IMMEDIATELY
        }

    def test_staff_can_enforce_a_type_in_the_admin_over_users_choices(self, make_user):
        user = make_user()
        preferences.set_mode(user, ContextType.FEEDBACK, DeliveryMode.OFF)
        ContextTypeSetting.objects.create(
            context_type=ContextType.FEEDBACK, default_mode="immediately", enforced=True
        )
        assert preferences.modes_for([user.pk], ContextType.FEEDBACK) == {user.pk: DeliveryMode.IMMEDIATELY}

    def test_an_important_message_ignores_preferences(self, make_user):
        user = make_user()
        preferences.set_mode(user, ContextType.FEEDBACK, DeliveryMode.OFF)
        assert preferences.modes_for([user.pk], ContextType.FEEDBACK, ignore_preferences=True) == {
            user.pk: DeliveryMode.IMMEDIATELY
        }

    def test_counts_per_mode_in_one_query(self, make_user, django_assert_num_queries):
        users = [make_user() for _ in range(4)]
        preferences.set_mode(users[0], ContextType.FEEDBACK, DeliveryMode.DAILY)
        preferences.set_mode(users[1], ContextType.FEEDBACK, DeliveryMode.OFF)
        with django_assert_num_queries(2):  # the type's admin setting, then the preferences
            counts = preferences.mode_counts([u.pk for u in users], ContextType.FEEDBACK)
        assert counts == {"immediately": 2, "daily": 1, "weekly": 0, "off": 1}


class TestChoosing:
    def test_set_mode_stores_only_what_differs_from_the_default(self, make_user):
        user = make_user()
        assert not preferences.set_mode(user, ContextType.FEEDBACK, DeliveryMode.IMMEDIATELY)
        assert not NotificationPreference.objects.exists()
        assert preferences.set_mode(user, ContextType.FEEDBACK, DeliveryMode.DAILY)
        assert not preferences.set_mode(user, ContextType.FEEDBACK, DeliveryMode.DAILY)
        assert preferences.set_mode(user, ContextType.FEEDBACK, DeliveryMode.IMMEDIATELY)
        assert NotificationPreference.objects.get(user=user).mode == DeliveryMode.IMMEDIATELY

    def test_enforced_types_and_unknown_modes_are_refused(self, make_user):
        user = make_user()
        with pytest.raises(PreferenceRefused, match="enforced"):
            preferences.set_mode(user, ContextType.DEADLINE_MOVED, DeliveryMode.OFF)
        with pytest.raises(PreferenceRefused, match="Unknown delivery mode"):
            preferences.set_mode(user, ContextType.FEEDBACK, "hourly")
        assert not NotificationPreference.objects.exists()

    def test_turn_off_is_idempotent_and_skips_what_cannot_be_turned_off(self, make_user):
        user, other = make_user(), make_user()
        types = [ContextType.FEEDBACK, ContextType.DEADLINE_MOVED, "nobody_registered_this"]
        assert preferences.turn_off(user, types) == [ContextType.FEEDBACK]
        assert preferences.turn_off(user, types) == []
        assert list(NotificationPreference.objects.values_list("user_id", "context_type", "mode")) == [
            (user.pk, ContextType.FEEDBACK, DeliveryMode.OFF)
        ]
        assert preferences.modes_for([other.pk], ContextType.FEEDBACK) == {other.pk: DeliveryMode.IMMEDIATELY}

    def test_the_page_lists_enforced_types_as_always_immediate(self, make_user):
        user = make_user()
        preferences.set_mode(user, ContextType.COMMENT, DeliveryMode.WEEKLY)
        shown = {config.key: (mode, config.mode_choices) for config, mode in preferences.choices_of(user)}
        assert shown[ContextType.COMMENT][0] == DeliveryMode.WEEKLY
        assert shown[ContextType.DEADLINE_MOVED] == (
            DeliveryMode.IMMEDIATELY,
            [(DeliveryMode.IMMEDIATELY, DeliveryMode.IMMEDIATELY.label)],
        )
        assert ContextType.DIGEST not in shown


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MESSAGING_DIGEST_TIME", "7"),
        ("MESSAGING_DIGEST_TIME", "25:00"),
        ("MESSAGING_DIGEST_TIME", 700),
        ("MESSAGING_DIGEST_WEEKDAY", 7),
        ("MESSAGING_DIGEST_POLL_MINUTES", 0),
    ],
)
def test_digest_settings_that_cannot_work_refuse_to_start(settings, name, value):
    setattr(settings, name, value)
    problems = checks.digest_settings()
    assert [p.id for p in problems] == ["messaging.E008"]
    assert name in problems[0].msg


def test_default_digest_settings_pass_the_check():
    assert checks.digest_settings() == []
