"""The compose form's rich-text editor (Tiptap, static/messaging/editor.js) in a real Chromium.

What the editor writes into the body field must be what the server keeps: every toolbar action
is applied, its HTML read from the page and run through the server's own sanitize_html
(unchanged), saved as the draft's body (stored as it is) and loaded again (the same document).
Placeholders are tokens in the editor and "{{ name }}" in the HTML; Word and Google Docs
clipboard HTML comes in clean; plain text keeps its paragraphs; the toolbar is reachable and
usable with the keyboard; nothing on the page logs an error or breaks the CSP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from playwright.sync_api import Page, expect

from messaging.compose.forms import sanitize_html
from messaging.models import Message
from tests.e2e.conftest import (
    PASSWORD,
    assert_accessible,
    composed_draft,
    make_staff,
    paste_into_editor,
    sign_in,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BODY = "#id_body_en"
EDITOR = "#id_body_en-editor"
TOOLBAR = '[data-rich-text-for="id_body_en"] [role="toolbar"]'
FIRST, SECOND = "First paragraph", "Second paragraph"
PLAIN = f"<p>{FIRST}</p><p>{SECOND}</p>"
LINK = '<a href="https://example.org/exams" rel="noopener noreferrer">'


@pytest.fixture
def staff(make_user):
    return make_staff(make_user, ("view_message", "compose_message"))


@pytest.fixture
def draft(staff):
    return composed_draft(staff, [], "Exam moved", "<p>Draft body</p>")


@pytest.fixture
def page(e2e_page, e2e_problems, live_server, staff, draft):
    """The draft's edit page, signed in; at the end, no console error, page error or CSP report."""
    sign_in(e2e_page, live_server.url, staff, f"/messages/{draft.pk}/edit/")
    expect(e2e_page.locator(EDITOR)).to_be_visible()
    yield e2e_page
    assert e2e_problems.page_errors == []
    assert e2e_problems.csp_violations == []
    assert e2e_problems.console_errors == []


# Helpers ------------------------------------------------------------------------------------------


def field_value(page: Page, selector: str = BODY) -> str:
    """What the form posts: the (hidden) textarea's value."""
    return page.eval_on_selector(selector, "field => field.value")


def editor_html(page: Page, selector: str = EDITOR) -> str:
    """The editor's own serialisation of what it shows now (placeholders as their marker spans)."""
    return page.eval_on_selector(selector, "element => element.editor.getHTML()")


def command(page: Page, name: str):
    return page.locator(f'{TOOLBAR} [data-editor-command="{name}"]')


def write_two_paragraphs(page: Page) -> None:
    """Replace the body with two typed paragraphs and select the first one."""
    editor = page.locator(EDITOR)
    editor.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.press("Delete")
    page.keyboard.type(FIRST)
    page.keyboard.press("Enter")
    page.keyboard.type(SECOND)
    page.keyboard.press("ControlOrMeta+Home")
    page.keyboard.press("Shift+End")
    assert field_value(page) == PLAIN


def add_link(page: Page, address: str) -> None:
    command(page, "link").click()
    url = page.locator("#id_body_en-link-url")
    expect(url).to_be_focused()
    url.fill(address)
    url.press("Enter")
    expect(page.locator("#id_body_en-link-form")).to_be_hidden()


def save_and_reload(page: Page, draft: Message) -> None:
    """Save the draft (htmx, then the redirect back to the edit page) and wait for the editor."""
    with page.expect_navigation():
        page.locator("#save-draft").click()
    expect(page.locator("#messages .alert-success, .alert-success").first).to_be_visible()
    expect(page.locator(EDITOR)).to_be_visible()


def paste(page: Page, *, html: str | None = None, text: str | None = None) -> None:
    paste_into_editor(page, "en", html=html, text=text)


# Every toolbar action: its HTML survives the server unchanged ------------------------------------


@dataclass(frozen=True)
class Action:
    name: str
    apply: callable
    html: str


def press(name: str):
    return lambda page: command(page, name).click()


def link_then_unlink(page: Page) -> None:
    add_link(page, "https://example.org/exams")
    assert field_value(page) == f"<p>{LINK}{FIRST}</a></p><p>{SECOND}</p>"
    page.locator(EDITOR).click()  # the cursor inside the link, nothing selected
    page.keyboard.press("ControlOrMeta+Home")
    page.keyboard.press("ArrowRight")
    command(page, "unlink").click()


