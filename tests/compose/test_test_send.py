"""Test sends to any address (issue 14 §5): one validated address and a language, sent over real
SMTP; malformed addresses are field errors and send nothing; at most
MESSAGING_TEST_SENDS_PER_HOUR per staff member in the last hour."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from messaging.compose import composing, forms
from messaging.models import AuditEvent, Message
from tests.conftest import grant

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
ALL = ["view_message", "compose_message", "send_message", "resend_message"]


@pytest.fixture
def staff(make_user):
    return grant(
        make_user(is_staff=True, language="nb", username="coordinator", email="coord@uni.example"), *ALL
    )


@pytest.fixture
def draft(staff, make_user):
    message = Message(
        context_type=Message.ContextType.OTHER,
        composed_content={
            "en": {"subject": "Exam moved, {{ recipient_first_name }}", "body": "<p>The exam moved.</p>"},
            "nb": {
                "subject": "Eksamen flyttet, {{ recipient_first_name }}",
                "body": "<p>Eksamen er flyttet.</p>",
            },
        },
        virtual_message_receivers={"chosen_user_ids": [make_user().pk], "group_ids": []},
        from_email="",
        reply_to="coord@uni.example",
    )
    return composing.save_draft(message, staff)


def post_test(client, draft, htmx=True, **data):
    url = reverse("messaging:message_send_test", args=[draft.pk])
    return client.post(url, data, **(HTMX if htmx else {}))


def sent_events(actor=None):
    events = AuditEvent.objects.filter(action=AuditEvent.Action.TEST_SENT)
    return events.filter(actor=actor) if actor is not None else events


class TestAnyAddress:
    def test_a_colleague_gets_the_test_in_the_chosen_language(self, staff_client, staff, draft, smtp_mailer):
        response = post_test(staff_client, draft, to="colleague@example.org", language="en")
        content = response.content.decode()
        assert response.status_code == 200
        assert 'data-testid="test-sent"' in content and "colleague@example.org" in content
        (sunk,) = smtp_mailer.received
        assert sunk.rcpt_tos == ("colleague@example.org",)
        assert sunk.message["Subject"] == f"Exam moved, {staff.first_name}"
        assert "The exam moved." in sunk.message.get_body(("html",)).get_content()
        assert str(sunk.message["Reply-To"]) == "coord@uni.example"
        event = sent_events(staff).get()
        assert event.details["to"] == "colleague@example.org"
        assert event.details["language"] == "en"
        assert event.details["delivered"] is True
        draft.refresh_from_db()
        assert draft.is_draft and not draft.receivers.exists()

    def test_the_form_defaults_to_my_address_and_language(self, staff_client, staff, draft):
        page = staff_client.get(reverse("messaging:message_preview", args=[draft.pk])).content.decode()
        to_input = page.split('id="id_to"')[1].split(">")[0]
        assert 'value="coord@uni.example"' in to_input
        assert '<option value="nb" selected>' in page

    def test_without_fields_it_goes_to_me_in_my_language(self, staff_client, staff, draft, smtp_mailer):
        post_test(staff_client, draft)
        (sunk,) = smtp_mailer.received
        assert sunk.rcpt_tos == ("coord@uni.example",)
        assert sunk.message["Subject"] == f"Eksamen flyttet, {staff.first_name}"

    def test_a_language_without_content_gets_the_default_content(self, staff_client, draft, smtp_mailer):
        draft.composed_content.pop("nb")
        draft.save()
        post_test(staff_client, draft, to="kollega@example.org", language="nb")
        (sunk,) = smtp_mailer.received
        assert sunk.message["Subject"].startswith("Exam moved")
        assert sent_events().get().details["language"] == "nb"

    def test_without_htmx_it_redirects_with_a_message(self, staff_client, draft, smtp_mailer):
        response = post_test(staff_client, draft, htmx=False, to="colleague@example.org", language="en")
        assert response.status_code == 302
        page = staff_client.get(response["Location"]).content.decode()
        assert "A test was sent to colleague@example.org." in page
        assert len(smtp_mailer.received) == 1


MALFORMED = {
    "no domain": ("a@", "Enter a valid email address, such as"),
    "two addresses": ("a@b.c, d@e.f", "Enter one address only"),
    "semicolon": ("a@b.c;d@e.f", "Enter one address only"),
    "header injection": ("x@y.z\r\nBcc: v@w.x", "no line breaks"),
    "bare line feed": ("x@y.z\nBcc: v@w.x", "no line breaks"),
    "300 characters": ("a" * 290 + "@example.org", "at most 254 characters"),
    "nul": ("a\x00b@example.org", "Null characters are not allowed."),
    "empty": ("", "Enter the address to send the test to."),
    "display name": ("Eve <eve@example.org>", "Enter a valid email address, such as"),
}


class TestMalformed:
    @pytest.mark.parametrize(("address", "error"), MALFORMED.values(), ids=MALFORMED.keys())
    def test_a_field_error_in_place_and_nothing_sent(self, staff_client, draft, smtp_mailer, address, error):
        response = post_test(staff_client, draft, to=address, language="en")
        assert response.status_code == 200
        content = response.content.decode()
        assert error in content
        errors = content.split('id="id_to_error">')[1].split("</div></div>")[0]
        assert errors.count("<div>") == 1, errors  # one clear message, not every validator's
        to_input = content.split('id="id_to"')[1].split(">")[0]
        assert 'aria-invalid="true"' in to_input and "is-invalid" in to_input
        assert "id_to_error" in to_input  # aria-describedby
        assert 'data-testid="test-sent"' not in content
        assert smtp_mailer.received == []
        assert not sent_events().exists()

    def test_an_unknown_language_is_a_field_error(self, staff_client, draft, smtp_mailer):
        content = post_test(staff_client, draft, to="a@example.org", language="xx").content.decode()
        assert 'id="id_language_error"' in content
        assert smtp_mailer.received == []

    def test_without_htmx_the_error_is_shown_and_nothing_sent(self, staff_client, draft, smtp_mailer):
        response = post_test(staff_client, draft, htmx=False, to="a@b.c, d@e.f", language="en")
        assert response.status_code == 302
        assert "Enter one address only" in staff_client.get(response["Location"]).content.decode()
        assert smtp_mailer.received == []


@hypothesis_settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(address=st.text(max_size=320), language=st.text(max_size=5) | st.sampled_from(["en", "nb"]))
def test_any_posted_address_sends_to_at_most_that_one_address(
    settings, staff_client, draft, address, language
):
    from django.core import mail

    settings.MESSAGING_TEST_SENDS_PER_HOUR = None  # every example may send
    mail.outbox.clear()
    response = post_test(staff_client, draft, to=address, language=language)
    assert response.status_code == 200
    for sent in mail.outbox:
        assert sent.to == [address.strip()] and not sent.cc and not sent.bcc
        assert "," not in address and "\n" not in address.strip()
    if not mail.outbox:
        assert b"invalid-feedback" in response.content or b'data-testid="test-failed"' in response.content


class TestRateLimit:
    @pytest.fixture(autouse=True)
    def limit(self, settings):
        settings.MESSAGING_TEST_SENDS_PER_HOUR = 3

    def test_the_one_over_the_limit_is_refused_with_when_the_next_is_possible(
        self, staff_client, staff, draft, smtp_mailer
    ):
        for n in range(3):
            assert (
                b'data-testid="test-sent"' in post_test(staff_client, draft, to=f"c{n}@example.org").content
            )
        first = sent_events(staff).order_by("created_datetime").first()
        response = post_test(staff_client, draft, to="c3@example.org")
        content = response.content.decode()
        assert 'data-testid="test-refused"' in content
        next_at = date_format(timezone.localtime(first.created_datetime + timedelta(hours=1)), "TIME_FORMAT")
        assert (
            f"You have sent 3 tests in the last hour, the most allowed; the next is possible at {next_at}."
            in content
        )
        assert [m.rcpt_tos for m in smtp_mailer.received] == [(f"c{n}@example.org",) for n in range(3)]
        assert sent_events(staff).count() == 3

    def test_another_staff_member_is_not_affected(self, client, staff, draft, make_user, smtp_mailer):
        for n in range(3):
            composing.send_test(draft, staff, f"c{n}@example.org", "en")
        with pytest.raises(composing.TooManyTestSends):
            composing.send_test(draft, staff, "c3@example.org", "en")
        colleague = grant(make_user(is_staff=True), *ALL)
        client.force_login(colleague)
        assert b'data-testid="test-sent"' in post_test(client, draft, to="x@example.org").content
        assert len(smtp_mailer.received) == 4

    def test_tests_older_than_an_hour_are_not_counted(self, staff, draft, smtp_mailer):
        for n in range(3):
            composing.send_test(draft, staff, f"c{n}@example.org", "en")
        oldest = sent_events(staff).order_by("created_datetime").first()
        AuditEvent.objects.filter(pk=oldest.pk).update(
            created_datetime=timezone.now() - timedelta(hours=1, seconds=1)
        )
        assert composing.send_test(draft, staff, "c3@example.org", "en").delivered
        with pytest.raises(composing.TooManyTestSends) as refused:
            composing.send_test(draft, staff, "c4@example.org", "en")
        second = sent_events(staff).order_by("created_datetime")[1]
        assert refused.value.next_at == second.created_datetime + timedelta(hours=1)
        assert len(smtp_mailer.received) == 4

    def test_failed_tests_count_too(self, staff, draft, smtp_mailer):
        for n in range(3):
            assert not composing.send_test(draft, staff, f"c{n}@bounce.example", "en").delivered
        with pytest.raises(composing.TooManyTestSends):
            composing.send_test(draft, staff, "ok@example.org", "en")

    def test_the_check_is_one_query(self, staff, draft):
        for n in range(3):
            composing.send_test(draft, staff, f"c{n}@example.org", "en")
        with CaptureQueriesContext(connection) as ctx:
            assert composing.next_test_send_at(staff) is not None
        assert len(ctx.captured_queries) == 1

    def test_zero_turns_test_sends_off(self, settings, staff_client, draft, smtp_mailer):
        settings.MESSAGING_TEST_SENDS_PER_HOUR = 0
        content = post_test(staff_client, draft, to="a@example.org").content.decode()
        assert "Test sends are turned off on this site." in content
        assert smtp_mailer.received == []


class TestPermissions:
    @pytest.mark.parametrize("codenames", [["view_message"], ["view_message", "compose_message"]])
    def test_staff_without_send_permission_get_403_and_nothing_is_sent(
        self, client, make_user, draft, smtp_mailer, codenames
    ):
        client.force_login(grant(make_user(is_staff=True), *codenames))
        assert post_test(client, draft, to="a@example.org").status_code == 403
        assert smtp_mailer.received == []

    def test_the_preview_has_no_test_form_without_send_permission(self, client, make_user, draft):
        client.force_login(grant(make_user(is_staff=True), "view_message"))
        page = client.get(reverse("messaging:message_preview", args=[draft.pk])).content.decode()
        assert 'id="test-send-form"' not in page

    def test_non_staff_and_anonymous_are_refused(self, client, make_user, draft, smtp_mailer):
        assert post_test(client, draft, htmx=False, to="a@example.org").status_code == 302  # to login
        client.force_login(grant(make_user(is_staff=False), *ALL))
        assert post_test(client, draft, to="a@example.org").status_code == 403
        assert smtp_mailer.received == []

    def test_get_is_not_allowed(self, staff_client, draft):
        assert staff_client.get(reverse("messaging:message_send_test", args=[draft.pk])).status_code == 405


def test_the_form_class_validates_on_its_own(staff):
    form = forms.TestSendForm({"to": " colleague@example.org ", "language": "en"}, actor=staff)
    assert form.is_valid(), form.errors
    assert form.cleaned_data == {"to": "colleague@example.org", "language": "en"}
    assert not forms.TestSendForm({"to": "a@b.c,d@e.f", "language": "en"}, actor=staff).is_valid()
