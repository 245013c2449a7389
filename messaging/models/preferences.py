"""How recipients get each context type: staff's defaults and each user's choice."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from messaging.preferences.context_type_registry import DeliveryMode
from messaging.preferences.context_type_registry import choices as context_type_choices


class ContextTypeSetting(models.Model):
    """Staff's setting for one context type, over what the code registered
    (messaging.preferences.context_types): its label, default delivery mode and whether it is enforced."""

    context_type = models.CharField(
        _("context type"), max_length=30, unique=True, choices=context_type_choices
    )
    label = models.CharField(
        _("label"), max_length=100, blank=True, help_text=_("Blank: the built-in label.")
    )
    default_mode = models.CharField(_("default delivery"), max_length=20, choices=DeliveryMode)
    enforced = models.BooleanField(
        _("enforced"),
        default=False,
        help_text=_("Always delivered immediately: recipients cannot turn it off or delay it."),
    )

    class Meta:
        verbose_name = _("context type setting")
        verbose_name_plural = _("context type settings")
        ordering = ["context_type"]

    def __str__(self) -> str:
        return self.label or self.get_context_type_display()


class NotificationPreference(models.Model):
    """How one user wants the messages of one context type (absent: the type's default)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    context_type = models.CharField(_("context type"), max_length=30, choices=context_type_choices)
    mode = models.CharField(_("delivery"), max_length=20, choices=DeliveryMode)
    updated_datetime = models.DateTimeField(_("changed"), default=timezone.now)

    class Meta:
        verbose_name = _("notification preference")
        verbose_name_plural = _("notification preferences")
        ordering = ["user_id", "context_type"]
        constraints = [
            models.UniqueConstraint(fields=["user", "context_type"], name="notification_preference_once")
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.context_type}: {self.mode}"