def bold_then_undo(page: Page) -> None:
    command(page, "bold").click()
    assert field_value(page) == f"<p><strong>{FIRST}</strong></p><p>{SECOND}</p>"
    command(page, "undo").click()


def bold_undo_redo(page: Page) -> None:
    bold_then_undo(page)
    expect(command(page, "redo")).to_be_enabled()
    command(page, "redo").click()


def heading_then_subheading(page: Page) -> None:
    command(page, "heading-2").click()
    assert field_value(page) == f"<h2>{FIRST}</h2><p>{SECOND}</p>"
    command(page, "heading-3").click()  # one paragraph style at a time: the subheading replaces it


def heading_with_a_link(page: Page) -> None:
    command(page, "heading-2").click()
    page.keyboard.press("ControlOrMeta+Home")
    page.keyboard.press("Shift+End")
    add_link(page, "https://example.org/exams")


def heading_bold_then_clear(page: Page) -> None:
    command(page, "heading-2").click()
    command(page, "bold").click()
    assert field_value(page) == f"<h2><strong>{FIRST}</strong></h2><p>{SECOND}</p>"
    command(page, "clear").click()


ACTIONS = [
    Action("bold", press("bold"), f"<p><strong>{FIRST}</strong></p><p>{SECOND}</p>"),
    Action("italic", press("italic"), f"<p><em>{FIRST}</em></p><p>{SECOND}</p>"),
    Action("underline", press("underline"), f"<p><u>{FIRST}</u></p><p>{SECOND}</p>"),
    Action("strike", press("strike"), f"<p><s>{FIRST}</s></p><p>{SECOND}</p>"),
    Action("heading-2", press("heading-2"), f"<h2>{FIRST}</h2><p>{SECOND}</p>"),
    Action("heading-3", press("heading-3"), f"<h3>{FIRST}</h3><p>{SECOND}</p>"),
    Action("heading, then subheading", heading_then_subheading, f"<h3>{FIRST}</h3><p>{SECOND}</p>"),
    Action("heading with a link", heading_with_a_link, f"<h2>{LINK}{FIRST}</a></h2><p>{SECOND}</p>"),
    Action("bullet-list", press("bullet-list"), f"<ul><li><p>{FIRST}</p></li></ul><p>{SECOND}</p>"),
    Action("ordered-list", press("ordered-list"), f"<ol><li><p>{FIRST}</p></li></ol><p>{SECOND}</p>"),
    Action("blockquote", press("blockquote"), f"<blockquote><p>{FIRST}</p></blockquote><p>{SECOND}</p>"),
    Action(
        "link", lambda page: add_link(page, "example.org/exams"), f"<p>{LINK}{FIRST}</a></p><p>{SECOND}</p>"
    ),
    Action(
        "mailto link",
        lambda page: add_link(page, "exams@example.org"),
        f'<p><a href="mailto:exams@example.org" rel="noopener noreferrer">{FIRST}</a></p><p>{SECOND}</p>',
    ),
    Action("unlink", link_then_unlink, PLAIN),
    Action("undo", bold_then_undo, PLAIN),
    Action("redo", bold_undo_redo, f"<p><strong>{FIRST}</strong></p><p>{SECOND}</p>"),
    Action("clear", heading_bold_then_clear, PLAIN),
]


def test_every_toolbar_action_survives_the_server_and_a_reload(page, draft):
    for action in ACTIONS:
        write_two_paragraphs(page)
        action.apply(page)
        html = field_value(page)
        assert html == action.html, action.name
        assert sanitize_html(html) == html, f"{action.name}: the server would change {html!r}"

        save_and_reload(page, draft)
        draft.refresh_from_db()
        assert draft.composed_content["en"]["body"] == html, action.name
        assert field_value(page) == html, action.name
        assert editor_html(page) == html, f"{action.name}: loads as {editor_html(page)!r}"
        expect(page.locator("#form-errors")).to_have_count(0)


