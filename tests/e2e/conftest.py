"""Browser fixtures for the end-to-end tests: Debian's Chromium driven by Playwright's sync API.

Playwright cannot download browsers here, so the system Chromium is launched directly. When
it is missing the tests are skipped, unless REQUIRE_BROWSER=1 (CI), where that is a failure.

The fixture names are prefixed with `e2e_` so that they never collide with the fixtures of the
pytest-playwright plugin (`browser`, `page`, ...) when that plugin happens to be installed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; the live_server tests touch the ORM
# from the same thread, which Django's async-safety check would otherwise refuse.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct-horse-battery-staple-42"  # a throwaway test password

# Generous: the consumer process needs a second or two to start, and CI machines are slow.
TIMEOUT_MS = 30_000


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.browser)


def browser_required() -> bool:
    return os.environ.get("REQUIRE_BROWSER", "") == "1"


@pytest.fixture(scope="session")
def e2e_playwright():
    if not CHROMIUM.exists():
        reason = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if browser_required():
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}.", pytrace=False)
        pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - playwright is in requirements-dev.txt
        if browser_required():
            pytest.fail(f"REQUIRE_BROWSER=1 but playwright cannot be imported: {exc}", pytrace=False)
        pytest.skip(f"playwright is not installed: {exc}")
    pw = sync_playwright().start()
    try:
        yield pw
    finally:
        pw.stop()


@pytest.fixture(scope="session")
def e2e_browser(e2e_playwright):
    browser = e2e_playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@dataclass
class PageProblems:
    """Console errors, uncaught exceptions and failed requests (no answer, or a 4xx/5xx one)
    seen by a page. A failed request is usually a console error as well; it is listed on its
    own because some are not (what the browser asks for itself, such as /favicon.ico)."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    @property
    def csp_violations(self) -> list[str]:
        return [m for m in self.console_errors if re.search("content security policy", m, re.I)]


@pytest.fixture
def e2e_problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def e2e_page(e2e_browser, e2e_problems):
    """A fresh context and page; console errors and page errors are collected in e2e_problems."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = e2e_browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-GB")
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on(
        "console",
        lambda msg: (
            e2e_problems.console_errors.append(f"{msg.text} @ {msg.location}")
            if msg.type == "error"
            else None
        ),
    )
    page.on("pageerror", lambda exc: e2e_problems.page_errors.append(str(exc)))
    page.on(
        "response",
        lambda response: (
            e2e_problems.failed_requests.append(f"{response.status} {response.request.method} {response.url}")
            if response.status >= 400
            else None
        ),
    )
    page.on(
        "requestfailed",
        lambda request: e2e_problems.failed_requests.append(
            f"{request.failure} {request.method} {request.url}"
        ),
    )
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshot(e2e_page):
    """screenshot("01-login") saves var/screenshots/01-login.png of the whole page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        e2e_page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        page = getattr(item, "funcargs", {}).get("e2e_page")
        if page is not None and not page.is_closed():
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            try:
                page.screenshot(path=str(SCREENSHOTS / f"failed-{item.name}.png"), full_page=True)
            except Exception as exc:  # the report matters more than the screenshot
                report.sections.append(("failure screenshot", f"could not be taken: {exc}"))
    return report


def make_staff(make_user, permissions, username: str = "staffer"):
    """A staff member who signs in with PASSWORD and holds `permissions` (messaging codenames)."""
    from django.contrib.auth.models import Permission

    staff = make_user(language="en", username=username, first_name="Stella", last_name="Staff", is_staff=True)
    staff.set_password(PASSWORD)
    staff.save()
    staff.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="messaging", codename__in=permissions)
    )
    return staff


def composed_draft(staff, users, subject: str, body: str):
    """A staff-composed draft, as the compose form saves it."""
    from messaging.models import Message

    return Message.objects.create(
        created_by=staff,
        context_type=Message.ContextType.DEADLINE_MOVED,
        composed_content={"en": {"subject": subject, "body": body}},
        virtual_message_receivers={"chosen_user_ids": [u.pk for u in users], "group_ids": []},
    )


# Accessibility: axe-core (tests/e2e/vendor/axe-core, the exact version in package.json) --------
# Test tooling, never served. To update: `npm install axe-core@<version> --save-exact`, then copy
# node_modules/axe-core/{axe.min.js,LICENSE,LICENSE-3RD-PARTY.txt} into tests/e2e/vendor/axe-core/.

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
# How many failing elements each violation lists.
AXE_TARGETS_SHOWN = 5
# Rules axe leaves off by default that are turned on here: target-size is WCAG 2.2 AA (24 by 24 px
# targets); duplicate ids are "deprecated" with WCAG 2.2's parsing criterion, but still break
# labels, fragment links and scripts. Off stay only the AAA rules and deprecated ones that no
# longer apply (audio captions, aria-roledescription, a complementary landmark's nesting).
AXE_EXTRA_RULES = ("target-size", "duplicate-id", "duplicate-id-active")


