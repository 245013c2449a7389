"""One-click unsubscribe (RFC 8058) and the preference footer, end to end over real SMTP.

A message of a type recipients may turn off goes through the engine to the aiosmtpd sink; the
test reads the List-Unsubscribe URL out of the received email, POSTs to it as a mail program
does, and the next message of that type is not sent to that user.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import time_machine
from django.core.mail import EmailMultiAlternatives
from django.utils import timezone

from messaging import conf
from messaging.engine.channels.email import EmailChannel
from messaging.engine.channels.fast_email import FastEmailMultiAlternatives, OneLineHeader
from messaging.engine.outgoing import OutgoingBuilder, PreferenceNotice
from messaging.models import DeliveryMode, Message, MessageReceiver, NotificationPreference
from messaging.preferences import links
from tests.engine_helpers import SEND_ARGS, LanguageSubject

pytestmark = pytest.mark.django_db

SITE = "https://messaging.example.edu"
ONE_CLICK_BODY = "List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"
ONE_CLICK_URL = re.compile(r"^<(https?://[^>\s]+/one-click/)>$")
SETTINGS_URL = re.compile(rf"{re.escape(SITE)}/preferences/([^/\s\"]+)/")


@pytest.fixture(autouse=True)
def site_url(settings):
    settings.MESSAGING_SITE_URL = SITE


def send(users, context_type=Message.ContextType.FEEDBACK, **fields) -> Message:
    message = Message.objects.create(
        context_type=context_type, virtual_message_receivers={"user_ids": [u.pk for u in users]}, **fields
    )
    message.prepare_and_send(LanguageSubject(prefix="Grade"), **SEND_ARGS)
    message.refresh_from_db()
    return message


def received_by(sink, address: str) -> list[email.message.EmailMessage]:
    return [mail.message for mail in sink.received if address in mail.rcpt_tos]


def raw_header_lines(sink, address: str, name: str) -> list[bytes]:
    (mail,) = [m for m in sink.received if address in m.rcpt_tos]
    head = mail.data.split(b"\r\n\r\n", 1)[0]
    return [
        line for line in re.split(rb"\r\n(?![ \t])", head) if line.lower().startswith(name.lower().encode())
    ]


def one_click_path(message: email.message.EmailMessage) -> str:
    match = ONE_CLICK_URL.match(str(message["List-Unsubscribe"]))
    assert match, message["List-Unsubscribe"]
    assert match[1].startswith(f"{SITE}/preferences/")
    return urlsplit(match[1]).path


def one_click(user, types=("feedback",)) -> str:
    """The path of a fresh one-click link of `user`'s for `types`."""
    return links.one_click_url(user.pk, types).removeprefix(SITE)


def mode_of(user, context_type="feedback") -> str | None:
    return (
        NotificationPreference.objects.filter(user=user, context_type=context_type)
        .values_list("mode", flat=True)
        .first()
    )


@pytest.fixture
def student(make_user):
    return make_user(language="en", first_name="Kari", email="kari@uni.example")


