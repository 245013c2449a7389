from django import template
from django.utils.safestring import mark_safe
from django.utils.translation import get_language

register = template.Library()


@register.simple_tag
def composed_body(bodies: dict, default_language: str) -> str:
    """The staff-written body for the active language, else the default language's.

    Bodies are sanitised with an allow-list when saved, so they are safe HTML here.
    """
    return mark_safe(bodies.get(get_language()) or bodies.get(default_language, ""))