def assert_accessible(page, context: str) -> None:
    """Run axe-core over the page as it is now and fail listing every violation, of any impact
    (critical, serious, moderate, minor), of every rule axe runs by default (best-practice rules
    included) and of AXE_EXTRA_RULES.

    axe is injected with page.evaluate(source), not page.add_script_tag(): that adds an inline
    <script>, which the site's CSP (script-src 'self') refuses, and reports in the console as a
    violation. page.evaluate() goes through the DevTools protocol, which CSP does not govern, and
    still runs in the page's own JavaScript world, so nothing about the page's CSP is bypassed
    for the page itself.

    While axe runs, htmx may not start a request (a page that polls would otherwise swap nodes
    out from under it); the page is checked as it stood when the call began."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    # Colours are measured as they are now: let CSS transitions end first (a button re-enabled
    # after an htmx request fades back in over 0.15 s). Chained ones too: a Bootstrap tab fades
    # the old pane out and only then starts fading the new one in, so the page must stay free
    # of transitions for a few frames, not merely have none at one instant.
    # (Transitions only: an animated progress bar or spinner never finishes.)
    page.evaluate(
        """async () => {
            const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
            const running = () => document.getAnimations()
                .filter((animation) => animation instanceof CSSTransition);
            for (let quietFrames = 0; quietFrames < 5; ) {
                const transitions = running();
                if (transitions.length) {
                    quietFrames = 0;
                    await Promise.all(transitions.map((t) => t.finished.catch(() => null)));
                } else {
                    quietFrames += 1;
                }
                await frame();
            }
        }"""
    )
    violations = page.evaluate(
        """async (extra) => {
            const hold = (event) => event.preventDefault();
            document.addEventListener("htmx:beforeRequest", hold, true);
            try {
                const rules = Object.fromEntries(extra.map((id) => [id, {enabled: true}]));
                const results = await axe.run(document, {resultTypes: ["violations"], rules});
                return results.violations.map((v) => ({
                    id: v.id, impact: v.impact, help: v.help, url: v.helpUrl,
                    count: v.nodes.length,
                    nodes: v.nodes.map((n) => ({
                        target: n.target.join(" "), summary: n.failureSummary || "",
                    })),
                }));
            } finally {
                document.removeEventListener("htmx:beforeRequest", hold, true);
            }
        }""",
        list(AXE_EXTRA_RULES),
    )
    if not violations:
        return
    lines = [f"{len(violations)} accessibility violation(s) on {context} ({page.url}):"]
    for v in violations:
        lines.append(f"- {v['id']} [{v['impact']}] {v['help']} ({v['count']} element(s)) {v['url']}")
        for node in v["nodes"][:AXE_TARGETS_SHOWN]:
            summary = " ".join(node["summary"].split())
            lines.append(f"    {node['target']}: {summary[:300]}")
        if v["count"] > AXE_TARGETS_SHOWN:
            lines.append(f"    … and {v['count'] - AXE_TARGETS_SHOWN} more")
    pytest.fail("\n".join(lines), pytrace=False)


def sign_in(page, base_url: str, user, next_path: str = "/messages/", screenshot=None) -> None:
    """Through the login page (the redirect from `next_path` first), as a person would."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}{next_path}")
    expect(page).to_have_url(re.compile(r"/login/\?next="))
    page.locator("#id_username").fill(user.get_username())
    page.locator("#id_password").fill(PASSWORD)
    if screenshot:
        screenshot("01-login")
    page.locator("#login-submit").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(next_path)}$"))
    expect(page.locator("#nav-user")).to_have_text(user.get_full_name() or user.get_username())
    # The URL and the markup come before the deferred scripts (htmx, app.js) have run: a
    # change made before "load" can go unseen by htmx on a busy machine.
    page.wait_for_load_state("load")


def paste_into_editor(page, code: str, *, html: str | None = None, text: str | None = None) -> None:
    """A real paste event with clipboard data (as the browser fires it for Ctrl+V) into the
    rich-text editor of language `code`, replacing everything in it."""
    editor = page.locator(f"#id_body_{code}-editor")
    editor.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.press("Delete")
    editor.evaluate(
        """(element, data) => {
            const clipboard = new DataTransfer();
            if (data.html !== null) clipboard.setData("text/html", data.html);
            if (data.text !== null) clipboard.setData("text/plain", data.text);
            const init = {clipboardData: clipboard, bubbles: true, cancelable: true};
            element.dispatchEvent(new ClipboardEvent("paste", init));
        }""",
        {"html": html, "text": text},
    )


def write_body(page, code: str, html: str) -> None:
    """Put `html` into the editor of language `code` (the editor writes back exactly what it
    was given when that is HTML it writes itself)."""
    paste_into_editor(page, code, html=html)


def deliver_in_process(message, users):
    """Send `message` to `users` in this process, the real path (queue → preparing → receivers
    → delivery run) without a consumer; returns it, sent."""
    from messaging.compose import composing
    from messaging.engine import delivery, sending, transitions
    from messaging.models import Message

    assert transitions.queue(message, [u.pk for u in users])
    sending.start_preparing(message, "e2e-preparer")
    assert sending.prepare(message, "e2e-preparer", **composing.prepare_arguments(message))
    delivery.deliver_message(message.pk)
    message.refresh_from_db()
    assert message.status == Message.Status.SENT
    return message
