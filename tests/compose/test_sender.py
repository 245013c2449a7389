"""Sender and Reply-To (issue 14 §4): chosen from the allowed senders on the compose form,
refused when posted by hand from outside the list, sent as the From and Reply-To headers over
real SMTP (with and without VERP), recorded in the audit trail, and at no extra query per
receiver."""

from __future__ import annotations

import email.policy

import pytest
from django.contrib.auth.models import Permission
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from messaging.compose import composing
from messaging.compose.forms import MessageForm
from messaging.engine.channels.fast_email import FastEmailMultiAlternatives, PreparedMessage
from messaging.models import AuditEvent, Message, UserEmail

pytestmark = pytest.mark.django_db

DEFAULT = "Messaging <noreply@uni.example>"
EXAMS = "Exam office <exams@uni.example>"
STUDIES = "studies@uni.example"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def senders(settings):
    settings.DEFAULT_FROM_EMAIL = DEFAULT
    settings.MESSAGING_ALLOWED_SENDERS = [EXAMS, STUDIES]


@pytest.fixture
def staff(make_user):
    staff = make_user(
        is_staff=True, username="coordinator", emails=["coord@uni.example"], primary="coord@uni.example"
    )
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="messaging"))
    return staff


@pytest.fixture
def students(make_user):
    return [make_user(language="en", email=f"student{i}@uni.example") for i in range(3)]


def draft_for(staff, users, **fields) -> Message:
    message = Message(
        context_type=Message.ContextType.OTHER,
        composed_content={"en": {"subject": "Exam moved", "body": "<p>The exam moved.</p>"}},
        virtual_message_receivers={"chosen_user_ids": [u.pk for u in users], "group_ids": []},
        **fields,
    )
    return composing.save_draft(message, staff)


def compose_data(**overrides) -> dict:
    data = {"context_type": "other", "subject_en": "Exam moved", "body_en": "<p>Moved.</p>"}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def send(message, staff, capture):
    with capture(execute=True):
        composing.queue_send(message, staff)  # huey runs inline in tests
    message.refresh_from_db()
    return message


# The compose form ------------------------------------------------------------------------------


class TestChoices:
    def test_the_default_sender_comes_first_then_the_configured_ones(self, staff):
        form = MessageForm(actor=staff)
        values = [value for value, _label in form.fields["from_email"].choices]
        assert values == [DEFAULT, EXAMS, STUDIES]
        assert form["from_email"].value() == DEFAULT
        assert form["reply_to"].value() == MessageForm.REPLY_TO_NONE

    def test_the_default_is_not_repeated_when_also_configured(self, settings, staff):
        settings.MESSAGING_ALLOWED_SENDERS = [STUDIES, DEFAULT]
        form = MessageForm(actor=staff)
        assert [value for value, _label in form.fields["from_email"].choices] == [DEFAULT, STUDIES]

    def test_the_compose_page_shows_them(self, staff_client):
        content = staff_client.get(reverse("messaging:message_create")).content.decode()
        assert '<option value="Exam office &lt;exams@uni.example&gt;">' in content
        assert "Messaging &lt;noreply@uni.example&gt; (default)" in content
        assert "Replies go to me (coord@uni.example)" in content
        assert 'id="reply-to-me-unavailable"' not in content


