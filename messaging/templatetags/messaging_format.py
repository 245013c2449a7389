"""How the staff UI writes times and languages: local time with its zone, language names."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.conf import settings
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html

register = template.Library()


def _as_datetime(value) -> datetime | None:
    """A datetime, or the ISO 8601 text status_data keeps (error entries' timestamps)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    return value if isinstance(value, datetime) else None


@register.filter
def when(value, format_name: str = "SHORT_DATETIME_FORMAT") -> str:
    """<time> in the site's time zone, with the zone's name ("26.11.2026 14:05 CET"), so nobody
    has to guess whether a time is UTC."""
    moment = _as_datetime(value)
    if moment is None:
        return value or "—"
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_default_timezone())
    local = timezone.localtime(moment)
    return format_html(
        '<time datetime="{}">{} {}</time>',
        local.isoformat(),
        date_format(local, format_name),
        local.strftime("%Z"),
    )


@register.filter
def language_label(code: str) -> str:
    """ "Norwegian Bokmål" for "nb", as settings.LANGUAGES names it; unknown codes as they are.
    (Not Django's `language_name` filter, which reads its own table: "Norwegian Bokmal".)"""
    name = dict(settings.LANGUAGES).get(code)  # lazily translated: str() is the active language's
    return str(name) if name else (code or "—")