def test_toolbar_shows_what_applies_at_the_cursor(page):
    write_two_paragraphs(page)
    bold = command(page, "bold")
    expect(bold).to_have_attribute("aria-pressed", "false")
    bold.click()
    expect(bold).to_have_attribute("aria-pressed", "true")
    expect(bold).to_have_class(re.compile(r"\bactive\b"))
    page.keyboard.press("ControlOrMeta+End")  # into the second, plain paragraph
    expect(bold).to_have_attribute("aria-pressed", "false")
    expect(command(page, "unlink")).to_be_disabled()  # not in a link
    expect(command(page, "undo")).to_be_enabled()
    # An address typed in the text becomes a link as it is finished, and the server keeps it.
    page.keyboard.type(" at https://example.org/exams today")
    html = field_value(page)
    link = f"{LINK}https://example.org/exams</a>"
    assert html == f"<p><strong>{FIRST}</strong></p><p>{SECOND} at {link} today</p>"
    assert sanitize_html(html) == html
    for _ in "x today":
        page.keyboard.press("ArrowLeft")
    expect(command(page, "unlink")).to_be_enabled()


def test_heading_buttons_show_and_toggle_the_paragraph_style(page):
    write_two_paragraphs(page)
    heading, subheading = command(page, "heading-2"), command(page, "heading-3")
    expect(heading).to_have_attribute("aria-keyshortcuts", "Control+Alt+2")
    expect(subheading).to_have_attribute("aria-keyshortcuts", "Control+Alt+3")
    expect(heading).to_have_attribute("aria-pressed", "false")
    heading.click()
    expect(heading).to_have_attribute("aria-pressed", "true")
    expect(heading).to_have_class(re.compile(r"\bactive\b"))
    expect(subheading).to_have_attribute("aria-pressed", "false")
    subheading.click()
    expect(subheading).to_have_attribute("aria-pressed", "true")
    expect(heading).to_have_attribute("aria-pressed", "false")
    assert field_value(page) == f"<h3>{FIRST}</h3><p>{SECOND}</p>"
    # The caret is moved by clicks, and each is awaited on the buttons: a key pressed before the
    # editor has read the browser's selection change would apply at the old caret.
    page.locator(f"{EDITOR} p").click()  # the second paragraph is no heading
    expect(heading).to_have_attribute("aria-pressed", "false")
    expect(subheading).to_have_attribute("aria-pressed", "false")
    page.locator(f"{EDITOR} h3").click()
    expect(subheading).to_have_attribute("aria-pressed", "true")
    subheading.click()  # pressed again: a paragraph again
    expect(subheading).to_have_attribute("aria-pressed", "false")
    assert field_value(page) == PLAIN

    # The shortcuts the buttons announce.
    page.keyboard.press("ControlOrMeta+Alt+2")
    expect(heading).to_have_attribute("aria-pressed", "true")
    page.locator(f"{EDITOR} p").click()
    expect(heading).to_have_attribute("aria-pressed", "false")  # the editor has the click's caret
    page.keyboard.press("ControlOrMeta+Alt+3")
    expect(subheading).to_have_attribute("aria-pressed", "true")
    assert field_value(page) == f"<h2>{FIRST}</h2><h3>{SECOND}</h3>"

    # Markdown's "## " and "### " at the start of a line; other levels stay text.
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.press("Delete")
    page.keyboard.type("## Dates")
    page.keyboard.press("Enter")  # after a heading comes a paragraph
    page.keyboard.type("### Rooms")
    page.keyboard.press("Enter")
    page.keyboard.type("# One hash and #### four stay text")
    html = field_value(page)
    assert html == "<h2>Dates</h2><h3>Rooms</h3><p># One hash and #### four stay text</p>"
    assert sanitize_html(html) == html


def test_link_form_accepts_only_web_and_email_addresses(page):
    write_two_paragraphs(page)
    link_button = command(page, "link")
    form, url = page.locator("#id_body_en-link-form"), page.locator("#id_body_en-link-url")
    page.keyboard.press("ControlOrMeta+k")  # the shortcut opens the same form
    expect(form).to_be_visible()
    expect(link_button).to_have_attribute("aria-expanded", "true")
    expect(url).to_be_focused()
    assert_accessible(page, "the compose page with the link form open")
    for hostile in ("javascript:alert(1)", "data:text/html,<b>x</b>", "ftp://example.org/", "https://"):
        url.fill(hostile)
        url.press("Enter")  # refused in place; the compose form is not submitted
        expect(page.locator("#id_body_en-link-error")).to_be_visible()
        expect(url).to_have_attribute("aria-invalid", "true")
        assert field_value(page) == PLAIN, hostile
    url.press("Escape")
    expect(form).to_be_hidden()
    expect(link_button).to_have_attribute("aria-expanded", "false")
    expect(page.locator(EDITOR)).to_be_focused()
    assert "href" not in field_value(page)

    # Pasted links with other schemes are not links either.
    paste(
        page,
        html='<p><a href="javascript:alert(1)">click</a> '
        '<a href="https://example.org/" target="_blank" class="x">ok</a></p>',
    )
    assert field_value(page) == '<p>click <a href="https://example.org/" rel="noopener noreferrer">ok</a></p>'


