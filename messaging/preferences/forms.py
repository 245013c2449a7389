"""The recipient's preference form: one choice of delivery mode per context type."""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.utils.translation import gettext_lazy as _

from messaging.models import DeliveryMode
from messaging.preferences.context_types import ContextTypeConfig

FIELD_PREFIX = "mode-"


@dataclass(frozen=True)
class Row:
    """One context type as the page shows it."""

    config: ContextTypeConfig
    field: forms.BoundField

    @property
    def enforced(self) -> bool:
        return self.config.enforced


class PreferencesForm(forms.Form):
    """Fields only for the types `choices` lists (preferences.choices_of): anything else posted is
    never read. An enforced type's field takes nothing but "immediately" (the page shows it
    disabled; a hand-made POST asking for another mode is refused)."""

    def __init__(self, *args, choices: list[tuple[ContextTypeConfig, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.configs = {config.key: config for config, _mode in choices}
        for config, mode in choices:
            self.fields[FIELD_PREFIX + config.key] = forms.ChoiceField(
                label=config.label,
                choices=DeliveryMode.choices,
                initial=mode,
                required=not config.enforced,  # a disabled radio is not posted
                widget=forms.RadioSelect,
                help_text=config.explanation,
                error_messages={
                    "required": _("Choose how you get these messages."),
                    "invalid_choice": _("That is not one of the choices."),
                },
            )

    def clean(self):
        cleaned = super().clean()
        for key, config in self.configs.items():
            name = FIELD_PREFIX + key
            if config.enforced and cleaned.get(name) not in (None, "", DeliveryMode.IMMEDIATELY):
                self.add_error(name, _("These messages are always sent immediately; this cannot be changed."))
        return cleaned

    def rows(self) -> list[Row]:
        return [Row(config, self[FIELD_PREFIX + key]) for key, config in self.configs.items()]

    def chosen(self) -> dict[str, str]:
        """{context type: mode} for each type whose mode may be chosen (valid forms only)."""
        return {
            key: self.cleaned_data[FIELD_PREFIX + key]
            for key, config in self.configs.items()
            if not config.enforced and self.cleaned_data.get(FIELD_PREFIX + key)
        }

    def refuse(self, context_type: str, reason: str) -> None:
        self.add_error(FIELD_PREFIX + context_type, reason)