class TestHeaders:
    def test_an_optional_type_carries_rfc_8058_headers_and_a_footer(self, student, smtp_mailer):
        message = send([student])
        (received,) = received_by(smtp_mailer, student.email)
        path = one_click_path(received)
        assert received["List-Unsubscribe-Post"] == ONE_CLICK_BODY
        # One line, never RFC 2047 encoded words: a mail program must read it as a URL.
        (line,) = raw_header_lines(smtp_mailer, student.email, "List-Unsubscribe:")
        assert b"=?" not in line and line.endswith(b"/one-click/>")

        token = path.removeprefix("/preferences/").removesuffix("/one-click/")
        link = links.load_one_click(token)
        assert (link.user_id, link.context_types) == (student.pk, ("feedback",))

        plain = received.get_body(("plain",)).get_content()
        html = received.get_body(("html",)).get_content()
        # The footer links to the preference page with a token of its own: each does one thing.
        settings_url = SETTINGS_URL.search(plain)[0]
        settings_token = SETTINGS_URL.search(plain)[1]
        assert links.load_manage(settings_token).user_id == student.pk and settings_token != token
        with pytest.raises(links.LinkInvalid):
            links.load_one_click(settings_token)
        with pytest.raises(links.LinkInvalid):
            links.load_manage(token)
        assert "Change how you get these messages" in plain
        assert f'<a href="{settings_url}">' in html
        # What is stored is what the sender wrote: the footer is added at send time.
        receiver = message.receivers.get()
        assert settings_url not in receiver.message_content_plain
        assert "/preferences/" not in receiver.message_content_html

    def test_the_footer_is_in_the_receivers_language(self, make_user, smtp_mailer, settings):
        kari = make_user(language="nb", email="kari@uni.example")
        send([kari])
        (received,) = received_by(smtp_mailer, kari.email)
        assert received.get_body(("html",)).get_content().count("/preferences/") == 1
        assert received["Subject"] == "Grade [nb]"

    def test_an_enforced_type_carries_neither(self, student, smtp_mailer):
        send([student], Message.ContextType.DEADLINE_MOVED)
        (received,) = received_by(smtp_mailer, student.email)
        assert received["List-Unsubscribe"] is None and received["List-Unsubscribe-Post"] is None
        assert "/preferences/" not in received.get_body(("plain",)).get_content()
        assert "/preferences/" not in received.get_body(("html",)).get_content()

    def test_an_important_message_of_an_optional_type_still_carries_them(self, student, smtp_mailer):
        NotificationPreference.objects.create(user=student, context_type="feedback", mode=DeliveryMode.WEEKLY)
        send([student], ignore_preferences=True)
        (received,) = received_by(smtp_mailer, student.email)
        one_click_path(received)

    def test_a_test_send_carries_none(self, student, smtp_mailer):
        message = Message.objects.create(context_type=Message.ContextType.FEEDBACK)
        unsaved = MessageReceiver(
            message=message, user=student, send_to=student.email, subject="Test", message_content_plain="x"
        )
        ((_item, result),) = EmailChannel().deliver([OutgoingBuilder().build(unsaved)])
        assert result.delivered
        (received,) = received_by(smtp_mailer, student.email)
        assert received["List-Unsubscribe"] is None
        assert "/preferences/" not in received.get_content()

    def test_a_digest_has_the_headers_for_its_optional_types_and_no_second_footer(self, student, smtp_mailer):
        digest = Message.objects.create(context_type=Message.ContextType.DIGEST)
        receiver = MessageReceiver.objects.create(
            message=digest,
            user=student,
            send_to=student.email,
            language="en",
            subject="Your daily digest",
            message_content_plain="Two messages.",
            message_content_html="<html><body><p>Two messages.</p></body></html>",
            metadata={"context_types": ["comment", "deadline_moved", "feedback", "comment", "no_such_type"]},
        )
        stored = MessageReceiver.objects.get(pk=receiver.pk)
        ((_item, result),) = EmailChannel().deliver([OutgoingBuilder().build(stored)])
        assert result.delivered
        (received,) = received_by(smtp_mailer, student.email)
        token = one_click_path(received).removeprefix("/preferences/").removesuffix("/one-click/")
        assert links.load_one_click(token).context_types == ("comment", "feedback")
        assert "/preferences/" not in received.get_body(("plain",)).get_content()

    def test_a_digest_of_only_enforced_types_carries_none(self, student, smtp_mailer):
        digest = Message.objects.create(context_type=Message.ContextType.DIGEST)
        receiver = MessageReceiver.objects.create(
            message=digest,
            user=student,
            send_to=student.email,
            subject="Digest",
            message_content_plain="x",
            metadata={"context_types": ["deadline_moved"]},
        )
        list(EmailChannel().deliver([OutgoingBuilder().build(MessageReceiver.objects.get(pk=receiver.pk))]))
        (received,) = received_by(smtp_mailer, student.email)
        assert received["List-Unsubscribe"] is None


def test_the_email_channels_link_maker_makes_the_same_links():
    many = links.PreferenceLinks()
    url = many.one_click_url(7, ("feedback", "comment"))
    token = url.removeprefix(f"{SITE}/preferences/").removesuffix("/one-click/")
    assert url == f"{SITE}/preferences/{token}/one-click/"
    link = links.load_one_click(token)
    assert (link.user_id, link.context_types) == (7, ("feedback", "comment"))
    # The same payload as the one-at-a-time function's (the timestamp and signature may differ).
    assert token.split(":")[0] == links.one_click_token(7, ("feedback", "comment")).split(":")[0]

    url = many.preferences_url(7)
    token = url.removeprefix(f"{SITE}/preferences/").removesuffix("/")
    assert url == f"{SITE}/preferences/{token}/" and links.load_manage(token).user_id == 7
    assert token.split(":")[0] == links.manage_token(7).split(":")[0]


def test_the_html_footer_goes_inside_the_body():
    notice = PreferenceNotice({}, "plain footer", "<p>footer</p>")
    assert notice.html("<html><BODY><p>Hi</p></BODY>\n</html>") == (
        "<html><BODY><p>Hi</p><p>footer</p>\n</BODY>\n</html>"
    )
    assert notice.html("<p>Hi</p>") == "<p>Hi</p><p>footer</p>"
    assert notice.html("") == ""  # no HTML part is made for a plain-only email
    assert notice.plain("Hi\n\n") == "Hi\n\n-- \nplain footer\n"