# Placeholders -------------------------------------------------------------------------------------


def test_placeholders_are_tokens_in_the_body_and_text_in_the_subject(page, draft):
    editor = page.locator(EDITOR)
    editor.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("Hello ")
    page.get_by_test_id("placeholders-en").get_by_role("button", name="Recipient's full name").click()
    token = editor.locator('.placeholder-token[data-placeholder="recipient_name"]')
    expect(token).to_have_text(re.compile(r"Recipient's full name$"))
    expect(token).to_have_attribute("contenteditable", "false")
    expect(editor).to_be_focused()  # typing goes on after the token
    page.keyboard.type(", welcome")
    # Typed by hand, a known placeholder becomes a token too; an unknown one stays text.
    page.keyboard.type(" {{ recipient_username }} {{ shoe_size }}")
    expect(editor.locator('.placeholder-token[data-placeholder="recipient_username"]')).to_have_count(1)
    html = "<p>Hello {{ recipient_name }}, welcome {{ recipient_username }} {{ shoe_size }}</p>"
    assert field_value(page) == html
    assert sanitize_html(html) == html

    # The subject, focused last, gets the text.
    subject = page.locator("#id_subject_en")
    subject.click()
    page.keyboard.press("End")
    page.get_by_test_id("placeholders-en").get_by_role("button", name="Recipient's first name").click()
    expect(subject).to_have_value("Exam moved{{ recipient_first_name }}")
    assert field_value(page) == html  # the body is untouched

    # The unknown placeholder is refused by the server, in place.
    page.locator("#save-draft").click()
    expect(page.locator("#id_body_en-errors")).to_contain_text("shoe_size")
    expect(page.locator(EDITOR)).to_have_attribute("aria-invalid", "true")
    expect(page.locator(EDITOR)).to_have_class(re.compile(r"\bis-invalid\b"))
    expect(page.locator(EDITOR)).to_have_attribute("aria-describedby", re.compile(r"id_body_en-errors"))
    expect(page.locator("#id_subject_en")).not_to_have_attribute("aria-invalid", "true")
    draft.refresh_from_db()
    assert draft.composed_content["en"]["body"] == "<p>Draft body</p>"

    # The re-rendered form has a working editor again (htmx swapped it in).
    page.locator(EDITOR).click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("Hello ")
    page.get_by_test_id("placeholders-en").get_by_role("button", name="Recipient's full name").click()
    expected = "<p>Hello {{ recipient_name }}</p>"
    assert field_value(page) == expected
    save_and_reload(page, draft)
    draft.refresh_from_db()
    assert draft.composed_content["en"]["body"] == expected
    assert draft.composed_content["en"]["subject"] == "Exam moved{{ recipient_first_name }}"
    expect(page.locator(f'{EDITOR} .placeholder-token[data-placeholder="recipient_name"]')).to_be_visible()
    assert field_value(page) == expected


def test_the_other_language_uses_its_own_editor_and_the_default_badge_follows_it(page):
    page.locator("#tab-nb").click()
    badge = page.get_by_test_id("fallback-badge-nb")
    expect(badge).to_be_visible()
    page.locator("#id_subject_nb").fill("Eksamen flyttet")
    nb_editor = page.locator("#id_body_nb-editor")
    nb_editor.click()
    page.keyboard.type("Hei ")
    page.get_by_test_id("placeholders-nb").get_by_role("button", name="Recipient's first name").click()
    assert field_value(page, "#id_body_nb") == "<p>Hei {{ recipient_first_name }}</p>"
    assert field_value(page) == "<p>Draft body</p>"  # English untouched
    expect(badge).to_be_hidden()
    page.locator("#id_subject_nb").fill("")
    nb_editor.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.press("Delete")
    assert field_value(page, "#id_body_nb") == ""  # an emptied editor is an empty field
    expect(badge).to_be_visible()


