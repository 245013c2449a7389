"""Validation of the compose form: broken content is rejected at save, never at send."""

from __future__ import annotations

import pytest

from messaging.compose.forms import BODY_MAX_LENGTH, MessageForm
from messaging.models import Message

pytestmark = pytest.mark.django_db


def form_for(**overrides) -> MessageForm:
    data = {"context_type": "other", "subject_en": "Subject", "body_en": "<p>Body</p>"}
    data.update(overrides)
    return MessageForm({k: v for k, v in data.items() if v is not None})


def test_valid_minimal_form():
    form = form_for()
    assert form.is_valid(), form.errors
    assert form.composed_content() == {"en": {"subject": "Subject", "body": "<p>Body</p>"}}


@pytest.mark.parametrize("subject", ["Line one\nline two", "Trailing\r\n", "a\rb"])
def test_line_breaks_in_subject(subject):
    form = form_for(subject_en=subject)
    assert not form.is_valid()
    assert "line break" in str(form.errors["subject_en"])


def test_subject_too_long():
    form = form_for(subject_en="x" * 256)
    assert not form.is_valid() and "256" in str(form.errors["subject_en"])


def test_unknown_placeholder():
    form = form_for(body_en="<p>Hi {{ recipient_password }}</p>", subject_nb="{{ nope }}", body_nb="<p>x</p>")
    assert not form.is_valid()
    assert "recipient_password" in str(form.errors["body_en"])
    assert "nope" in str(form.errors["subject_nb"])


@pytest.mark.parametrize("body", ["{% load static %}<p>x</p>", "<p>{# comment #}</p>", "<p>{{ broken</p>"])
def test_template_syntax_in_body(body):
    form = form_for(body_en=body)
    assert not form.is_valid() and "body_en" in form.errors


def test_known_placeholders_are_fine():
    form = form_for(subject_en="Hi {{ recipient_first_name }}", body_en="<p>{{recipient_name}}</p>")
    assert form.is_valid(), form.errors


def test_huge_body():
    form = form_for(body_en="<p>" + "x" * BODY_MAX_LENGTH + "</p>")
    assert not form.is_valid()
    assert f"{BODY_MAX_LENGTH}" in str(form.errors["body_en"]).replace(",", "").replace("\xa0", "")


def test_missing_default_language():
    form = form_for(subject_en="", body_en="", subject_nb="Hei", body_nb="<p>Hei</p>")
    assert not form.is_valid()
    assert "subject_en" in form.errors and "body_en" in form.errors


def test_other_language_optional_but_subject_needs_a_body():
    assert form_for(subject_nb="", body_nb="").is_valid()
    form = form_for(subject_nb="Hei", body_nb="")
    assert not form.is_valid() and "body_nb" in form.errors


def test_unknown_language_rejected():
    form = form_for(subject_de="Hallo", body_de="<p>Hallo</p>")
    assert not form.is_valid()
    assert "de" in str(form.non_field_errors())


def test_html_is_sanitised():
    form = form_for(
        body_en='<p onclick="x()">Hi <a href="javascript:alert(1)">x</a><a href="https://e.org">ok</a></p>'
        "<script>alert(1)</script><img src=x onerror=y>"
    )
    assert form.is_valid(), form.errors
    body = form.cleaned_data["body_en"]
    assert "script" not in body and "onclick" not in body and "javascript" not in body and "<img" not in body
    assert 'href="https://e.org"' in body


def test_body_of_only_unsafe_html_is_an_error():
    form = form_for(body_en="<script>alert(1)</script>")
    assert not form.is_valid() and "body_en" in form.errors


def test_unknown_recipient_ids_rejected():
    form = form_for(users=["999999"])
    assert not form.is_valid() and "users" in form.errors


def test_nothing_saved_on_error(make_user):
    staff = make_user(is_staff=True)
    form = form_for(subject_en="bad\nsubject")
    assert not form.is_valid()
    assert not Message.objects.exists()
    good = form_for()
    assert good.is_valid()
    message = good.save(staff)
    assert message.pk and message.is_draft


def test_edit_keeps_initial_values(make_user):
    staff = make_user(is_staff=True)
    message = form_for(subject_nb="Hei", body_nb="<p>Hei</p>")
    assert message.is_valid()
    saved = message.save(staff)
    form = MessageForm(message=saved)
    assert form["subject_nb"].value() == "Hei" and form["body_en"].value() == "<p>Body</p>"