class TestSaving:
    def test_a_chosen_sender_and_reply_to_me_are_saved(self, staff_client, staff):
        response = staff_client.post(
            reverse("messaging:message_create"), compose_data(from_email=EXAMS, reply_to="me")
        )
        assert response.status_code == 302
        message = Message.objects.get()
        # The staff member's notification address (their primary), not User.email.
        assert (message.from_email, message.reply_to) == (EXAMS, "coord@uni.example")
        assert staff.email != "coord@uni.example"

    def test_the_default_sender_is_stored_blank(self, staff_client):
        staff_client.post(
            reverse("messaging:message_create"), compose_data(from_email=DEFAULT, reply_to="none")
        )
        message = Message.objects.get()
        assert (message.from_email, message.reply_to) == ("", "")

    def test_choosing_no_reply_to_clears_it(self, staff_client, staff):
        draft = draft_for(staff, [], from_email=STUDIES, reply_to="coord@uni.example")
        form = MessageForm(message=draft, actor=staff)
        assert form["reply_to"].value() == MessageForm.REPLY_TO_ME
        staff_client.post(
            reverse("messaging:message_edit", args=[draft.pk]),
            compose_data(from_email=STUDIES, reply_to="none"),
        )
        draft.refresh_from_db()
        assert (draft.from_email, draft.reply_to) == (STUDIES, "")

    @pytest.mark.parametrize(
        "posted",
        [
            "Hacker <ceo@uni.example>",
            "exams@uni.example",  # the address of an allowed sender, without its name
            f"{EXAMS}\r\nBcc: everyone@uni.example",
            "x" * 1000,
            "a\x00b",
        ],
        ids=["outsider", "bare address", "injection", "long", "nul"],
    )
    def test_a_sender_posted_by_hand_is_refused_and_nothing_saved(self, staff_client, staff, posted):
        response = staff_client.post(
            reverse("messaging:message_create"), compose_data(from_email=posted), **HTMX
        )
        assert response.status_code == 200
        content = response.content.decode()
        assert "is not one of the allowed senders" in content
        assert 'id="id_from_email_error"' in content
        assert 'aria-invalid="true"' in content.split('id="id_from_email"')[1].split(">")[0]
        assert not Message.objects.exists()

    def test_a_hand_posted_sender_does_not_change_a_draft(self, staff_client, staff):
        draft = draft_for(staff, [], from_email=STUDIES)
        staff_client.post(
            reverse("messaging:message_edit", args=[draft.pk]),
            compose_data(from_email="evil@elsewhere.example"),
        )
        draft.refresh_from_db()
        assert draft.from_email == STUDIES

    def test_reply_to_me_without_an_address_is_disabled_and_refused(self, client, make_user):
        nobody = make_user(is_staff=True, email="")
        nobody.user_permissions.set(Permission.objects.filter(content_type__app_label="messaging"))
        client.force_login(nobody)
        page = client.get(reverse("messaging:message_create")).content.decode()
        me_radio = page.split('value="me"')[1].split(">")[0]
        assert "disabled" in me_radio and 'aria-describedby="reply-to-me-unavailable"' in me_radio
        assert "your account has no email address" in page
        response = client.post(reverse("messaging:message_create"), compose_data(reply_to="me"))
        assert "replies cannot go to you" in response.content.decode()
        assert not Message.objects.exists()

    def test_a_colleagues_reply_to_is_kept_unless_changed(self, staff_client, staff):
        draft = draft_for(staff, [], reply_to="colleague@uni.example")
        page = staff_client.get(reverse("messaging:message_edit", args=[draft.pk])).content.decode()
        assert "Replies go to colleague@uni.example" in page
        staff_client.post(reverse("messaging:message_edit", args=[draft.pk]), compose_data(reply_to="kept"))
        draft.refresh_from_db()
        assert draft.reply_to == "colleague@uni.example"
        staff_client.post(reverse("messaging:message_edit", args=[draft.pk]), compose_data(reply_to="me"))
        draft.refresh_from_db()
        assert draft.reply_to == "coord@uni.example"

    def test_kept_cannot_be_posted_when_there_is_nothing_to_keep(self, staff_client):
        response = staff_client.post(reverse("messaging:message_create"), compose_data(reply_to="kept"))
        assert response.status_code == 200
        assert not Message.objects.exists()

    def test_a_post_without_the_fields_keeps_what_the_draft_has(self, staff_client, staff):
        draft = draft_for(staff, [], from_email=EXAMS, reply_to="colleague@uni.example")
        response = staff_client.post(reverse("messaging:message_edit", args=[draft.pk]), compose_data())
        assert response.status_code == 302
        draft.refresh_from_db()
        assert (draft.from_email, draft.reply_to) == (EXAMS, "colleague@uni.example")