# Paste ------------------------------------------------------------------------------------------

CLEAN = (
    "<p><strong>Exam moved</strong> to <em>room 101</em>.</p>"
    "<ul><li><p>Bring your ID</p></li><li><p>Bring a pen</p></li></ul>"
    f"<p>See {LINK}the exam page</a>, {{{{ recipient_name }}}}.</p>"
)
WORD_CLEAN = CLEAN.replace(
    "<li><p>Bring your ID</p></li>", "<li><p>Bring your ID</p><ol><li><p>with a photo</p></li></ol></li>"
)

# What Word (Microsoft 365, Windows) puts on the clipboard, shortened: a style sheet, styles,
# classes, language spans, <o:p>, conditional comments, and lists as paragraphs with the bullet
# or number drawn as text (here a bulleted list with a numbered one inside).
WORD_SYMBOL = "font-family:Symbol;mso-fareast-font-family:Symbol;mso-bidi-font-family:Symbol"
WORD_GAP = "<span style='font:7.0pt \"Times New Roman\"'>&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;&nbsp;\n</span>"


def word_item(css_class: str, level: int, marker: str, text: str) -> str:
    return (
        f"<p class={css_class} style='text-indent:-18.0pt;mso-list:l0 level{level} lfo1'>"
        f"<![if !supportLists]><span\nlang=EN-US style='{WORD_SYMBOL}'><span style='mso-list:Ignore'>{marker}"
        f"{WORD_GAP}</span></span><![endif]><span\nlang=EN-US>{text}<o:p></o:p></span></p>\n"
    )


WORD_HTML = (
    '<html xmlns:o="urn:schemas-microsoft-com:office:office"\n'
    'xmlns:w="urn:schemas-microsoft-com:office:word" xmlns="http://www.w3.org/TR/REC-html40">\n'
    '<head><meta http-equiv=Content-Type content="text/html; charset=utf-8">\n'
    '<meta name=ProgId content=Word.Document><meta name=Generator content="Microsoft Word 15">\n'
    "<!--[if gte mso 9]><xml><o:OfficeDocumentSettings><o:AllowPNG/></o:OfficeDocumentSettings>\n"
    "</xml><![endif]-->\n"
    '<style><!-- p.MsoNormal {margin:0cm;font-size:11.0pt;font-family:"Calibri",sans-serif;}\n'
    "@list l0 {mso-list-id:1426724591;} --></style></head>\n"
    "<body lang=EN-GB link=\"#0563C1\" style='tab-interval:36.0pt;word-wrap:break-word'>\n"
    "<!--StartFragment-->\n"
    "<p class=MsoNormal><b><span lang=EN-US style='mso-ansi-language:EN-US'>Exam moved</span></b><span\n"
    "lang=EN-US style='mso-ansi-language:EN-US'> to <i>room 101</i>.<o:p></o:p></span></p>\n"
    "<p class=MsoNormal><span lang=EN-US style='mso-ansi-language:EN-US'><o:p>&nbsp;</o:p></span></p>\n"
    + word_item("MsoListParagraphCxSpFirst", 1, "·", "Bring your ID")
    + word_item("MsoListParagraphCxSpMiddle", 2, "a)", "with a photo")
    + word_item("MsoListParagraphCxSpLast", 1, "·", "Bring a pen")
    + '<p class=MsoNormal><span lang=EN-US>See <a href="https://example.org/exams"><span\n'
    "style='color:#0563C1'>the exam page</span></a>, {{ recipient_name }}.<o:p></o:p></span></p>\n"
    "<!--EndFragment-->\n</body></html>"
)

