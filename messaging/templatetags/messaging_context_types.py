from django import template

from messaging.preferences import context_types

register = template.Library()


@register.simple_tag
def context_type_explanations() -> list[tuple[str, str]]:
    """(context type, its one-line explanation) for every context type."""
    return [(str(value), text) for value, text in context_types.explanations().items()]
