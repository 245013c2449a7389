"""Forms of the staff UI: composing a draft (recipients, subject and body per language)."""

from __future__ import annotations

import html
import re
import unicodedata

import nh3
from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from messaging import conf
from messaging.compose import attachments as message_attachments
from messaging.compose import composing, message_templates
from messaging.engine import recipients, rendering
from messaging.models import Message, MessageAttachment, MessageTemplate
from messaging.preferences import context_types

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


HTML_TAG_RE = re.compile(r"</?[a-zA-Z][^>]*>|<!--")
BLANK_LINE_RE = re.compile(r"\n[ \t]*\n\s*")


def body_as_html(body: str) -> str:
    """A body without a single HTML tag (typed without the editor, or posted by a client) is
    plain text: blank-line-separated blocks become paragraphs, single line breaks <br>, and
    what looks like markup is text. Anything with a tag is HTML already."""
    if HTML_TAG_RE.search(body):
        return body
    blocks = BLANK_LINE_RE.split(body.replace("\r\n", "\n").replace("\r", "\n").strip())
    return "".join(
        "<p>" + html.escape(block.strip(), quote=False).replace("\n", "<br>") + "</p>"
        for block in blocks
        if block.strip()
    )


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

    context_type = forms.ChoiceField(label=_("Context type"), choices=context_types.composable_choices)

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
                    attrs={"class": "form-control", "rows": 14, "data-placeholder-target": "1"}
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
        body = sanitize_html(body_as_html(cleaned[body_key])) if cleaned[body_key] else ""
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
    # Not posted at all (a client that does not know these fields): the draft keeps its own.
    from_email = forms.ChoiceField(
        label=_("From"),
        required=False,
        help_text=_("The sender recipients see. Only the addresses this site may send from are listed."),
        error_messages={
            "invalid_choice": _("“%(value)s” is not one of the allowed senders; choose one from the list.")
        },
    )
    # Only for staff with the ignore_preferences permission: for anyone else the field is left
    # out, so a posted value is ignored and the draft keeps what it had.
    ignore_preferences = forms.BooleanField(
        label=_("Important: deliver to everyone immediately, ignoring their preferences"),
        required=False,
        help_text=_(
            "Only for what every recipient must see now (an exam moved, a system outage): recipients "
            "who turned this type off or get it in a digest get it immediately too. Recorded in the "
            "audit trail."
        ),
    )
    REPLY_TO_NONE, REPLY_TO_ME, REPLY_TO_KEPT = "none", "me", "kept"
    reply_to = forms.ChoiceField(
        label=_("Reply-To"),
        required=False,
        widget=forms.RadioSelect,
        help_text=_("Where replies from recipients go."),
    )

    def __init__(self, data=None, *args, message: Message | None = None, actor=None, **kwargs):
        self.message = message or Message()
        # The staff member's own address, for "replies go to me" ("" when they have none).
        self.actor_address = recipients.notification_address(actor) if actor is not None else ""
        if data is None:
            kwargs.setdefault("initial", self.initial_for(self.message, self.actor_address))
        super().__init__(data, *args, **kwargs)
        self.fields["from_email"].choices = self._sender_choices()
        self.fields["reply_to"].choices = self._reply_to_choices()
        if not composing.may_mark_important(actor):
            del self.fields["ignore_preferences"]

    @property
    def can_mark_important(self) -> bool:
        return "ignore_preferences" in self.fields

    @classmethod
    def initial_for(cls, message: Message, actor_address: str = "") -> dict:
        if not message.reply_to:
            reply_to = cls.REPLY_TO_NONE
        elif message.reply_to.lower() == actor_address.lower():
            reply_to = cls.REPLY_TO_ME
        else:
            reply_to = cls.REPLY_TO_KEPT
        return {
            **cls.content_initial(message.context_type, message.composed_content),
            "users": recipients.chosen_user_ids(message),
            "groups": recipients.chosen_group_ids(message),
            "from_email": message.from_email or settings.DEFAULT_FROM_EMAIL,
            "reply_to": reply_to,
            "ignore_preferences": message.ignore_preferences,
        }

    @property
    def dropped_sender(self) -> str:
        """The draft's sender, when the allowed senders no longer list it ("" otherwise)."""
        chosen = self.message.from_email
        return chosen if chosen and chosen not in conf.allowed_senders() else ""

    def _sender_choices(self) -> list[tuple[str, str]]:
        default, *others = conf.allowed_senders()
        choices = [(default, _("%(sender)s (default)") % {"sender": default}), *((s, s) for s in others)]
        if self.dropped_sender:
            # Listed, so the form shows what the draft has, but refused on save (clean_from_email).
            label = _("%(sender)s (no longer allowed)") % {"sender": self.dropped_sender}
            choices.append((self.dropped_sender, label))
        return choices

    def _reply_to_choices(self) -> list[tuple[str, str]]:
        if self.actor_address:
            me = _("Replies go to me (%(address)s)") % {"address": self.actor_address}
        else:
            me = _("Replies go to me")  # shown disabled: the staff member has no address
        choices = [(self.REPLY_TO_NONE, _("No Reply-To (replies go to the sender)")), (self.REPLY_TO_ME, me)]
        kept = self.message.reply_to
        if kept and kept.lower() != self.actor_address.lower():
            # Set by a colleague (or on a copy of their message): kept unless changed here.
            choices.append((self.REPLY_TO_KEPT, _("Replies go to %(address)s") % {"address": kept}))
        return choices

    def clean_from_email(self) -> str:
        if self.add_prefix("from_email") not in self.data:
            chosen = self.message.from_email
        else:
            chosen = self.cleaned_data["from_email"] or settings.DEFAULT_FROM_EMAIL
        if chosen and chosen not in conf.allowed_senders():
            raise ValidationError(
                _("“%(sender)s” is no longer an allowed sender; choose another one."),
                code="sender_not_allowed",
                params={"sender": chosen},
            )
        return "" if chosen == settings.DEFAULT_FROM_EMAIL else chosen

    def clean_reply_to(self) -> str:
        choice = self.cleaned_data["reply_to"]
        if choice == self.REPLY_TO_NONE:
            return ""
        if choice == self.REPLY_TO_ME:
            if not self.actor_address:
                raise ValidationError(
                    _("You have no email address, so replies cannot go to you."), code="no_address"
                )
            return self.actor_address
        return self.message.reply_to  # kept, or not posted

    def save(self, actor) -> Message:
        message = self.message
        message.context_type = self.cleaned_data["context_type"]
        message.virtual_message_receivers = {
            "chosen_user_ids": sorted(user.pk for user in self.cleaned_data["users"]),
            "group_ids": sorted(group.pk for group in self.cleaned_data["groups"]),
        }
        message.composed_content = self.composed_content()
        message.from_email = self.cleaned_data["from_email"]
        message.reply_to = self.cleaned_data["reply_to"]
        if self.can_mark_important:
            message.ignore_preferences = self.cleaned_data["ignore_preferences"]
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