class TestDroppedSender:
    """The configured list no longer has the sender a draft was saved with."""

    @pytest.fixture
    def draft(self, staff, settings):
        draft = draft_for(staff, [], from_email=EXAMS)
        settings.MESSAGING_ALLOWED_SENDERS = [STUDIES]
        return draft

    def test_the_form_says_so_and_keeps_showing_it(self, staff_client, draft):
        page = staff_client.get(reverse("messaging:message_edit", args=[draft.pk])).content.decode()
        assert 'id="sender-dropped"' in page
        assert "Exam office &lt;exams@uni.example&gt; (no longer allowed)" in page
        selected = page.split('<option value="Exam office &lt;exams@uni.example&gt;"')[1].split(">")[0]
        assert "selected" in selected

    @pytest.mark.parametrize("posted", [EXAMS, None], ids=["posted", "not posted"])
    def test_saving_it_again_is_refused(self, staff_client, draft, posted):
        response = staff_client.post(
            reverse("messaging:message_edit", args=[draft.pk]),
            compose_data(from_email=posted, body_en="<p>New</p>"),
        )
        assert "is no longer an allowed sender" in response.content.decode()
        draft.refresh_from_db()
        assert draft.composed_content["en"]["body"] == "<p>The exam moved.</p>"

    def test_it_cannot_be_sent_or_scheduled(self, staff_client, staff, draft, make_user):
        from datetime import timedelta

        from django.utils import timezone

        draft.virtual_message_receivers = {"chosen_user_ids": [make_user().pk], "group_ids": []}
        composing.save_draft(draft, staff)
        url = reverse("messaging:message_send", args=[draft.pk])
        page = staff_client.get(url).content.decode()
        assert 'id="send-sender-not-allowed"' in page
        assert 'id="confirm-send" disabled' in page
        response = staff_client.post(url, {"when": "now"}, follow=True)
        assert "Nothing was sent" in response.content.decode()
        draft.refresh_from_db()
        assert draft.status == Message.Status.DRAFT
        for send_at in (None, timezone.now() + timedelta(days=1)):
            with pytest.raises(composing.SenderNotAllowed):
                composing.queue_send(draft, staff, send_at=send_at)
        draft.refresh_from_db()
        assert draft.status == Message.Status.DRAFT
        assert not draft.receivers.exists()

    def test_choosing_another_saves(self, staff_client, draft):
        staff_client.post(
            reverse("messaging:message_edit", args=[draft.pk]), compose_data(from_email=STUDIES)
        )
        draft.refresh_from_db()
        assert draft.from_email == STUDIES

    def test_the_preview_warns(self, staff_client, draft):
        page = staff_client.get(reverse("messaging:message_preview", args=[draft.pk])).content.decode()
        assert 'id="sender-not-allowed"' in page


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    from_email=st.text(max_size=300) | st.sampled_from([DEFAULT, EXAMS, STUDIES]),
    reply_to=st.text(max_size=40) | st.sampled_from(["none", "me", "kept", ""]),
)
def test_any_posted_sender_is_saved_only_when_allowed(staff_client, from_email, reply_to):
    before = Message.objects.count()
    response = staff_client.post(
        reverse("messaging:message_create"), compose_data(from_email=from_email, reply_to=reply_to)
    )
    assert response.status_code in (200, 302)
    if response.status_code == 302:
        message = Message.objects.latest("id")
        assert message.from_email in ("", EXAMS, STUDIES)
        assert message.reply_to in ("", "coord@uni.example")
    else:
        assert Message.objects.count() == before
        assert b"invalid-feedback" in response.content


# Copies, previews, audit ------------------------------------------------------------------------


def test_a_duplicate_keeps_sender_and_reply_to(staff, make_user):
    original = draft_for(staff, [], from_email=EXAMS, reply_to="coord@uni.example")
    copy = composing.duplicate(original, actor=make_user(is_staff=True))
    copy.refresh_from_db()
    assert (copy.from_email, copy.reply_to) == (EXAMS, "coord@uni.example")


