"""Forms of the staff UI: composing a draft (recipients, subject and body per language)."""

from __future__ import annotations

import re

import nh3
from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from messaging import rendering
from messaging.models import Message
from messaging.services import composing

User = get_user_model()

BODY_MAX_LENGTH = 200_000
CONTENT_KEY_RE = re.compile(r"^(subject|body)_(.+)$")

# An e-mail friendly allow-list: structure, emphasis, links, lists and simple tables.
ALLOWED_TAGS = {
    "a", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "h4", "hr", "i", "li",
    "ol", "p", "pre", "s", "small", "span", "strong", "sub", "sup", "table", "tbody", "td", "th",
    "thead", "tr", "u", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "ol": {"start"},
}
URL_SCHEMES = {"http", "https", "mailto"}


def sanitize_html(html: str) -> str:
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes=URL_SCHEMES).strip()


def validate_template_syntax(value: str) -> None:
    problems = rendering.template_syntax_problems(value)
    if problems:
        raise ValidationError(problems, code="template_syntax")


def validate_subject_line(value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValidationError(_("The subject must be a single line (no line breaks)."), code="line_break")
    if len(value) > rendering.SUBJECT_MAX_LENGTH:
        raise ValidationError(
            _("The subject is %(length)d characters long; at most %(max)d are allowed."),
            code="too_long",
            params={"length": len(value), "max": rendering.SUBJECT_MAX_LENGTH},
        )
    try:
        rendering.validate_subject(value)
    except ValueError as exc:  # any rule the engine adds later
        raise ValidationError(str(exc), code="invalid_subject") from exc


def validate_body_size(value: str) -> None:
    if len(value) > BODY_MAX_LENGTH:
        raise ValidationError(
            _(
                "The body is %(length)d characters long; at most %(max)d are allowed. "
                "Shorten it or link to a page instead."
            ),
            code="too_long",
            params={"length": len(value), "max": BODY_MAX_LENGTH},
        )


class SubjectField(forms.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("strip", False)  # a trailing line break must be seen, not stripped away
        super().__init__(validators=[validate_subject_line, validate_template_syntax], **kwargs)

    def to_python(self, value):
        value = super().to_python(value)
        return value.strip(" \t") if value else value


class BodyField(forms.CharField):
    widget = forms.Textarea

    def __init__(self, **kwargs):
        super().__init__(validators=[validate_body_size, validate_template_syntax], **kwargs)


class ComposedContentForm(forms.Form):
    """A context type and a subject and body per language: what a draft and a template share."""

    context_type = forms.ChoiceField(label=_("Context type"), choices=Message.ContextType.choices)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["context_type"].widget.attrs["class"] = "form-select"
        for code, name in settings.LANGUAGES:
            required = code == settings.LANGUAGE_CODE
            self.fields[f"subject_{code}"] = SubjectField(
                label=_("Subject (%(language)s)") % {"language": name},
                required=required,
                widget=forms.TextInput(attrs={"class": "form-control", "data-placeholder-target": "1"}),
            )
            self.fields[f"body_{code}"] = BodyField(
                label=_("Body (%(language)s)") % {"language": name},
                required=required,
                widget=forms.Textarea(
                    attrs={"class": "form-control font-monospace", "rows": 14, "data-placeholder-target": "1"}
                ),
            )

    @staticmethod
    def content_initial(context_type: str, composed_content: dict) -> dict:
        initial = {"context_type": context_type}
        for code, content in composed_content.items():
            initial[f"subject_{code}"] = content.get("subject", "")
            initial[f"body_{code}"] = content.get("body", "")
        return initial

    @property
    def language_tabs(self) -> list[dict]:
        """What the template needs per language tab: fields, whether it is the default, errors."""
        tabs = []
        for code, name in settings.LANGUAGES:
            subject, body = self[f"subject_{code}"], self[f"body_{code}"]
            tabs.append(
                {
                    "code": code,
                    "name": name,
                    "is_default": code == settings.LANGUAGE_CODE,
                    "subject": subject,
                    "body": body,
                    "has_errors": bool(subject.errors or body.errors),
                    "is_empty": not (subject.value() or body.value()),
                }
            )
        return tabs

    def clean(self) -> dict:
        cleaned = super().clean()
        supported = {code for code, _name in settings.LANGUAGES}
        unknown = sorted(
            {
                m.group(2)
                for key in self.data
                if (m := CONTENT_KEY_RE.match(key)) and m.group(2) not in supported
            }
        )
        if unknown:
            raise ValidationError(
                _("Unknown language(s): %(codes)s."),
                code="unknown_language",
                params={"codes": ", ".join(unknown)},
            )
        for code in supported:
            self._clean_language(code, cleaned)
        return cleaned

    def _clean_language(self, code: str, cleaned: dict) -> None:
        subject_key, body_key = f"subject_{code}", f"body_{code}"
        if body_key not in cleaned:
            return  # the field already has an error
        body = sanitize_html(cleaned[body_key]) if cleaned[body_key] else ""
        if cleaned[body_key] and not body:
            self.add_error(body_key, _("Nothing is left of the body once unsafe HTML is removed."))
            return
        cleaned[body_key] = body
        if code == settings.LANGUAGE_CODE:
            return
        # Subject and body fall back to the default language together, never one without the
        # other: a Norwegian body under the English subject would be sent without a word.
        if cleaned.get(subject_key) and not body:
            self.add_error(
                body_key,
                _("Write a body for this language too, or clear its subject to use the default language."),
            )
        elif body and not (cleaned.get(subject_key) or "").strip():
            self.add_error(
                subject_key,
                _("Write a subject for this language too, or clear its body to use the default language."),
            )

    def composed_content(self) -> dict:
        content = {}
        for code, _name in settings.LANGUAGES:
            subject = self.cleaned_data.get(f"subject_{code}", "")
            body = self.cleaned_data.get(f"body_{code}", "")
            if subject or body:
                content[code] = {"subject": subject.strip(), "body": body}
        return content


class MessageForm(ComposedContentForm):
    users = forms.ModelMultipleChoiceField(
        label=_("Users"), queryset=User.objects.all(), required=False, widget=forms.MultipleHiddenInput
    )
    groups = forms.ModelMultipleChoiceField(
        label=_("Groups"), queryset=Group.objects.all(), required=False, widget=forms.MultipleHiddenInput
    )

    def __init__(self, data=None, *args, message: Message | None = None, **kwargs):
        self.message = message or Message()
        if data is None:
            kwargs.setdefault("initial", self.initial_for(self.message))
        super().__init__(data, *args, **kwargs)

    @classmethod
    def initial_for(cls, message: Message) -> dict:
        return {
            **cls.content_initial(message.context_type, message.composed_content),
            "users": composing.chosen_user_ids(message),
            "groups": composing.chosen_group_ids(message),
        }

    def save(self, actor) -> Message:
        message = self.message
        message.context_type = self.cleaned_data["context_type"]
        message.virtual_message_receivers = {
            "chosen_user_ids": sorted(user.pk for user in self.cleaned_data["users"]),
            "group_ids": sorted(group.pk for group in self.cleaned_data["groups"]),
        }
        message.composed_content = self.composed_content()
        return composing.save_draft(message, actor)


class RecipientSelectionForm(forms.Form):
    """The recipients part of the compose form, for the live summary endpoint."""

    users = forms.TypedMultipleChoiceField(coerce=int, required=False)
    groups = forms.TypedMultipleChoiceField(coerce=int, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Any integer is acceptable here; unknown ids resolve to nobody.
        for name in ("users", "groups"):
            self.fields[name].valid_value = lambda value: str(value).isdigit()

    def ids(self, name: str) -> list[int]:
        return self.cleaned_data.get(name, []) if self.is_valid() else []


DATETIME_ATTRS = {"type": "datetime-local", "class": "form-control"}


class SendForm(forms.Form):
    """When to send, and until when delivering still makes sense. Times are entered and shown
    in the site's time zone and stored in UTC; one that does not exist there (the hour skipped
    when clocks go forward) or is ambiguous is refused by Django's DateTimeField."""

    WHEN_NOW, WHEN_LATER = "now", "later"
    when = forms.ChoiceField(
        label=_("When"),
        choices=[(WHEN_NOW, _("Send now")), (WHEN_LATER, _("Send at a later time"))],
        widget=forms.RadioSelect(attrs={"class": "form-check-input"}),
        initial=WHEN_NOW,
        required=False,  # a plain "send" (no choice posted) sends now
    )
    send_at = forms.DateTimeField(
        label=_("Send at"),
        required=False,
        widget=forms.DateTimeInput(attrs=DATETIME_ATTRS, format="%Y-%m-%dT%H:%M"),
    )
    expires_at = forms.DateTimeField(
        label=_("Do not deliver after"),
        required=False,
        help_text=_("Optional. Receivers not reached by then are not sent (for example after a deadline)."),
        widget=forms.DateTimeInput(attrs=DATETIME_ATTRS, format="%Y-%m-%dT%H:%M"),
    )

    def __init__(self, data=None, *args, message: Message | None = None, **kwargs):
        if message is not None and message.is_scheduled and data is None:
            kwargs.setdefault(
                "initial",
                {"when": self.WHEN_LATER, "send_at": message.send_at, "expires_at": message.expires_at},
            )
        super().__init__(data, *args, **kwargs)

    def clean(self) -> dict:
        cleaned = super().clean()
        now = timezone.now()
        send_at, expires_at = cleaned.get("send_at"), cleaned.get("expires_at")
        if cleaned.get("when") == self.WHEN_LATER:
            if send_at is None and "send_at" not in self.errors:
                self.add_error("send_at", _("Choose the date and time to send at."))
            elif send_at is not None and send_at <= now:
                self.add_error("send_at", _("This time has already passed; choose a time in the future."))
        elif send_at is not None:
            # A time was typed but "Send now" is chosen: never guess which one was meant.
            self.add_error(
                "send_at", _('To send at this time, choose "Send at a later time"; to send now, clear it.')
            )
        if expires_at is not None:
            if expires_at <= now:
                self.add_error("expires_at", _("This time has already passed; choose a time in the future."))
            elif send_at is not None and expires_at <= send_at:
                self.add_error("expires_at", _("The message must be allowed to go out after its send time."))
        return cleaned