# Message templates ------------------------------------------------------------------------------


def validate_template_name(value: str) -> None:
    # A name is one line of text: no line breaks, tabs or other control characters.
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValidationError(
            _("The name must be one line of text, without control characters."), code="control"
        )


def _name_taken_error(context_type: str) -> str:
    label = context_types.get(context_type).label
    return _("A “%(context_type)s” template with this name already exists; choose another name.") % {
        "context_type": label
    }


class TemplateNameField(forms.CharField):
    def __init__(self, **kwargs):
        super().__init__(
            label=_("Template name"),
            max_length=MessageTemplate._meta.get_field("name").max_length,
            validators=[validate_template_name],
            widget=forms.TextInput(attrs={"class": "form-control", "autocomplete": "off"}),
            **kwargs,
        )


class TemplateForm(ComposedContentForm):
    """A message template: its name, context type and content per language (as on a draft)."""

    name = TemplateNameField()
    field_order = ["name", "context_type"]

    def __init__(self, data=None, *args, template: MessageTemplate | None = None, **kwargs):
        self.template = template or MessageTemplate()
        if data is None:  # a new template starts as the model's default context type, explained
            initial = self.content_initial(self.template.context_type, self.template.composed_content)
            kwargs.setdefault("initial", {"name": self.template.name, **initial})
        super().__init__(data, *args, **kwargs)

    def clean(self) -> dict:
        cleaned = super().clean()
        name, context_type = cleaned.get("name"), cleaned.get("context_type")
        if name and context_type and message_templates.name_taken(name, context_type, self.template.pk):
            self.add_error("name", _name_taken_error(context_type))
        return cleaned

    def name_taken(self) -> None:
        """The name was taken by a save that came in between (the unique constraint said so)."""
        self.add_error("name", _name_taken_error(self.cleaned_data["context_type"]))

    def save(self, actor) -> MessageTemplate:
        template = self.template
        template.name = self.cleaned_data["name"]
        template.context_type = self.cleaned_data["context_type"]
        template.composed_content = self.composed_content()
        return message_templates.save_template(template, actor)