# What Google Docs puts on the clipboard: everything in a <b> that is not bold, styles on every
# span, font-weight:700 for bold, a <br> for each empty line between blocks.
SPAN = (
    "font-size:11pt;font-family:Arial,sans-serif;color:#000000;background-color:transparent;"
    "font-variant:normal;text-decoration:none;vertical-align:baseline;white-space:pre;white-space:pre-wrap;"
)
LINK_SPAN = SPAN.replace("text-decoration:none;", "text-decoration:underline;") + "color:#1155cc;"
P = 'dir="ltr" style="line-height:1.38;margin-top:0pt;margin-bottom:0pt;"'
LI = f'dir="ltr" style="list-style-type:disc;{SPAN}font-weight:400;font-style:normal;" aria-level="1"'
GOOGLE_DOCS_HTML = (
    '<meta charset="utf-8">'
    '<b style="font-weight:normal;" id="docs-internal-guid-5d1c3f0e-7fff-1a2b-3c4d-5e6f7a8b9c0d">'
    f'<p {P}><span style="{SPAN}font-weight:700;font-style:normal;">Exam moved</span>'
    f'<span style="{SPAN}font-weight:400;font-style:normal;"> to </span>'
    f'<span style="{SPAN}font-weight:400;font-style:italic;">room 101</span>'
    f'<span style="{SPAN}font-weight:400;font-style:normal;">.</span></p><br>'
    '<ul style="margin-top:0;margin-bottom:0;padding-inline-start:48px;">'
    f'<li {LI}><p {P} role="presentation"><span style="{SPAN}font-weight:400;">Bring your ID</span></p></li>'
    f'<li {LI}><p {P} role="presentation"><span style="{SPAN}font-weight:400;">Bring a pen</span></p></li>'
    "</ul><br>"
    f'<p {P}><span style="{SPAN}font-weight:400;">See </span>'
    '<a href="https://example.org/exams" style="text-decoration:none;">'
    f'<span style="{LINK_SPAN}font-weight:400;">the exam page</span></a>'
    f'<span style="{SPAN}font-weight:400;">, {{{{ recipient_name }}}}.</span></p></b>'
    '<br class="Apple-interchange-newline">'
)


@pytest.mark.parametrize(
    "source,html,clean", [("Word", WORD_HTML, WORD_CLEAN), ("Google Docs", GOOGLE_DOCS_HTML, CLEAN)]
)
def test_pasting_from_word_and_google_docs_comes_in_clean(page, draft, source, html, clean):
    paste(page, html=html, text="Exam moved to room 101.")
    body = field_value(page)
    assert body == clean, source
    assert sanitize_html(body) == body
    expect(page.locator(f'{EDITOR} .placeholder-token[data-placeholder="recipient_name"]')).to_have_count(1)
    save_and_reload(page, draft)
    draft.refresh_from_db()
    assert draft.composed_content["en"]["body"] == clean


def test_pasted_headings_keep_two_levels(page, draft):
    """The editor has h2 and h3: a pasted h1 is a heading, h4 to h6 subheadings, text kept."""
    paste(
        page,
        html="<h1>Title</h1><h2>Heading</h2><h3>Sub</h3><h4>Four</h4><h5>Five</h5>"
        '<h6 class="x" id="h.6">Six <strong>bold</strong> <a href="https://example.org/">link</a></h6>',
    )
    html = field_value(page)
    assert html == (
        "<h2>Title</h2><h2>Heading</h2><h3>Sub</h3><h3>Four</h3><h3>Five</h3>"
        '<h3>Six <strong>bold</strong> <a href="https://example.org/" rel="noopener noreferrer">link</a></h3>'
    )
    assert sanitize_html(html) == html
    save_and_reload(page, draft)
    draft.refresh_from_db()
    assert draft.composed_content["en"]["body"] == html


