"""Where and in which language a user is reached (SPEC §2)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class MessagingProfile(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messaging_profile"
    )
    languagecode = models.CharField(_("language"), max_length=10, blank=True)
    # An IANA zone ("Europe/Oslo"); blank: settings.TIME_ZONE. Digests go out at local time.
    time_zone = models.CharField(_("time zone"), max_length=64, blank=True)
    # Every signed link made for this user up to this moment (preferences, unsubscribe, read)
    # stops working: staff revoke them when a link leaked (messaging/preferences/links.py).
    links_revoked_at = models.DateTimeField(_("email links revoked"), null=True, blank=True)

    class Meta:
        verbose_name = _("messaging profile")
        verbose_name_plural = _("messaging profiles")

    def __str__(self) -> str:
        return f"{self.user} ({self.languagecode or '-'})"


class UserEmail(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messaging_emails"
    )
    email = models.EmailField(_("email"), max_length=255)
    use_for_notifications = models.BooleanField(_("use for notifications"), default=True)
    is_primary = models.BooleanField(_("primary"), default=False)

    class Meta:
        verbose_name = _("user email")
        verbose_name_plural = _("user emails")
        ordering = ["id"]

    def __str__(self) -> str:
        return self.email
