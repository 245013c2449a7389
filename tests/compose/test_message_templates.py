"""Message templates: the service rules (names unique per context type, copies never links), the
staff pages (list, create, edit, delete, save a draft as a template, start a draft from one), bad
input (clear form errors, nothing saved, never a 500), permissions and the admin."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from hypothesis import given
from hypothesis import strategies as st

from messaging.compose import composing, message_templates
from messaging.engine import recipients
from messaging.engine.rendering import template_syntax_problems, validate_subject
from messaging.models import AuditEvent, Message, MessageTemplate
from tests.compose.test_hostile_forms import HOSTILE_TEXT, fuzz
from tests.conftest import grant

pytestmark = pytest.mark.django_db

EN = {
    "subject": "Exam moved, {{ recipient_first_name }}",
    "body": "<p>Hello {{ recipient_name }},</p><p>Room 101.</p>",
}
NB = {"subject": "Eksamen flyttet", "body": "<p>Hei {{ recipient_name }},</p><p>Rom 101.</p>"}
LIST_URL = reverse("messaging:template_list")
CREATE_URL = reverse("messaging:template_create")
START_URL = reverse("messaging:template_start")


@pytest.fixture
def staff(make_user):
    staff = make_user(is_staff=True, username="composer", first_name="Sam", last_name="Staff")
    return grant(staff, "view_message", "compose_message")


@pytest.fixture
def draft(staff, make_user):
    message = Message(
        context_type=Message.ContextType.DEADLINE_MOVED,
        composed_content={"en": dict(EN), "nb": dict(NB)},
        virtual_message_receivers={"chosen_user_ids": [make_user().pk], "group_ids": []},
    )
    return composing.save_draft(message, staff)


@pytest.fixture
def template(staff):
    return message_templates.save_template(
        MessageTemplate(
            name="Exam moved",
            context_type=Message.ContextType.DEADLINE_MOVED,
            composed_content={"en": dict(EN), "nb": dict(NB)},
        ),
        staff,
    )


def template_data(**overrides) -> dict:
    data = {
        "name": "Feedback ready",
        "context_type": "feedback",
        "subject_en": "Your feedback is ready",
        "body_en": '<p>Hello {{ recipient_first_name }}, read it <a href="https://example.org/f">here</a>.</p>',
        "subject_nb": "Tilbakemeldingen er klar",
        "body_nb": "<p>Hei {{ recipient_first_name }}.</p>",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


# The service ----------------------------------------------------------------------------------------


class TestService:
    def test_save_as_template_copies_context_type_and_both_languages(self, draft, staff):
        template = message_templates.save_as_template(draft, "  Exam moved  ", staff)
        template.refresh_from_db()
        assert template.name == "Exam moved"
        assert template.context_type == Message.ContextType.DEADLINE_MOVED
        assert template.composed_content == {"en": EN, "nb": NB}
        assert template.created_by == staff

    def test_the_template_is_a_copy_of_the_draft(self, draft, staff):
        template = message_templates.save_as_template(draft, "Exam moved", staff)
        draft.composed_content["en"]["subject"] = "Changed in the draft"
        composing.save_draft(draft, staff)
        template.refresh_from_db()
        assert template.composed_content["en"]["subject"] == EN["subject"]

    def test_a_name_is_used_once_per_context_type(self, draft, staff, template):
        with pytest.raises(message_templates.NameTaken):
            message_templates.save_as_template(draft, "Exam moved", staff)
        with pytest.raises(message_templates.NameTaken):
            message_templates.save_as_template(draft, "EXAM MOVED ", staff)
        # The same name under another context type is another template.
        draft.context_type = Message.ContextType.FEEDBACK
        other = message_templates.save_as_template(draft, "Exam moved", staff)
        assert other.context_type == Message.ContextType.FEEDBACK
        assert MessageTemplate.objects.filter(name="Exam moved").count() == 2

    def test_a_concurrent_save_of_the_same_name_is_name_taken_not_an_integrity_error(
        self, draft, staff, template, monkeypatch
    ):
        # The check ran before the other save committed; the unique constraint still refuses.
        monkeypatch.setattr(message_templates, "name_taken", lambda *args, **kwargs: False)
        with pytest.raises(message_templates.NameTaken):
            message_templates.save_as_template(draft, "Exam moved", staff)
        assert MessageTemplate.objects.count() == 1  # and the database connection still works

    def test_a_message_without_written_content_cannot_become_a_template(self, staff):
        message = Message.objects.create(context_type="comment", message_type=["email"])
        with pytest.raises(message_templates.NoContent):
            message_templates.save_as_template(message, "Nothing", staff)
        assert not MessageTemplate.objects.exists()

    def test_start_draft_copies_the_template_into_a_new_draft_without_recipients(self, template, staff):
        message = message_templates.start_draft(template, staff)
        message.refresh_from_db()
        assert message.status == Message.Status.DRAFT
        assert message.context_type == Message.ContextType.DEADLINE_MOVED
        assert message.composed_content == {"en": EN, "nb": NB}
        assert recipients.resolved_user_ids(message) == []
        assert message.created_by == staff
        assert message.message_type == ["email"]
        event = message.audit_events.get()
        assert event.action == AuditEvent.Action.CREATED
        assert event.actor == staff
        assert event.details == {"template": template.pk, "template_name": "Exam moved"}

    def test_the_status_page_says_which_template_it_came_from(self, template, staff, client):
        message = message_templates.start_draft(template, staff)
        client.force_login(staff)
        page = client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert "from the template “Exam moved”" in page.split('id="audit-trail"')[1]

    def test_the_draft_does_not_change_when_the_template_does(self, template, staff):
        message = message_templates.start_draft(template, staff)
        template.composed_content["en"]["body"] = "<p>Rewritten</p>"
        template.context_type = Message.ContextType.COMMENT
        message_templates.save_template(template, staff)
        message.refresh_from_db()
        assert message.composed_content["en"]["body"] == EN["body"]
        assert message.context_type == Message.ContextType.DEADLINE_MOVED
        message_templates.delete_template(template)
        assert Message.objects.filter(pk=message.pk).exists()

    def test_editing_the_draft_does_not_change_the_template(self, template, staff):
        message = message_templates.start_draft(template, staff)
        message.composed_content["nb"]["subject"] = "Endret i utkastet"
        composing.save_draft(message, staff)
        template.refresh_from_db()
        assert template.composed_content["nb"]["subject"] == NB["subject"]

    def test_content_languages_in_settings_order(self):
        content = {"nb": {"subject": "S", "body": "<p>B</p>"}, "en": {"subject": "S", "body": "<p>B</p>"}}
        assert message_templates.content_languages(content) == ["en", "nb"]
        assert message_templates.content_languages({"en": {"subject": "only a subject"}}) == []
        assert message_templates.content_languages("not a dict") == []


def listed_names(response) -> list[str]:
    return re.findall(r'data-testid="template-link">([^<]+)<', response.content.decode())


# The pages ------------------------------------------------------------------------------------------


class TestTemplatePages:
    def test_list_shows_name_context_type_languages_and_author(self, staff_client, template):
        message_templates.save_template(
            MessageTemplate(name="Only English", composed_content={"en": dict(EN)}), None
        )
        response = staff_client.get(LIST_URL)
        assert response.status_code == 200
        html = response.content.decode()
        row = re.search(rf'<tr[^>]*id="template-{template.pk}".*?</tr>', html, re.S).group(0)
        assert "Exam moved" in row and "Deadline moved" in row
        assert "English, Norwegian Bokmål" in row
        assert "Sam Staff" in row
        assert reverse("messaging:template_edit", args=[template.pk]) in row
        assert 'id="nav-templates"' in html

    def test_list_filters_by_name_and_context_type(self, staff_client, template):
        message_templates.save_template(
            MessageTemplate(name="Weekly note", context_type="other", composed_content={"en": dict(EN)}), None
        )
        assert sorted(listed_names(staff_client.get(LIST_URL))) == ["Exam moved", "Weekly note"]
        assert listed_names(staff_client.get(LIST_URL, {"q": "week"})) == ["Weekly note"]
        assert listed_names(staff_client.get(LIST_URL, {"context_type": "deadline_moved"})) == ["Exam moved"]
        assert listed_names(staff_client.get(LIST_URL, {"q": "nothing like it"})) == []
        # Bad filter values are ignored or refused by the filter form, never a 500.
        assert staff_client.get(LIST_URL, {"context_type": "no-such-type", "q": "\x00"}).status_code == 200

    def test_create_saves_sanitized_content_and_the_author(self, staff_client, staff):
        hostile = '<p onclick="steal()">Hi</p><script>alert(1)</script><img src=x onerror=alert(1)>'
        response = staff_client.post(CREATE_URL, template_data(body_en=hostile))
        template = MessageTemplate.objects.get()
        assert response.status_code == 302
        assert response["Location"] == reverse("messaging:template_edit", args=[template.pk])
        assert template.name == "Feedback ready"
        assert template.context_type == "feedback"
        assert template.created_by == staff
        assert template.composed_content["en"] == {"subject": "Your feedback is ready", "body": "<p>Hi</p>"}
        assert template.composed_content["nb"]["subject"] == "Tilbakemeldingen er klar"

    def test_create_page_has_the_language_tabs_and_placeholders(self, staff_client):
        html = staff_client.get(CREATE_URL).content.decode()
        assert 'data-testid="template-form"' in html
        assert 'id="tab-en"' in html and 'id="tab-nb"' in html
        assert 'data-insert-placeholder="recipient_first_name"' in html
        assert 'id="id_name"' in html

    def test_edit_saves_changes(self, staff_client, template):
        url = reverse("messaging:template_edit", args=[template.pk])
        page = staff_client.get(url).content.decode()
        assert 'value="Exam moved"' in page and "Eksamen flyttet" in page
        response = staff_client.post(
            url, template_data(name="Exam moved (autumn)", context_type="deadline_moved")
        )
        assert response.status_code == 302
        template.refresh_from_db()
        assert template.name == "Exam moved (autumn)"
        assert template.composed_content["en"]["subject"] == "Your feedback is ready"
        assert template.updated_datetime > template.created_datetime

    def test_edit_may_keep_its_own_name(self, staff_client, template):
        url = reverse("messaging:template_edit", args=[template.pk])
        response = staff_client.post(url, template_data(name="Exam moved", context_type="deadline_moved"))
        assert response.status_code == 302

    def test_duplicate_name_is_a_form_error_and_nothing_is_saved(self, staff_client, template):
        response = staff_client.post(
            CREATE_URL, template_data(name="exam moved", context_type="deadline_moved")
        )
        assert response.status_code == 200
        assert "template with this name already exists" in response.content.decode()
        assert 'aria-invalid="true"' in response.content.decode()
        assert MessageTemplate.objects.count() == 1

    def test_a_name_taken_between_the_check_and_the_save_is_a_form_error(
        self, staff_client, template, monkeypatch
    ):
        monkeypatch.setattr(message_templates, "name_taken", lambda *args, **kwargs: False)
        other = message_templates.save_template(
            MessageTemplate(name="Room change", context_type="deadline_moved", composed_content={"en": EN}),
            None,
        )
        url = reverse("messaging:template_edit", args=[other.pk])
        response = staff_client.post(url, template_data(name="Exam moved", context_type="deadline_moved"))
        assert response.status_code == 200
        html = response.content.decode()
        assert "template with this name already exists" in html
        assert "Edit template “Room change”" in html
        other.refresh_from_db()
        assert other.name == "Room change"

    def test_renaming_to_a_taken_name_is_a_form_error(self, staff_client, template):
        other = message_templates.save_template(
            MessageTemplate(name="Room change", context_type="deadline_moved", composed_content={"en": EN}),
            None,
        )
        url = reverse("messaging:template_edit", args=[other.pk])
        response = staff_client.post(url, template_data(name="Exam moved", context_type="deadline_moved"))
        assert response.status_code == 200
        assert "already exists" in response.content.decode()
        other.refresh_from_db()
        assert other.name == "Room change"

    @pytest.mark.parametrize(
        ("overrides", "problem"),
        [
            ({"name": ""}, "This field is required."),
            ({"name": "   "}, "This field is required."),
            ({"name": "x" * 201}, "at most 200 characters"),
            ({"name": "Exam\nmoved"}, "one line of text"),
            ({"name": "Exam\x00moved"}, "Null characters are not allowed."),
            ({"context_type": "no-such-type"}, "Select a valid choice."),
            ({"body_en": "Hello\x00"}, "Null characters are not allowed."),
            ({"subject_en": "Hi\r\nBcc: victim@example.org"}, "single line"),
            ({"body_en": "<script>alert(1)</script>"}, "Nothing is left of the body"),
            ({"body_en": "{% debug %}"}, "Only placeholders"),
            ({"body_en": "{{ settings.SECRET_KEY }}"}, "Unknown placeholder"),
            ({"subject_en": "", "body_en": ""}, "This field is required."),
            ({"subject_nb": "Bare emne", "body_nb": ""}, "Write a body for this language too"),
            ({"subject_xx": "Evil", "body_xx": "<p>x</p>"}, "Unknown language(s): xx."),
        ],
    )
    def test_bad_input_is_a_clear_error_and_nothing_is_saved(self, staff_client, overrides, problem):
        response = staff_client.post(CREATE_URL, template_data(**overrides))
        assert response.status_code == 200
        html = response.content.decode()
        assert problem in html.replace("&#x27;", "'")
        assert 'id="form-errors"' in html
        assert not MessageTemplate.objects.exists()

    def test_delete_asks_first_then_deletes(self, staff_client, template, staff):
        started = message_templates.start_draft(template, staff)
        url = reverse("messaging:template_delete", args=[template.pk])
        page = staff_client.get(url)
        assert page.status_code == 200 and "Delete the template" in page.content.decode()
        assert MessageTemplate.objects.filter(pk=template.pk).exists()
        response = staff_client.post(url)
        assert response.status_code == 302 and response["Location"] == LIST_URL
        assert not MessageTemplate.objects.filter(pk=template.pk).exists()
        assert Message.objects.get(pk=started.pk).composed_content == {"en": EN, "nb": NB}
        assert staff_client.get(url).status_code == 404

    def test_unknown_template_is_404(self, staff_client):
        assert staff_client.get(reverse("messaging:template_edit", args=[999_999])).status_code == 404
        assert staff_client.post(reverse("messaging:template_delete", args=[999_999])).status_code == 404


class TestSaveAsTemplate:
    def url(self, message) -> str:
        return reverse("messaging:message_save_as_template", args=[message.pk])

    def test_the_draft_page_links_to_it(self, staff_client, draft):
        html = staff_client.get(reverse("messaging:message_edit", args=[draft.pk])).content.decode()
        assert f'href="{self.url(draft)}"' in html

    def test_asks_for_a_name_and_saves_a_copy(self, staff_client, draft, staff):
        page = staff_client.get(self.url(draft)).content.decode()
        assert "Deadline moved" in page and 'id="id_name"' in page
        response = staff_client.post(self.url(draft), {"name": "Exam moved"})
        assert response.status_code == 302
        assert response["Location"] == reverse("messaging:message_edit", args=[draft.pk])
        template = MessageTemplate.objects.get()
        assert (template.name, template.context_type, template.created_by) == (
            "Exam moved",
            "deadline_moved",
            staff,
        )
        assert template.composed_content == {"en": EN, "nb": NB}

    def test_a_taken_name_is_a_form_error(self, staff_client, draft, template):
        response = staff_client.post(self.url(draft), {"name": "Exam Moved"})
        assert response.status_code == 200
        assert "“Deadline moved” template with this name already exists" in response.content.decode()
        assert MessageTemplate.objects.count() == 1

    @pytest.mark.parametrize("name", ["", "x" * 201, "a\x00b", "tab\there"])
    def test_bad_names_are_form_errors(self, staff_client, draft, name):
        response = staff_client.post(self.url(draft), {"name": name})
        assert response.status_code == 200
        assert 'aria-invalid="true"' in response.content.decode()
        assert not MessageTemplate.objects.exists()

    def test_a_sent_message_can_become_a_template_too(
        self, staff_client, draft, staff, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            composing.queue_send(draft, staff)
        response = staff_client.post(self.url(draft), {"name": "Last term's exam notice"})
        assert response.status_code == 302
        assert response["Location"] == reverse("messaging:message_status", args=[draft.pk])
        assert MessageTemplate.objects.get().composed_content == {"en": EN, "nb": NB}

    def test_a_message_without_written_content_is_refused(self, staff_client):
        message = Message.objects.create(context_type="comment", message_type=["email"])
        response = staff_client.post(self.url(message), {"name": "Nothing"})
        assert response.status_code == 302
        assert not MessageTemplate.objects.exists()


class TestStartFromTemplate:
    def test_new_message_page_offers_the_templates_by_context_type(self, staff_client, template):
        message_templates.save_template(MessageTemplate(name="A note", composed_content={"en": EN}), None)
        html = staff_client.get(reverse("messaging:message_create")).content.decode()
        assert 'id="start-from-template-form"' in html
        groups = re.findall(r'<optgroup label="([^"]+)">\s*(.*?)</optgroup>', html, re.S)
        assert [(label, re.findall(r">([^<]+)</option>", options)) for label, options in groups] == [
            ("Other", ["A note"]),
            ("Deadline moved", ["Exam moved"]),
        ]

    def test_new_message_page_without_templates_links_to_them(self, staff_client):
        html = staff_client.get(reverse("messaging:message_create")).content.decode()
        assert 'id="start-from-template-form"' not in html
        assert f'href="{LIST_URL}"' in html

    def test_starts_a_draft_and_opens_it(self, staff_client, template, staff):
        response = staff_client.post(START_URL, {"template": template.pk})
        message = Message.objects.get()
        assert response.status_code == 302
        assert response["Location"] == reverse("messaging:message_edit", args=[message.pk])
        assert message.composed_content == {"en": EN, "nb": NB}
        assert message.created_by == staff
        page = staff_client.get(response["Location"]).content.decode()
        assert "Exam moved, {{ recipient_first_name }}" in page and "Eksamen flyttet" in page
        assert "A new draft was made from the template" in page

    @pytest.mark.parametrize("value", ["", "999999", "abc", "\x00", "-1"])
    def test_a_bad_choice_makes_nothing(self, staff_client, value):
        response = staff_client.post(START_URL, {"template": value})
        assert response.status_code == 302
        assert response["Location"] == reverse("messaging:message_create")
        assert not Message.objects.exists()

    def test_htmx_gets_a_client_redirect(self, staff_client, template):
        response = staff_client.post(START_URL, {"template": template.pk}, HTTP_HX_REQUEST="true")
        assert response.status_code == 200
        assert response["HX-Redirect"] == reverse("messaging:message_edit", args=[Message.objects.get().pk])

    def test_get_is_not_allowed(self, staff_client):
        assert staff_client.get(START_URL).status_code == 405


@fuzz
@given(
    name=HOSTILE_TEXT,
    subject=HOSTILE_TEXT,
    body=HOSTILE_TEXT,
    nb_body=HOSTILE_TEXT,
    context_type=st.text(max_size=20) | st.sampled_from(Message.ContextType.values),
    extra_language=st.sampled_from(["", "de", "xx-evil"]),
)
def test_hostile_template_forms_never_500_and_save_only_valid_templates(
    client, make_user, name, subject, body, nb_body, context_type, extra_language
):
    staff = grant(make_user(is_staff=True), "compose_message")
    client.force_login(staff)
    data = template_data(
        name=name, context_type=context_type, subject_en=subject, body_en=body, body_nb=nb_body
    )
    if extra_language:
        data[f"body_{extra_language}"] = "<p>Hallo</p>"
    before = set(MessageTemplate.objects.values_list("pk", flat=True))
    response = client.post(CREATE_URL, data)
    assert response.status_code in (200, 302)
    created = MessageTemplate.objects.exclude(pk__in=before)
    if response.status_code == 302:
        template = created.get()
        assert template.name and "\x00" not in template.name
        for content in template.composed_content.values():
            validate_subject(content["subject"])
            assert not template_syntax_problems(content["subject"] + content["body"])
            assert "<script" not in content["body"].lower() and "onerror" not in content["body"]
    else:
        assert not created.exists()
        assert b"invalid-feedback" in response.content or b"alert-danger" in response.content


@pytest.mark.parametrize(
    "query",
    [{"sort": "../../etc/passwd"}, {"sort": "-\x00"}, {"page": "10000000000000000000000"}, {"page": "x"}],
)
def test_hostile_list_parameters_are_not_a_500(staff_client, template, query):
    assert staff_client.get(LIST_URL, query).status_code in (200, 404)


# Permissions ----------------------------------------------------------------------------------------


def template_urls(template, draft) -> list[tuple[str, str]]:
    return [
        ("GET", LIST_URL),
        ("GET", CREATE_URL),
        ("POST", CREATE_URL),
        ("GET", reverse("messaging:template_edit", args=[template.pk])),
        ("POST", reverse("messaging:template_edit", args=[template.pk])),
        ("GET", reverse("messaging:template_delete", args=[template.pk])),
        ("POST", reverse("messaging:template_delete", args=[template.pk])),
        ("POST", START_URL),
        ("GET", reverse("messaging:message_save_as_template", args=[draft.pk])),
        ("POST", reverse("messaging:message_save_as_template", args=[draft.pk])),
    ]


def test_staff_who_may_not_compose_get_403_and_nothing_changes(client, make_user, template, draft):
    viewer = grant(make_user(is_staff=True), "view_message", "send_message", "resend_message")
    client.force_login(viewer)
    for method, url in template_urls(template, draft):
        data = {"template": template.pk, "name": "Sneaky", **template_data(name="Sneaky")}
        response = client.get(url) if method == "GET" else client.post(url, data)
        assert response.status_code == 403, (method, url)
    assert list(MessageTemplate.objects.values_list("name", flat=True)) == ["Exam moved"]
    assert Message.objects.count() == 1
    assert b'id="nav-templates"' not in client.get(reverse("messaging:message_list")).content


def test_anonymous_is_sent_to_login(client, template, draft):
    for method, url in template_urls(template, draft):
        response = client.get(url) if method == "GET" else client.post(url, {"template": template.pk})
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), (
            method,
            url,
        )
    assert MessageTemplate.objects.count() == 1 and Message.objects.count() == 1


# The admin ------------------------------------------------------------------------------------------


@pytest.fixture
def admin_client_user(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.org", "pw")
    client.force_login(admin)
    return client, admin


def admin_data(**overrides) -> dict:
    data = {
        "name": "Admin made",
        "context_type": "comment",
        "composed_content": '{"en": {"subject": "Hi", "body": "<p>Hello</p>"}}',
    }
    data.update(overrides)
    return data


class TestAdmin:
    def test_changelist_add_and_change_pages_load(self, admin_client_user, template):
        client, _admin = admin_client_user
        changelist = client.get(reverse("admin:messaging_messagetemplate_changelist"), {"q": "exam"})
        assert changelist.status_code == 200 and "Exam moved" in changelist.content.decode()
        filtered = client.get(
            reverse("admin:messaging_messagetemplate_changelist"), {"context_type": "comment"}
        )
        assert filtered.status_code == 200 and "Exam moved" not in filtered.content.decode()
        assert client.get(reverse("admin:messaging_messagetemplate_add")).status_code == 200
        change = client.get(reverse("admin:messaging_messagetemplate_change", args=[template.pk]))
        assert change.status_code == 200 and "Eksamen flyttet" in change.content.decode()

    def test_add_sets_the_author_and_sanitizes_the_content(self, admin_client_user):
        client, admin = admin_client_user
        content = '{"en": {"subject": "Hi", "body": "<p>Hello</p><script>alert(1)</script>"}}'
        response = client.post(
            reverse("admin:messaging_messagetemplate_add"), admin_data(composed_content=content)
        )
        assert response.status_code == 302, response.content[:3000]
        template = MessageTemplate.objects.get()
        assert template.created_by == admin
        assert template.composed_content == {"en": {"subject": "Hi", "body": "<p>Hello</p>"}}

    def test_change_keeps_the_author(self, admin_client_user, template, staff):
        client, _admin = admin_client_user
        url = reverse("admin:messaging_messagetemplate_change", args=[template.pk])
        response = client.post(url, admin_data(name="Renamed", context_type="deadline_moved"))
        assert response.status_code == 302
        template.refresh_from_db()
        assert (template.name, template.created_by) == ("Renamed", staff)

    @pytest.mark.parametrize(
        ("overrides", "problem"),
        [
            ({"name": "exam moved", "context_type": "deadline_moved"}, "already exists"),
            ({"composed_content": "[1, 2]"}, "one entry per language"),
            ({"composed_content": "not json"}, "Enter a valid JSON."),
            (
                {"composed_content": '{"xx": {"subject": "S", "body": "<p>B</p>"}}'},
                "Unknown language(s): xx.",
            ),
            ({"composed_content": '{"en": {"subject": "S", "body": "{% debug %}"}}'}, "Only placeholders"),
            ({"composed_content": '{"nb": {"subject": "S", "body": "<p>B</p>"}}'}, "This field is required."),
            ({"name": "a\x00b"}, "Null characters are not allowed."),
        ],
    )
    def test_bad_input_is_a_form_error(self, admin_client_user, template, overrides, problem):
        client, _admin = admin_client_user
        response = client.post(reverse("admin:messaging_messagetemplate_add"), admin_data(**overrides))
        assert response.status_code == 200
        assert "errornote" in response.content.decode()
        assert problem in response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')
        assert MessageTemplate.objects.count() == 1