# Word's heading styles are h1, h2, ... with a bookmark anchor and, for numbered headings, the
# number as list text; Google Docs' are h1, h2, h3 with styled spans (not bold) inside its <b>.
WORD_HEADINGS_HTML = (
    '<html xmlns:o="urn:schemas-microsoft-com:office:office" xmlns="http://www.w3.org/TR/REC-html40">\n'
    "<head><meta name=ProgId content=Word.Document>"
    '<style><!-- h1 {mso-style-link:"Heading 1 Char";} --></style>'
    "</head><body lang=EN-GB><!--StartFragment-->\n"
    "<h1><a name=\"_Toc151234567\"><span lang=EN-US style='mso-ansi-language:EN-US'>Exam moved</span></a>"
    "<span lang=EN-US style='mso-ansi-language:EN-US'><o:p></o:p></span></h1>\n"
    "<p class=MsoNormal><span lang=EN-US>To <b>room 101</b>.<o:p></o:p></span></p>\n"
    "<h2 style='margin-left:28.8pt;text-indent:-28.8pt;mso-list:l0 level2 lfo1'><![if !supportLists]>"
    "<span lang=EN-US style='mso-fareast-font-family:\"Calibri Light\"'><span style='mso-list:Ignore'>1.1"
    f"{WORD_GAP}</span></span><![endif]><span lang=EN-US>What to bring<o:p></o:p></span></h2>\n"
    "<h3><span lang=EN-US>Pens<o:p></o:p></span></h3>\n"
    "<!--EndFragment--></body></html>"
)
DOCS_HEADING = 'dir="ltr" style="line-height:1.38;margin-top:20pt;margin-bottom:6pt;"'
GOOGLE_DOCS_HEADINGS_HTML = (
    '<meta charset="utf-8"><b style="font-weight:normal;" id="docs-internal-guid-0a1b2c3d-7fff-4e5f">'
    f'<h1 {DOCS_HEADING} id="h.exam">'
    f'<span style="{SPAN}font-size:20pt;font-weight:400;">Exam moved</span></h1>'
    f'<p {P}><span style="{SPAN}font-weight:400;">To </span>'
    f'<span style="{SPAN}font-weight:700;">room 101</span><span style="{SPAN}font-weight:400;">.</span></p>'
    f'<h2 {DOCS_HEADING}><span style="{SPAN}font-size:16pt;font-weight:400;">1.1 What to bring</span></h2>'
    f"<h3 {DOCS_HEADING}>"
    f'<span style="{SPAN}font-size:14pt;color:#434343;font-weight:400;">Pens</span></h3></b>'
)
HEADINGS_CLEAN = (
    "<h2>Exam moved</h2><p>To <strong>room 101</strong>.</p><h2>1.1 What to bring</h2><h3>Pens</h3>"
)


@pytest.mark.parametrize(
    "source,html", [("Word", WORD_HEADINGS_HTML), ("Google Docs", GOOGLE_DOCS_HEADINGS_HTML)]
)
def test_headings_pasted_from_word_and_google_docs_are_headings(page, source, html):
    paste(page, html=html, text="Exam moved")
    body = field_value(page)
    assert body == HEADINGS_CLEAN, source
    assert sanitize_html(body) == body
    expect(command(page, "heading-3")).to_have_attribute("aria-pressed", "true")  # the cursor: after "Pens"


def test_pasting_what_the_editor_wrote_gives_the_same_html(page):
    for html in (
        WORD_CLEAN,
        '<h2>Exam</h2><ol start="3"><li><p>three</p></li></ol><blockquote><p>q</p></blockquote>'
        "<p>a<br>b <s>c</s> <u>d</u> <code>e</code></p><pre><code>f\n  g</code></pre><hr>",
    ):
        paste(page, html=html)
        assert field_value(page) == html


def test_pasted_plain_text_keeps_its_paragraphs(page):
    text = (
        "Hello {{ recipient_name }},\r\n\r\nThe exam has moved.\nIt is in room 101.\n\n\n   \n"
        "Bring <your> ID & a pen."
    )
    paste(page, text=text)
    assert field_value(page) == (
        "<p>Hello {{ recipient_name }},</p>"
        "<p>The exam has moved.<br>It is in room 101.</p>"
        "<p>Bring &lt;your&gt; ID &amp; a pen.</p>"
    )
    expect(page.locator(f"{EDITOR} p")).to_have_count(3)
    expect(page.locator(f'{EDITOR} .placeholder-token[data-placeholder="recipient_name"]')).to_have_count(1)


# Keyboard and accessibility -----------------------------------------------------------------------