class TestOneClick:
    def test_a_post_turns_the_type_off_and_the_next_message_is_not_sent(self, client, student, smtp_mailer):
        send([student])
        path = one_click_path(received_by(smtp_mailer, student.email)[0])

        response = client.post(path, ONE_CLICK_BODY, content_type=FORM)
        assert response.status_code == 200
        assert mode_of(student) == DeliveryMode.OFF
        changed_at = NotificationPreference.objects.get(user=student).updated_datetime

        again = client.post(path, ONE_CLICK_BODY, content_type=FORM)
        assert again.status_code == 200
        assert NotificationPreference.objects.get(user=student).updated_datetime == changed_at
        assert NotificationPreference.objects.filter(user=student).count() == 1

        smtp_mailer.handler.received.clear()
        later = send([student])
        assert later.receivers.get().status == MessageReceiver.Status.SKIPPED
        assert received_by(smtp_mailer, student.email) == []

    def test_multipart_form_data_works_too(self, client, student):
        response = client.post(one_click(student), {"List-Unsubscribe": "One-Click"})
        assert response.status_code == 200 and mode_of(student) == DeliveryMode.OFF

    @pytest.mark.parametrize(
        "body", ["", "List-Unsubscribe=Yes", "unsubscribe=1", "List-Unsubscribe=one-click"], ids=repr
    )
    def test_a_post_without_the_rfc_8058_body_changes_nothing(self, client, student, body):
        path = one_click(student)
        response = client.post(path, body, content_type=FORM)
        assert response.status_code == 400
        assert ONE_CLICK_BODY in response.content.decode()
        assert mode_of(student) is None

    def test_a_get_only_asks(self, client, student):
        path = one_click(student)
        response = client.get(path)
        assert response.status_code == 200
        content = response.content.decode()
        assert 'name="List-Unsubscribe" value="One-Click"' in content and 'method="post"' in content
        assert "/one-click/" not in response.context["manage_url"]
        assert client.head(path).status_code == 200
        assert mode_of(student) is None

    def test_it_never_touches_an_enforced_type(self, client, student):
        path = one_click(student, ["deadline_moved", "feedback", "no_such_type"])
        assert client.post(path, ONE_CLICK_BODY, content_type=FORM).status_code == 200
        assert dict(
            NotificationPreference.objects.filter(user=student).values_list("context_type", "mode")
        ) == {"feedback": DeliveryMode.OFF}

    def test_a_tampered_token_is_refused(self, client, student, make_user):
        other = make_user()
        token = links.one_click_token(student.pk, ["feedback"])
        forged = links.one_click_token(other.pk, ["feedback"]).split(":")[0] + token[token.index(":") :]
        for bad in (forged, token[:-3], token + "x", "garbage", token.replace(":", "")):
            response = client.post(f"/preferences/{bad}/one-click/", ONE_CLICK_BODY, content_type=FORM)
            assert response.status_code == 400, bad
            assert "This link is not valid" in response.content.decode()
        assert not NotificationPreference.objects.exists()

    def test_an_expired_token_is_refused(self, client, student):
        with time_machine.travel(timezone.now() - timedelta(days=conf.preference_link_max_age_days() + 1)):
            path = one_click(student)
        response = client.post(path, ONE_CLICK_BODY, content_type=FORM)
        assert response.status_code == 400
        assert "This link has expired" in response.content.decode()
        assert mode_of(student) is None

    def test_a_token_of_an_inactive_or_deleted_user_is_refused(self, client, make_user):
        gone, inactive = make_user(), make_user(is_active=False)
        paths = [one_click(u) for u in (gone, inactive)]
        gone.delete()
        for path in paths:
            assert client.post(path, ONE_CLICK_BODY, content_type=FORM).status_code == 400
        assert not NotificationPreference.objects.exists()


class TestOneLineHeader:
    """The header both builders write the same way (tests/engine/test_fast_email.py compares the rest)."""

    URL = f"<{SITE}/preferences/{'x' * 150}/one-click/>"

    def build(self, cls, value):
        mail = cls(
            subject="Hi",
            body="x",
            to=["a@example.org"],
            headers={
                "Message-ID": "<a@b>",
                "Date": "Thu, 26 Nov 2026 12:00:00 +0000",
                "List-Unsubscribe": value,
            },
        )
        mail.attach_alternative("<p>x</p>", "text/html")
        return mail

    @pytest.mark.parametrize("policy", [email.policy.SMTP, email.policy.default], ids=["SMTP", "default"])
    def test_same_line_as_django(self, policy):
        value = OneLineHeader("List-Unsubscribe", self.URL)
        lines = []
        for cls in (EmailMultiAlternatives, FastEmailMultiAlternatives):
            data = self.build(cls, value).message(policy=policy).as_bytes()
            (line,) = [x for x in data.splitlines() if x.startswith(b"List-Unsubscribe")]
            lines.append(line)
            parsed = email.message_from_bytes(data, policy=email.policy.default)
            assert parsed["List-Unsubscribe"] == self.URL
        assert lines[0] == lines[1] == f"List-Unsubscribe: {self.URL}".encode()

    def test_too_long_for_one_line_folds_as_usual(self):
        value = OneLineHeader("List-Unsubscribe", "<https://x/" + "y" * 1000 + ">")
        for cls in (EmailMultiAlternatives, FastEmailMultiAlternatives):
            data = self.build(cls, value).message(policy=email.policy.SMTP).as_bytes()
            assert max(len(line) for line in data.split(b"\r\n")) <= 998
            assert email.message_from_bytes(data, policy=email.policy.default)["List-Unsubscribe"] == value

    def test_a_line_break_is_refused(self):
        for cls in (EmailMultiAlternatives, FastEmailMultiAlternatives):
            with pytest.raises(ValueError):
                self.build(cls, OneLineHeader("List-Unsubscribe", "<https://x/>\r\nBcc: a@b")).message(
                    policy=email.policy.SMTP
                ).as_bytes()