def test_the_preview_and_status_pages_show_them(
    staff_client, staff, students, django_capture_on_commit_callbacks
):
    draft = draft_for(staff, students, from_email=EXAMS, reply_to="coord@uni.example")
    preview = staff_client.get(reverse("messaging:message_preview", args=[draft.pk])).content.decode()
    assert '<span data-testid="preview-from">Exam office &lt;exams@uni.example&gt;</span>' in preview
    assert '<span data-testid="preview-reply-to">coord@uni.example</span>' in preview
    assert 'id="sender-not-allowed"' not in preview

    plain = draft_for(staff, students)
    preview = staff_client.get(reverse("messaging:message_preview", args=[plain.pk])).content.decode()
    assert '<span data-testid="preview-from">Messaging &lt;noreply@uni.example&gt;</span>' in preview
    assert "none (replies go to the sender)" in preview

    send(draft, staff, django_capture_on_commit_callbacks)
    status = staff_client.get(reverse("messaging:message_status", args=[draft.pk])).content.decode()
    assert '<span data-testid="status-from">Exam office &lt;exams@uni.example&gt;</span>' in status
    assert '<span data-testid="status-reply-to">coord@uni.example</span>' in status
    trail = status.split('id="audit-trail"')[1]
    assert "from Exam office &lt;exams@uni.example&gt;, replies to coord@uni.example" in trail


