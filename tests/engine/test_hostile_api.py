"""Hostile and random values at the public Python API: clear errors, never a crash, nothing
half-saved (hypothesis)."""

from html import escape
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messaging.engine.rendering import (
    PLACEHOLDER_RE,
    PLACEHOLDERS,
    personalize,
    template_syntax_problems,
    validate_subject,
)
from messaging.models import Message, MessageReceiver
from tests.engine_helpers import SEND_ARGS, FixedSubject

pytestmark = pytest.mark.django_db

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
hypothesis_settings = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@hypothesis_settings
@given(data=json_values | st.dictionaries(st.just("user_ids"), json_values))
def test_virtual_receivers_validation_is_valueerror_or_valid(data):
    message = Message(virtual_message_receivers=data)
    try:
        message.validate_virtual_message_receivers()
    except ValueError as exc:
        assert "virtual_message_receivers" in str(exc)
    else:
        ids = data["user_ids"]
        assert ids and all(type(v) is int for v in ids)


@hypothesis_settings
@given(value=json_values)
def test_message_type_cleaning_never_crashes(value):
    from django.core.exceptions import ValidationError

    message = Message(message_type=value)
    try:
        message.clean_message_type()
    except ValidationError as exc:
        assert "message_type" in exc.message_dict
    else:
        assert message.message_type == ["email"]


@hypothesis_settings
@given(text=st.text(max_size=300))
def test_subject_validation_is_clean_or_a_clear_valueerror(text):
    try:
        subject = validate_subject(text)
    except ValueError as exc:
        assert any(why in str(exc) for why in ("line break", "control character", "at most 255"))
    else:
        assert "\n" not in subject and len(subject) <= 255


@hypothesis_settings
@given(
    text=st.text(max_size=200)
    | st.sampled_from(
        [
            "{% load static %}",
            "{% include 'x.html' %}",
            "{% debug %}",
            "{{ settings.SECRET_KEY }}",
            "{{ user.delete }}",
            "{{ recipient_name",
            "{# c #}",
            "{{ recipient_name }}",
        ]
    )
)
def test_only_known_placeholders_pass_the_syntax_check(text):
    problems = template_syntax_problems(text)
    if not problems:
        names = {m.group(1) for m in PLACEHOLDER_RE.finditer(text)}
        assert names <= PLACEHOLDERS.keys()
        rest = PLACEHOLDER_RE.sub("", text)
        assert not any(token in rest for token in ("{%", "%}", "{#", "#}", "{{", "}}"))


@hypothesis_settings
@given(name=st.text(max_size=50))
def test_placeholders_escape_hostile_names_in_html(name):
    user = SimpleNamespace(first_name=name, get_username=lambda: "u", get_full_name=lambda: name)
    html = personalize("<p>{{ recipient_first_name }}</p>", user, escape=True)
    assert html == f"<p>{escape(name or 'u')}</p>"


@hypothesis_settings
@given(subject=st.text(max_size=300))
def test_prepare_and_send_with_hostile_subjects_never_half_saves(make_user, subject):
    user = make_user()
    message = Message.objects.create(virtual_message_receivers={"user_ids": [user.pk]})
    message.prepare_and_send(FixedSubject(text=subject), **SEND_ARGS)
    message.refresh_from_db()
    count = MessageReceiver.objects.filter(message=message).count()
    if message.status == Message.Status.ERROR and message.status_data.get("errors"):
        assert count == 0  # preparing failed: no half-created receivers
    else:
        assert message.status == Message.Status.SENT and count == 1