class SaveAsTemplateForm(forms.Form):
    """The name of a new template made from a message (its context type and content are copied)."""

    name = TemplateNameField()

    def __init__(self, data=None, *args, message: Message, **kwargs):
        self.message = message
        super().__init__(data, *args, **kwargs)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if message_templates.name_taken(name, self.message.context_type):
            raise ValidationError(_name_taken_error(self.message.context_type), code="name_taken")
        return name

    def name_taken(self) -> None:
        self.add_error("name", _name_taken_error(self.message.context_type))


class StartFromTemplateForm(forms.Form):
    """Which template a new draft starts from."""

    template = forms.ModelChoiceField(
        label=_("Template"),
        queryset=MessageTemplate.objects.all(),
        error_messages={"invalid_choice": _("That template does not exist (any more); choose another.")},
    )


class MessageTemplateAdminForm(forms.ModelForm):
    """The admin's template form: the content JSON passes the same rules as the compose form's
    fields (languages, subject lines, placeholders, the HTML allow-list)."""

    class Meta:
        model = MessageTemplate
        fields = ["name", "context_type", "composed_content"]
        help_texts = {
            "composed_content": _(
                'One entry per language: {"en": {"subject": "…", "body": "<p>…</p>"}, "nb": {…}}.'
            )
        }

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        validate_template_name(name)
        return name

    def clean_composed_content(self) -> dict:
        content = self.cleaned_data["composed_content"]
        if not isinstance(content, dict) or not all(isinstance(part, dict) for part in content.values()):
            raise ValidationError(
                _('Write the content as {"en": {"subject": "…", "body": "…"}}, one entry per language.'),
                code="shape",
            )
        data = {"context_type": Message.ContextType.OTHER}
        for code, part in content.items():
            data[f"subject_{code}"] = part.get("subject", "")
            data[f"body_{code}"] = part.get("body", "")
        checked = ComposedContentForm(data)
        if not checked.is_valid():
            raise ValidationError(
                [
                    f"{checked.fields[field].label}: {error}" if field in checked.fields else error
                    for field, errors in checked.errors.items()
                    for error in errors
                ]
            )
        return checked.composed_content()

    def clean(self) -> dict:
        cleaned = super().clean()
        name, context_type = cleaned.get("name"), cleaned.get("context_type")
        if name and context_type and message_templates.name_taken(name, context_type, self.instance.pk):
            self.add_error("name", _name_taken_error(context_type))
        return cleaned


# Test sends -------------------------------------------------------------------------------------


TEST_ADDRESS_MAX_LENGTH = 254  # the longest address SMTP can carry (RFC 5321)


def validate_test_address(value: str) -> None:
    """One address and nothing that would become another header or a second recipient; only
    the first problem is shown."""
    if len(value) > TEST_ADDRESS_MAX_LENGTH or "\x00" in value:
        return  # the field's length and NUL validators say so; one message is enough
    if "\n" in value or "\r" in value:
        raise ValidationError(_("Enter one address on a single line (no line breaks)."), code="line_break")
    if "," in value or ";" in value:
        raise ValidationError(_("Enter one address only (no commas or semicolons)."), code="several")
    EmailValidator(message=_("Enter a valid email address, such as name@example.org."))(value)


