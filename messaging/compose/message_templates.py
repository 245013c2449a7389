"""Message templates: content staff reuse. A template is copied into a new draft, never linked to
it, so editing or deleting a template leaves every draft made from it as it was."""

from __future__ import annotations

import copy

from django.db import IntegrityError, transaction
from django.utils import timezone

from messaging.engine import recipients
from messaging.models import AuditEvent, Message, MessageTemplate
from messaging.operations.audit import record


class NameTaken(ValueError):
    """Another template of the same context type already has this name; nothing was saved."""


class NoContent(ValueError):
    """The message has no staff-written content to copy (another app composed it)."""


def content_languages(composed_content: dict) -> list[str]:
    """The languages with a body in a template's (or message's) content, in LANGUAGES order."""
    content = composed_content if isinstance(composed_content, dict) else {}
    return [code for code in recipients.supported_languages() if (content.get(code) or {}).get("body")]


def name_taken(name: str, context_type: str, exclude_pk: int | None = None) -> bool:
    # Case-insensitive: "Exam moved" and "exam moved" side by side would only confuse.
    found = MessageTemplate.objects.filter(context_type=context_type, name__iexact=name.strip())
    return found.exclude(pk=exclude_pk).exists() if exclude_pk else found.exists()


def save_template(template: MessageTemplate, actor=None) -> MessageTemplate:
    """Create a template, or save an edit of one; NameTaken when the name is in use for its
    context type (checked first, and again by the unique constraint against a concurrent save)."""
    template.name = template.name.strip()
    if name_taken(template.name, template.context_type, exclude_pk=template.pk):
        raise NameTaken(template.name)
    if template.pk is None:
        template.created_by = actor
    template.updated_datetime = timezone.now()
    template.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            template.save()
    except IntegrityError as exc:
        raise NameTaken(template.name) from exc
    return template


def save_as_template(message: Message, name: str, actor=None) -> MessageTemplate:
    """A new template with a copy of the message's context type and content (every language)."""
    if not message.composed_content:
        raise NoContent(f"Message #{message.pk} has no composed content.")
    template = MessageTemplate(
        name=name,
        context_type=message.context_type,
        composed_content=copy.deepcopy(message.composed_content),
    )
    return save_template(template, actor)


def delete_template(template: MessageTemplate) -> None:
    template.delete()


def start_draft(template: MessageTemplate, actor=None) -> Message:
    """A new draft with a copy of the template's context type and content, and no recipients."""
    message = Message(
        created_by=actor,
        context_type=template.context_type,
        composed_content=copy.deepcopy(template.composed_content),
        virtual_message_receivers={"chosen_user_ids": [], "group_ids": []},
    )
    message.full_clean()
    with transaction.atomic():
        message.save()
        record(message, AuditEvent.Action.CREATED, actor, template=template.pk, template_name=template.name)
    return message
