"""The "Start from a template" choice of the new-message page."""

from __future__ import annotations

from django import template

from messaging.models import Message, MessageTemplate

register = template.Library()


@register.inclusion_tag("messaging/compose/template_start.html", takes_context=True)
def start_from_template(context) -> dict:
    """Every template, grouped by context type in the order the compose form lists them."""
    by_type: dict[str, list] = {}
    for found in MessageTemplate.objects.only("pk", "name", "context_type").order_by("name", "pk"):
        by_type.setdefault(found.context_type, []).append(found)
    groups = [(label, by_type[value]) for value, label in Message.ContextType.choices if value in by_type]
    return {"groups": groups, "csrf_token": context.get("csrf_token")}
