"""Staff's reusable templates and the files attached to a message."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from messaging.preferences.context_type_registry import ContextType
from messaging.preferences.context_type_registry import choices as context_type_choices


class MessageTemplate(models.Model):
    """Content staff reuse: a new draft starts from a copy of it (never linked to it)."""

    name = models.CharField(_("name"), max_length=200)
    context_type = models.CharField(
        _("context type"), max_length=30, choices=context_type_choices, default=ContextType.OTHER
    )
    # Same shape as Message.composed_content: {language: {"subject": str, "body": str}}.
    composed_content = models.JSONField(_("content"), default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_datetime = models.DateTimeField(_("created"), default=timezone.now)
    updated_datetime = models.DateTimeField(_("updated"), default=timezone.now)

    class Meta:
        verbose_name = _("message template")
        verbose_name_plural = _("message templates")
        ordering = ["context_type", "name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["context_type", "name"], name="messaging_template_unique_name")
        ]

    def __str__(self) -> str:
        return self.name


def attachment_upload_to(attachment: MessageAttachment, filename: str) -> str:
    # Never the uploaded name: a random one, so hostile names cannot reach the storage.
    return f"messaging/attachments/{uuid.uuid4().hex}"


class MessageAttachment(models.Model):
    """A file sent with every receiver's email of its message."""

    message = models.ForeignKey("messaging.Message", on_delete=models.CASCADE, related_name="attachments")
    file = models.FileField(_("file"), upload_to=attachment_upload_to, max_length=255)
    # The name recipients see, cleaned of paths and control characters.
    filename = models.CharField(_("file name"), max_length=255)
    content_type = models.CharField(_("type"), max_length=100)
    size = models.PositiveBigIntegerField(_("size"))
    sha256 = models.CharField(max_length=64, editable=False)
    created_datetime = models.DateTimeField(_("added"), default=timezone.now)

    class Meta:
        verbose_name = _("attachment")
        verbose_name_plural = _("attachments")
        ordering = ["id"]

    def __str__(self) -> str:
        return self.filename