def test_the_sent_and_scheduled_events_record_them(staff, students, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    scheduled = draft_for(staff, students, from_email=STUDIES)
    composing.queue_send(scheduled, staff, send_at=timezone.now() + timedelta(days=1))
    event = scheduled.audit_events.get(action=AuditEvent.Action.SCHEDULED)
    assert (event.details["from"], event.details["reply_to"]) == (STUDIES, "")

    draft = send(
        draft_for(staff, students, from_email=EXAMS, reply_to="coord@uni.example"),
        staff,
        django_capture_on_commit_callbacks,
    )
    event = draft.audit_events.get(action=AuditEvent.Action.SENT)
    assert event.details == {"receivers": 3, "from": EXAMS, "reply_to": "coord@uni.example"}
    default = send(draft_for(staff, students), staff, django_capture_on_commit_callbacks)
    event = default.audit_events.get(action=AuditEvent.Action.SENT)
    assert (event.details["from"], event.details["reply_to"]) == (DEFAULT, "")


# The email at a real SMTP sink -----------------------------------------------------------------


class TestHeadersAtTheSink:
    def test_from_reply_to_and_envelope(
        self, staff, students, smtp_mailer, django_capture_on_commit_callbacks
    ):
        message = send(
            draft_for(staff, students, from_email=EXAMS, reply_to="coord@uni.example"),
            staff,
            django_capture_on_commit_callbacks,
        )
        assert message.status == Message.Status.SENT
        received = [m for m in smtp_mailer.received if m.rcpt_tos[0].startswith("student")]
        assert len(received) == 3
        for sunk in received:
            assert sunk.mail_from == "exams@uni.example"  # the address of the chosen sender
            headers = sunk.message
            assert headers["From"].addresses[0].display_name == "Exam office"
            assert headers["From"].addresses[0].addr_spec == "exams@uni.example"
            assert [a.addr_spec for a in headers["Reply-To"].addresses] == ["coord@uni.example"]
            assert len(headers.get_all("From")) == 1

    def test_with_a_bounce_address_the_envelope_stays_verp(
        self, settings, staff, students, smtp_mailer, django_capture_on_commit_callbacks
    ):
        settings.MESSAGING_BOUNCE_ADDRESS = "bounces@bounces.uni.example"
        message = send(
            draft_for(staff, students, from_email=EXAMS, reply_to="coord@uni.example"),
            staff,
            django_capture_on_commit_callbacks,
        )
        receivers = {r.send_to: r for r in message.receivers.all()}
        for sunk in smtp_mailer.received:
            receiver = receivers[sunk.rcpt_tos[0]]
            assert sunk.mail_from.startswith(f"bounces+r{receiver.pk}-")
            assert sunk.mail_from.endswith("@bounces.uni.example")
            assert str(sunk.message["From"]) == EXAMS
            assert str(sunk.message["Reply-To"]) == "coord@uni.example"

    def test_no_choice_means_the_default_sender_and_no_reply_to(
        self, staff, students, smtp_mailer, django_capture_on_commit_callbacks
    ):
        send(draft_for(staff, students), staff, django_capture_on_commit_callbacks)
        for sunk in smtp_mailer.received:
            assert str(sunk.message["From"]) == DEFAULT
            assert sunk.message["Reply-To"] is None
            assert sunk.mail_from == "noreply@uni.example"

    def test_a_resend_of_one_receiver_keeps_them(
        self, staff, students, smtp_mailer, django_capture_on_commit_callbacks
    ):
        message = send(
            draft_for(staff, students, from_email=STUDIES, reply_to="coord@uni.example"),
            staff,
            django_capture_on_commit_callbacks,
        )
        smtp_mailer.handler.received.clear()
        message.receivers.first().send()  # a direct send(), not the delivery run
        (sunk,) = smtp_mailer.received
        assert (str(sunk.message["From"]), str(sunk.message["Reply-To"])) == (STUDIES, "coord@uni.example")

    def test_the_sending_report_keeps_the_default_sender(
        self, staff, make_user, smtp_mailer, django_capture_on_commit_callbacks
    ):
        users = [make_user(email="ok@uni.example"), make_user(email="ghost@bounce.example")]
        message = send(
            draft_for(staff, users, from_email=EXAMS, reply_to="coord@uni.example"),
            staff,
            django_capture_on_commit_callbacks,
        )
        assert message.status == Message.Status.ERROR
        (report,) = [m for m in smtp_mailer.received if m.rcpt_tos == ("coord@uni.example",)]
        assert str(report.message["From"]) == DEFAULT
        assert report.message["Reply-To"] is None


# The hot path ----------------------------------------------------------------------------------


def _queries_of_a_send(staff, make_user, n: int, **sender) -> tuple[int, int]:
    users = [make_user(language="en") for _ in range(n)]
    message = draft_for(staff, users, **sender)
    composing.queue_send(message, staff)  # in a test transaction: runs on commit, i.e. never
    with CaptureQueriesContext(connection) as ctx:
        composing.send_composed(Message.objects.get(pk=message.pk))
    message.refresh_from_db()
    assert message.status == Message.Status.SENT
    sql = [q["sql"] for q in ctx.captured_queries]
    message_reads = [s for s in sql if s.startswith("SELECT") and 'FROM "messaging_message"' in s]
    return len(sql), len(message_reads)


def test_a_chosen_sender_costs_no_query_per_receiver(staff, make_user):
    """The email channel reads the message's sender once per batch of receivers, not per email:
    the reads of the message table do not grow with the receivers, and a send with a chosen
    sender makes exactly the queries of one without."""
    total_default, reads_5 = _queries_of_a_send(staff, make_user, 5)
    total_chosen, reads_chosen_5 = _queries_of_a_send(
        staff, make_user, 5, from_email=EXAMS, reply_to="a@uni.example"
    )
    _total, reads_chosen_60 = _queries_of_a_send(
        staff, make_user, 60, from_email=EXAMS, reply_to="a@uni.example"
    )
    assert total_chosen == total_default
    assert reads_chosen_5 == reads_5 == reads_chosen_60
    assert len(mail.outbox) == 70
    assert {m.from_email for m in mail.outbox[5:]} == {EXAMS}
    assert {tuple(m.reply_to) for m in mail.outbox[5:]} == {("a@uni.example",)}


# The fast email builder with display names (see also tests/engine/test_fast_email.py) ---------------


@pytest.mark.parametrize(
    "sender",
    [
        "Exam office <exams@uni.example>",
        '"Exams, Science" <exams@uni.example>',
        "Dept. of Science <science@uni.example>",
        "Åse Ås <ase@uni.example>",
        '"Quoted \\"Name\\"" <q@uni.example>',
        "plain@uni.example",
    ],
)
@pytest.mark.parametrize("verp", [False, True], ids=["from", "verp"])
def test_display_names_in_from_and_reply_to_read_like_djangos(sender, verp):
    def build(cls):
        kwargs = (
            {"headers": {"From": sender}, "from_email": "bounces+r1-x@b.example"}
            if verp
            else {"from_email": sender}
        )
        message = cls(subject="Hi", body="x", to=["t@uni.example"], reply_to=[sender], **kwargs)
        message.attach_alternative("<p>x</p>", "text/html")
        built = message.message(policy=email.policy.SMTP)
        return built, email.message_from_bytes(built.as_bytes(), policy=email.policy.default)

    ours_built, ours = build(FastEmailMultiAlternatives)
    _django_built, django = build(EmailMultiAlternatives)
    assert isinstance(ours_built, PreparedMessage)  # the fast path took it
    for header in ("From", "Reply-To"):
        assert ours[header].addresses == django[header].addresses
        (address,) = ours[header].addresses
        assert address.addr_spec == sender.rpartition("<")[2].rstrip(">")


def test_a_notification_address_is_used_for_reply_to_me(staff, make_user):
    UserEmail.objects.filter(user=staff).update(is_primary=False)
    UserEmail.objects.create(user=staff, email="primary@uni.example", is_primary=True)
    form = MessageForm(actor=staff)
    assert "Replies go to me (primary@uni.example)" in dict(form.fields["reply_to"].choices).values()


# Configuration from the environment ------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        '["Exam office <exams@uni.example>", "\\"Exams, Science\\" <science@uni.example>"]',
        'Exam office <exams@uni.example>\n"Exams, Science" <science@uni.example>\n\n',
    ],
    ids=["json", "one a line"],
)
def test_allowed_senders_and_the_test_limit_come_from_the_environment(value):
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "MESSAGING_ALLOWED_SENDERS": value,
        "MESSAGING_TEST_SENDS_PER_HOUR": "5",
    }
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        "print(json.dumps([settings.MESSAGING_ALLOWED_SENDERS, settings.MESSAGING_TEST_SENDS_PER_HOUR]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == [
        ["Exam office <exams@uni.example>", '"Exams, Science" <science@uni.example>'],
        5,
    ]


