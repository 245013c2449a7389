"""Rendering a receiver's content: language, templates, placeholders and HTML → plain text."""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

import html2text
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation import gettext_lazy as _

SUBJECT_MAX_LENGTH = 255


TRAILING_SPACES_RE = re.compile(r"[ \t]+\n")
BLANK_LINES_RE = re.compile(r"\n{3,}")


_BODY = re.compile(r"<body[^>]*>(.*)</body\s*>", re.IGNORECASE | re.DOTALL)


def body_of(content_html: str) -> str:
    """The inside of a stored HTML document's <body> (composed messages are whole documents, and
    a page or a digest that shows one cannot nest it), else the HTML as it is. Stored HTML was
    sanitised when it was stored."""
    match = _BODY.search(content_html)
    return (match[1] if match else content_html).strip()


def html_to_text(content: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping of paragraphs
    converter.ignore_links = False
    text = converter.handle(content)
    # html2text ends a <br> with Markdown's two spaces and a list with several empty lines: one
    # empty line between blocks reads better in a plain-text email.
    return BLANK_LINES_RE.sub("\n\n", TRAILING_SPACES_RE.sub("\n", text)).strip()


# Placeholders staff (and templates) may put in subjects and bodies; each is filled per
# recipient after the language's content is rendered once.
PLACEHOLDERS: dict[str, tuple] = {
    "recipient_name": (_("Recipient's full name"), lambda u: u.get_full_name() or u.get_username()),
    "recipient_first_name": (_("Recipient's first name"), lambda u: u.first_name or u.get_username()),
    "recipient_username": (_("Recipient's username"), lambda u: u.get_username()),
}
PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
TEMPLATE_SYNTAX_RE = re.compile(r"\{%|%\}|\{#|#\}|\{\{|\}\}")


def template_syntax_problems(text: str) -> list[str]:
    """Everything in staff-written text that is not a known placeholder: tags, comments,
    unknown names, unbalanced braces. Staff text is never run through a template engine."""
    problems = []
    unknown = sorted({m.group(1) for m in PLACEHOLDER_RE.finditer(text)} - PLACEHOLDERS.keys())
    if unknown:
        problems.append(str(_("Unknown placeholder(s): %(names)s.") % {"names": ", ".join(unknown)}))
    leftover = TEMPLATE_SYNTAX_RE.findall(PLACEHOLDER_RE.sub("", text))
    if leftover:
        problems.append(
            str(
                _("Only placeholders such as {{ recipient_name }} are allowed; remove %(syntax)s.")
                % {"syntax": " ".join(sorted(set(leftover)))}
            )
        )
    return problems


def personalize(text: str, user, *, escape: bool) -> str:
    if "{{" not in text:
        return text

    def fill(match: re.Match) -> str:
        placeholder = PLACEHOLDERS.get(match.group(1))
        if placeholder is None:
            return match.group(0)
        value = placeholder[1](user)
        return html.escape(value) if escape else value

    return PLACEHOLDER_RE.sub(fill, text)


def validate_subject(subject: str) -> str:
    subject = subject.strip()
    if len(subject.splitlines()) > 1:  # \n, \r and every other Unicode line boundary
        raise ValueError(f"The subject contains a line break: {subject!r}.")
    if any(unicodedata.category(ch) == "Cc" and ch != "\t" for ch in subject):
        raise ValueError(f"The subject contains a control character: {subject!r}.")
    if len(subject) > SUBJECT_MAX_LENGTH:
        raise ValueError(
            f"The subject is {len(subject)} characters long; at most {SUBJECT_MAX_LENGTH} are allowed."
        )
    return subject


@dataclass(frozen=True)
class RenderedContent:
    subject: str
    html: str
    plain: str

    def for_user(self, user) -> RenderedContent:
        return RenderedContent(
            subject=validate_subject(personalize(self.subject, user, escape=False)),
            html=personalize(self.html, user, escape=True),
            plain=personalize(self.plain, user, escape=False),
        )


class ContentRenderer:
    """Renders subject, HTML and plain text once per language, then fills placeholders per user.

    The template context is the same for every receiver (as in the reference), so one
    rendering per language serves them all.
    """

    def __init__(self, subject_generator, template_name: str, template_context: dict | None):
        self.subject_generator = subject_generator
        self.template_name = template_name
        self.template_context = template_context or {}
        self._by_language: dict[str, RenderedContent] = {}

    def render_language(self, language: str) -> RenderedContent:
        if language not in self._by_language:
            with translation.override(language):
                subject = validate_subject(str(self.subject_generator.get_subject_text()))
                content_html = render_to_string(self.template_name, self.template_context)
            self._by_language[language] = RenderedContent(
                subject=subject, html=content_html.strip(), plain=html_to_text(content_html)
            )
        return self._by_language[language]

    def render(self, user, language: str) -> RenderedContent:
        return self.render_language(language).for_user(user)