class TestSendForm(forms.Form):
    """Where a test of a draft goes (any address, by default the staff member's own) and in
    which language it is rendered (by default theirs)."""

    to = forms.CharField(
        label=_("Address"),
        max_length=TEST_ADDRESS_MAX_LENGTH,
        validators=[validate_test_address],
        error_messages={"required": _("Enter the address to send the test to.")},
    )
    language = forms.ChoiceField(label=_("Language"), choices=settings.LANGUAGES)

    def __init__(self, data=None, *args, actor, **kwargs):
        defaults = {
            "to": recipients.notification_address(actor),
            "language": recipients.preferred_language(actor),
        }
        if data is not None:
            # A post without these fields (the old "send a test to me" button) means the defaults.
            data = data.copy()
            for name, value in defaults.items():
                data.setdefault(name, value)
        kwargs.setdefault("initial", defaults)
        super().__init__(data, *args, **kwargs)
        self.fields["language"].choices = settings.LANGUAGES  # as configured now, not at import


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files from one <input type="file" multiple> (Django's documented pattern)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else [data] if data else []
        return [super(MultipleFileField, self).clean(file, initial) for file in files]


class AttachmentsForm(forms.Form):
    """A draft's attachments on the compose form: files to add, and current ones to remove
    (a checkbox each), both applied by the same Save as the rest of the draft."""

    attachments = MultipleFileField(label=_("Add files"), required=False)
    remove_attachments = forms.ModelMultipleChoiceField(
        label=_("Remove"),
        queryset=MessageAttachment.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, data=None, files=None, *args, message: Message | None = None, **kwargs):
        super().__init__(data, files, *args, **kwargs)
        self.message = message
        current = MessageAttachment.objects.none()
        if message is not None and message.pk:
            current = message.attachments.all()
        self.current = list(current)
        self.fields["remove_attachments"].queryset = current
        widget = self.fields["attachments"].widget
        widget.attrs.update(
            {
                "class": "form-control",
                "accept": ",".join(conf.attachment_extensions()),
                "aria-describedby": "attachments-help",
            }
        )

    @property
    def limits_text(self) -> str:
        return message_attachments.limits_text()

    @property
    def rows(self) -> list[tuple[MessageAttachment, bool]]:
        """The current attachments, each with whether its "remove" box is ticked."""
        ticked = {str(value) for value in (self["remove_attachments"].value() or [])}
        return [(attachment, str(attachment.pk) in ticked) for attachment in self.current]

    @property
    def dropped_files(self) -> list[str]:
        """Files posted with a save that failed: the browser does not keep them."""
        posted = self.files.getlist("attachments") if self.files else []
        return [message_attachments.clean_filename(file.name) for file in posted]

    def full_clean(self) -> None:
        super().full_clean()
        if self.errors.get("attachments"):
            self.fields["attachments"].widget.attrs.update(
                {"aria-invalid": "true", "aria-describedby": "attachments-help attachments-errors"}
            )

    def clean(self) -> dict:
        cleaned = super().clean()
        if "attachments" in cleaned and "remove_attachments" in cleaned:
            removing = {attachment.pk for attachment in cleaned["remove_attachments"]}
            kept = [attachment for attachment in self.current if attachment.pk not in removing]
            try:
                cleaned["uploads"] = message_attachments.check_uploads(cleaned["attachments"], kept)
            except ValidationError as refused:
                self.add_error("attachments", refused)
        return cleaned

    def save(self, message: Message) -> None:
        """Apply the removals and additions to `message` (a draft, saved in the same
        transaction); raises message_attachments.NotADraft or LimitReached."""
        message_attachments.update(
            message,
            self.cleaned_data.get("uploads", []),
            remove_ids=[attachment.pk for attachment in self.cleaned_data.get("remove_attachments", [])],
        )