def test_keyboard_reaches_the_toolbar_and_formats_with_shortcuts(page):
    page.locator("#id_subject_en").focus()
    page.keyboard.press("Tab")
    bold = command(page, "bold")
    expect(bold).to_be_focused()  # one tab stop for the whole toolbar
    page.keyboard.press("ArrowRight")
    expect(command(page, "italic")).to_be_focused()
    page.keyboard.press("End")
    expect(command(page, "clear")).to_be_focused()
    page.keyboard.press("Home")
    expect(bold).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator(EDITOR)).to_be_focused()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("Plain ")
    page.keyboard.press("ControlOrMeta+b")
    page.keyboard.type("bold")
    expect(bold).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("ControlOrMeta+b")
    page.keyboard.type(" and ")
    page.keyboard.press("ControlOrMeta+i")
    page.keyboard.type("italic")
    assert field_value(page) == "<p>Plain <strong>bold</strong> and <em>italic</em></p>"
    # Back into the toolbar, and a button works from the keyboard.
    page.keyboard.press("Shift+Tab")
    expect(bold).to_be_focused()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(command(page, "heading-2")).to_be_focused()
    page.keyboard.press("Enter")
    assert field_value(page) == "<h2>Plain <strong>bold</strong> and <em>italic</em></h2>"
    expect(page.locator(EDITOR)).to_be_focused()  # the command returns to the text
    expect(command(page, "heading-2")).to_have_attribute("aria-pressed", "true")
    # Tab comes back to the button used last; the next one is the subheading.
    page.keyboard.press("Shift+Tab")
    expect(command(page, "heading-2")).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(command(page, "heading-3")).to_be_focused()
    page.keyboard.press("Space")
    assert field_value(page) == "<h3>Plain <strong>bold</strong> and <em>italic</em></h3>"
    expect(command(page, "heading-3")).to_have_attribute("aria-pressed", "true")
    expect(command(page, "heading-2")).to_have_attribute("aria-pressed", "false")


def test_the_editor_is_labelled_and_the_page_passes_axe(page):
    editor = page.locator(EDITOR)
    expect(editor).to_have_attribute("role", "textbox")
    expect(editor).to_have_attribute("aria-multiline", "true")
    expect(page.get_by_role("textbox", name="Body (English) *")).to_have_id("id_body_en-editor")
    expect(page.get_by_role("toolbar", name="Formatting: Body (English)")).to_be_visible()
    expect(page.locator(BODY)).to_be_hidden()  # the field stays, the editor shows
    page.locator("#id_body_en-label").click()
    expect(editor).to_be_focused()
    assert_accessible(page, "the compose page with the editor")


def test_without_javascript_the_textarea_takes_plain_text(e2e_browser, live_server, staff, draft):
    context = e2e_browser.new_context(java_script_enabled=False, locale="en-GB")
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/login/?next=/messages/{draft.pk}/edit/")
        page.locator("#id_username").fill(staff.get_username())
        page.locator("#id_password").fill(PASSWORD)
        page.locator("#login-submit").click()
        expect(page.locator(BODY)).to_be_visible()
        expect(page.locator('[data-rich-text-for="id_body_en"]')).to_be_hidden()
        page.locator(BODY).fill("Hello {{ recipient_name }},\n\nThe exam has moved.\nRoom 101.")
        page.locator("#save-draft").click()
        expect(page.locator(".alert-success").first).to_be_visible()
        draft.refresh_from_db()
        assert draft.composed_content["en"]["body"] == (
            "<p>Hello {{ recipient_name }},</p><p>The exam has moved.<br>Room 101.</p>"
        )
    finally:
        context.close()


def test_a_body_with_a_table_stays_in_the_textarea(e2e_page, e2e_problems, live_server, staff):
    """The allow-list keeps simple tables; the editor has none, so it leaves such a body alone."""
    table = "<p>Rooms:</p><table><tbody><tr><td>A</td><td>101</td></tr></tbody></table>"
    draft = composed_draft(staff, [], "Rooms", table)
    page = e2e_page
    sign_in(page, live_server.url, staff, f"/messages/{draft.pk}/edit/")
    expect(page.locator("#id_body_nb-editor")).to_be_attached()  # the other language has its editor
    expect(page.locator(BODY)).to_be_visible()
    expect(page.locator(BODY)).to_have_value(table)
    expect(page.locator('[data-rich-text-unsupported="id_body_en"]')).to_be_visible()
    expect(page.locator('[data-rich-text-for="id_body_en"]')).to_be_hidden()
    expect(page.locator(EDITOR)).to_have_count(0)
    with page.expect_navigation():
        page.locator("#save-draft").click()
    draft.refresh_from_db()
    assert draft.composed_content["en"]["body"] == table
    assert e2e_problems.console_errors == [] and e2e_problems.page_errors == []
