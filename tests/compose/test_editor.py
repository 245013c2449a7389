"""Bodies written without the rich-text editor: plain text keeps its paragraphs, in the stored
HTML and in both parts of the email (the editor itself: tests/e2e/test_editor.py)."""

from __future__ import annotations

import pytest

from messaging.compose import composing
from messaging.compose.forms import MessageForm, body_as_html, sanitize_html
from messaging.engine.rendering import html_to_text

pytestmark = pytest.mark.django_db


def saved_body(body: str) -> str:
    form = MessageForm({"context_type": "other", "subject_en": "Subject", "body_en": body})
    assert form.is_valid(), form.errors
    return form.composed_content()["en"]["body"]


@pytest.mark.parametrize(
    "typed,stored",
    [
        ("Hello", "<p>Hello</p>"),
        (
            "Hello,\n\nFirst paragraph.\n\nSecond paragraph.",
            "<p>Hello,</p><p>First paragraph.</p><p>Second paragraph.</p>",
        ),
        # Windows and old Mac line ends, runs of blank lines, blank lines with spaces in them.
        ("One\r\n\r\nTwo\r\nstill two\r\rThree", "<p>One</p><p>Two<br>still two</p><p>Three</p>"),
        ("\n\n  One \n \t \n\n\nTwo\n\n", "<p>One</p><p>Two</p>"),
        # What looks like markup in plain text is text.
        ("a < b && c > d", "<p>a &lt; b &amp;&amp; c &gt; d</p>"),
        ("Tom &amp; Jerry", "<p>Tom &amp;amp; Jerry</p>"),
        ("Hi {{ recipient_name }},\n\nsee you", "<p>Hi {{ recipient_name }},</p><p>see you</p>"),
    ],
)
def test_a_plain_text_body_becomes_paragraphs(typed, stored):
    assert body_as_html(typed) == stored
    assert saved_body(typed) == stored
    assert sanitize_html(stored) == stored  # stored as the server's allow-list writes it


@pytest.mark.parametrize(
    "body",
    [
        "<p>Hello</p>\n\n<p>World</p>",
        "Hello <strong>you</strong>\n\nsecond line",  # one tag: HTML as typed, line breaks and all
        "<!-- a comment -->Hello\n\nthere",
    ],
)
def test_a_body_with_any_tag_is_html(body):
    assert body_as_html(body) == body
    assert saved_body(body) == sanitize_html(body)


def test_script_posted_as_a_body_is_still_refused():
    form = MessageForm({"context_type": "other", "subject_en": "S", "body_en": "<script>alert(1)</script>"})
    assert not form.is_valid()
    assert "unsafe HTML" in str(form.errors["body_en"])


def test_the_plain_part_of_the_email_has_an_empty_line_between_paragraphs(make_user, smtp_mailer):
    staff = make_user(first_name="Ada", last_name="Lovelace", email="ada@uni.example", is_staff=True)
    typed = "Hello {{ recipient_name }},\r\n\r\nThe exam has moved.\r\nRoom 101.\r\n\r\nBring ID & < 3 pens."
    form = MessageForm({"context_type": "other", "subject_en": "Exam", "body_en": typed})
    assert form.is_valid(), form.errors
    message = form.save(staff)

    result = composing.send_test(message, staff)

    assert result.delivered, result.reason
    (sunk,) = smtp_mailer.received
    plain = sunk.message.get_body(("plain",)).get_content().replace("\r\n", "\n")  # CRLF on the wire
    assert "Hello Ada Lovelace,\n\nThe exam has moved.\nRoom 101.\n\nBring ID & < 3 pens." in plain
    html = sunk.message.get_body(("html",)).get_content()
    assert "<p>Hello Ada Lovelace,</p><p>The exam has moved.<br>Room 101.</p>" in html
    assert "<p>Bring ID &amp; &lt; 3 pens.</p>" in html


def test_editor_html_reads_well_as_plain_text():
    html = (
        "<h2>Exam moved</h2><p>To <strong>room 101</strong>.<br>Bring:</p>"
        "<ul><li><p>your ID</p></li><li><p>a pen</p></li></ul>"
        "<blockquote><p>Quoted</p></blockquote>"
        '<p>See <a href="https://example.org/" rel="noopener noreferrer">the page</a>.</p>'
    )
    text = html_to_text(html)
    assert "\n\n\n" not in text  # one empty line between blocks, however html2text ends a list
    assert not any(line != line.rstrip() for line in text.splitlines())  # no Markdown "  " breaks
    assert text == (
        "## Exam moved\n\nTo **room 101**.\nBring:\n\n  * your ID\n\n  * a pen\n\n> Quoted\n\n"
        "See [the page](https://example.org/)."
    )


def test_headings_are_heading_lines_in_the_plain_part_of_the_email(make_user, smtp_mailer):
    """The editor's "Heading" and "Subheading" (h2, h3) read as headings in the plain part: a line
    of their own, marked as Markdown does, with an empty line before and after."""
    staff = make_user(first_name="Ada", last_name="Lovelace", email="ada@uni.example", is_staff=True)
    body = (
        "<p>Hello {{ recipient_first_name }},</p><h2>Exam moved</h2><p>It is in room 101.</p>"
        "<h3>What to bring</h3><ul><li><p>your ID</p></li></ul>"
    )
    form = MessageForm({"context_type": "other", "subject_en": "Exam", "body_en": body})
    assert form.is_valid(), form.errors
    assert form.composed_content()["en"]["body"] == body  # the allow-list keeps both levels
    message = form.save(staff)

    result = composing.send_test(message, staff)

    assert result.delivered, result.reason
    (sunk,) = smtp_mailer.received
    plain = sunk.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Hello Ada,\n\n## Exam moved\n\nIt is in room 101.\n\n### What to bring\n\n  * your ID" in plain
    assert "<h2>" not in plain and "<h3>" not in plain
    html = sunk.message.get_body(("html",)).get_content()
    assert "<h2>Exam moved</h2><p>It is in room 101.</p><h3>What to bring</h3>" in html
