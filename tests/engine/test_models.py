"""SPEC §2: fields, querysets, validation, addresses and languages."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone, translation

from messaging.engine.recipients import notification_address, preferred_language
from messaging.models import Message, MessageReceiver, UserEmail
from tests.engine_helpers import SEND_ARGS, FixedSubject, LanguageSubject, RaisingSubject

pytestmark = pytest.mark.django_db


def make_message(**fields) -> Message:
    return Message.objects.create(**fields)


class TestMessageValidation:
    @pytest.mark.parametrize("value", [[], None])
    def test_empty_message_type_becomes_email(self, value):
        message = Message(message_type=value)
        message.full_clean()
        assert message.message_type == ["email"]

    def test_unknown_message_type_is_a_validation_error(self):
        message = Message(message_type=["email", "pigeon"])
        with pytest.raises(ValidationError, match="pigeon"):
            message.full_clean()

    def test_clean_does_not_require_recipients(self):
        Message(virtual_message_receivers={}).full_clean()

    @pytest.mark.parametrize(
        ("data", "problem"),
        [
            ({}, '"user_ids" key'),
            ({"user_ids": 5}, "must be a list"),
            ({"user_ids": []}, "must not be empty"),
            ({"user_ids": [1, "2"]}, "non-integer"),
            ({"user_ids": [1, True]}, "non-integer"),
            ({"user_ids": [1.0]}, "non-integer"),
        ],
    )
    def test_virtual_receivers_errors_name_the_problem(self, data, problem):
        message = Message(virtual_message_receivers=data)
        with pytest.raises(ValueError, match=problem):
            message.validate_virtual_message_receivers()

    def test_valid_virtual_receivers(self):
        Message(virtual_message_receivers={"user_ids": [1, 2]}).validate_virtual_message_receivers()


class TestQuerySets:
    def test_messages_without_receivers(self, make_user):
        lonely = make_message()
        busy = make_message()
        MessageReceiver.objects.create(message=busy, user=make_user())
        assert list(Message.objects.filter_message_with_no_message_receivers()) == [lonely]

    def test_old_receivers_are_strictly_before(self, make_user):
        message = make_message()
        now = timezone.now()
        old = MessageReceiver.objects.create(
            message=message, user=make_user(), created_datetime=now - timedelta(days=2)
        )
        MessageReceiver.objects.create(message=message, user=make_user(), created_datetime=now)
        assert list(MessageReceiver.objects.filter_old_receivers(now)) == [old]


class TestAddresses:
    def test_primary_notification_address_wins(self, make_user):
        user = make_user(emails=["a@x.org", "b@x.org"], primary="b@x.org")
        assert notification_address(user) == "b@x.org"

    def test_first_notification_address_by_id(self, make_user):
        user = make_user(emails=["first@x.org", "second@x.org"])
        assert notification_address(user) == "first@x.org"

    def test_primary_that_is_not_for_notifications_is_ignored(self, make_user):
        user = make_user(emails=["note@x.org"])
        UserEmail.objects.create(
            user=user, email="primary@x.org", is_primary=True, use_for_notifications=False
        )
        assert notification_address(user) == "note@x.org"

    def test_falls_back_to_user_email(self, make_user):
        assert notification_address(make_user(email="plain@x.org")) == "plain@x.org"

    def test_no_address_at_all(self, make_user):
        assert notification_address(make_user(email="")) == ""


class TestLanguage:
    @pytest.mark.parametrize(
        ("code", "expected"), [("nb", "nb"), ("en", "en"), ("de", "en"), ("", "en"), (None, "en")]
    )
    def test_preferred_language(self, make_user, code, expected):
        assert preferred_language(make_user(language=code)) == expected


class TestCreateReceiver:
    def create(self, user, message=None, subject_generator=None, **overrides):
        args = {**SEND_ARGS, **overrides}
        return MessageReceiver.objects.create_receiver(
            user=user,
            message=message or make_message(),
            message_type="email",
            subject_generator=subject_generator or LanguageSubject(),
            **args,
        )

    def test_renders_in_the_users_language_and_does_not_save(self, make_user):
        receiver = self.create(make_user(language="nb", email="nb@x.org"))
        assert receiver.pk is None
        assert receiver.subject == "Subject [nb]"
        assert "Language: nb." in receiver.message_content_html
        assert receiver.language == "nb"
        assert receiver.send_to == "nb@x.org"

    def test_plain_text_from_html_keeps_links(self, make_user):
        receiver = self.create(make_user(first_name="Kari"))
        assert "[the page](https://example.org/x)" in receiver.message_content_plain
        assert "Hello Kari," in receiver.message_content_plain
        assert "<p>" not in receiver.message_content_plain

    def test_placeholders_are_filled_per_user_and_escaped_in_html(self, make_user):
        receiver = self.create(make_user(first_name="<Ola & Co>"))
        assert "Hello &lt;Ola &amp; Co&gt;," in receiver.message_content_html
        assert "Hello <Ola & Co>," in receiver.message_content_plain

    def test_language_is_restored(self, make_user):
        with translation.override("en"):
            self.create(make_user(language="nb"))
            assert translation.get_language() == "en"

    def test_language_is_restored_after_an_exception(self, make_user):
        with translation.override("en"):
            with pytest.raises(RuntimeError):
                self.create(make_user(language="nb"), subject_generator=RaisingSubject())
            assert translation.get_language() == "en"

    def test_subject_with_line_break_raises(self, make_user):
        with pytest.raises(ValueError, match="line break"):
            self.create(make_user(), subject_generator=FixedSubject(text="Hi\nBcc: evil@x.org"))

    def test_subject_over_255_characters_raises(self, make_user):
        with pytest.raises(ValueError, match="at most 255"):
            self.create(make_user(), subject_generator=FixedSubject(text="x" * 256))

    def test_broken_template_raises(self, make_user):
        with pytest.raises(Exception, match="if"):
            self.create(make_user(), template_name="tests/broken.html")

    def test_user_without_address_gets_empty_send_to(self, make_user):
        assert self.create(make_user(email="")).send_to == ""


class TestReceiverCleaning:
    def test_plain_text_generated_when_missing(self):
        receiver = MessageReceiver(subject="  Hi  ", message_content_html="<p><b>Bold</b> text</p>")
        receiver.clean()
        assert receiver.message_content_plain == "**Bold** text"
        assert receiver.subject == "Hi"
        assert receiver.message_type == "email"

    def test_given_plain_text_is_kept_and_stripped(self):
        receiver = MessageReceiver(message_content_html="<p>html</p>", message_content_plain=" mine \n")
        receiver.clean_message_content_fields()
        assert receiver.message_content_plain == "mine"

    def test_long_paragraphs_are_not_wrapped(self):
        receiver = MessageReceiver(message_content_html="<p>" + "word " * 100 + "</p>")
        receiver.clean()
        assert "\n" not in receiver.message_content_plain