class TestAllowedSendersCheck:
    """A sender that does not read as one address refuses to start, naming the entry."""

    @pytest.mark.parametrize(
        "senders",
        [[EXAMS, STUDIES], ['"Exams, Science" <exams@uni.example>', "Ærlig Navn <a@uni.example>"], []],
    )
    def test_well_written_senders_pass(self, settings, senders):
        from messaging.checks import allowed_senders

        settings.MESSAGING_ALLOWED_SENDERS = senders
        assert allowed_senders() == []

    @pytest.mark.parametrize(
        "sender",
        [
            "Ærlig, Navn <a@uni.example>",
            "a@uni.example, b@uni.example",
            "not an address",
            "x@y.z\nBcc: v@w.x",
            42,
        ],
    )
    def test_a_broken_sender_is_refused(self, settings, sender):
        from messaging.checks import allowed_senders

        settings.MESSAGING_ALLOWED_SENDERS = [STUDIES, sender]
        problems = allowed_senders()
        assert [p.id for p in problems] == ["messaging.E007"]
        assert repr(sender) in problems[0].msg

    def test_a_string_instead_of_a_list_is_refused(self, settings):
        from messaging.checks import allowed_senders

        settings.MESSAGING_ALLOWED_SENDERS = STUDIES
        assert [p.id for p in allowed_senders()] == ["messaging.E007"]
