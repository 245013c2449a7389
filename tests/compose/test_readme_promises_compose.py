"""What the README promises about composing (issue 14) that no other test held it to: the
settings' environment variables and documented defaults, the test-send limit switched off, the
part cache, the scanner's place among the checks, a broken attachment pausing a large send, the
context type explained on template pages, where the editor bundle loads and what it weighs, that
stored files are never served directly, and the licence table."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import os
import re
import subprocess
import sys

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from messaging import conf
from messaging.compose import attachments, composing, message_templates
from messaging.models import Message, MessageTemplate
from messaging.preferences import context_types
from messaging.tracking import selectors
from tests.conftest import ROOT, grant

README = (ROOT / "README.md").read_text(encoding="utf-8")
README_WORDS = " ".join(README.split())  # for phrases that may wrap
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
CONTENT = {"en": {"subject": "Exam schedule", "body": "<p>See the attached schedule.</p>"}}
EDITOR_BUNDLE = ROOT / "static" / "vendor" / "tiptap" / "tiptap.min.js"


def readme_default(name: str) -> str:
    """The default column of `name`'s row in the README's configuration table."""
    match = re.search(rf"^\| `{name}` \| ([^|]+) \|", README, re.M)
    assert match, f"{name} has no row in the README's configuration table"
    return match.group(1).strip()


def settings_in_a_new_process(tmp_path, code: str, **env_vars) -> object:
    """What `code` prints (JSON) in a fresh process configured from the environment only."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MESSAGING_")}
    for name in ("MEDIA_ROOT", "DEFAULT_FROM_EMAIL"):
        env.pop(name, None)
    env.update(DJANGO_SETTINGS_MODULE="project.settings", VAR_DIR=str(tmp_path), **env_vars)
    out = subprocess.run(
        [sys.executable, "-c", f"import json, django; django.setup(); {code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


# The configuration table ------------------------------------------------------------------------------


def test_the_documented_defaults_are_the_ones_in_conf():
    for name in (
        "MESSAGING_TEST_SENDS_PER_HOUR",
        "MESSAGING_ATTACHMENT_MAX_BYTES",
        "MESSAGING_ATTACHMENTS_MAX_TOTAL_BYTES",
        "MESSAGING_ATTACHMENTS_MAX_COUNT",
    ):
        assert int(readme_default(name).split("`")[1]) == conf.DEFAULTS[name], name
    assert readme_default("MESSAGING_ATTACHMENT_EXTENSIONS") == "`{}`".format(
        ",".join(conf.DEFAULTS["MESSAGING_ATTACHMENT_EXTENSIONS"])
    )
    assert readme_default("MESSAGING_ALLOWED_SENDERS") == "empty"
    assert conf.DEFAULTS["MESSAGING_ALLOWED_SENDERS"] == []
    assert readme_default("MESSAGING_ATTACHMENT_SCANNER") == "unset"
    assert conf.DEFAULTS["MESSAGING_ATTACHMENT_SCANNER"] is None
    assert "(10 MB)" in readme_default("MESSAGING_ATTACHMENT_MAX_BYTES")
    assert conf.DEFAULTS["MESSAGING_ATTACHMENT_MAX_BYTES"] == 10 * 2**20
    assert "(20 MB)" in readme_default("MESSAGING_ATTACHMENTS_MAX_TOTAL_BYTES")
    assert conf.DEFAULTS["MESSAGING_ATTACHMENTS_MAX_TOTAL_BYTES"] == 20 * 2**20
    assert readme_default("MEDIA_ROOT") == "`var/media`"


def test_without_the_environment_the_defaults_apply(tmp_path):
    code = (
        "from django.conf import settings; from messaging import conf; print(json.dumps(["
        "str(settings.MEDIA_ROOT), conf.attachment_max_bytes(), conf.attachments_max_total_bytes(), "
        "conf.attachments_max_count(), conf.attachment_extensions(), conf.attachment_scanner(), "
        "conf.test_sends_per_hour(), conf.allowed_senders()]))"
    )
    assert settings_in_a_new_process(tmp_path, code) == [
        str(tmp_path / "media"),
        10 * 2**20,
        20 * 2**20,
        10,
        list(conf.ATTACHMENT_EXTENSIONS),
        None,
        20,
        ["Messaging <noreply@localhost>"],
    ]


def test_the_attachment_settings_come_from_the_environment(tmp_path):
    code = (
        "from django.conf import settings; from messaging import conf; print(json.dumps(["
        "str(settings.MEDIA_ROOT), conf.attachment_max_bytes(), conf.attachments_max_total_bytes(), "
        "conf.attachments_max_count(), conf.attachment_extensions(), conf.attachment_scanner(), "
        "conf.test_sends_per_hour()]))"
    )
    assert settings_in_a_new_process(
        tmp_path,
        code,
        MEDIA_ROOT=str(tmp_path / "uploads"),
        MESSAGING_ATTACHMENT_MAX_BYTES="1000",
        MESSAGING_ATTACHMENTS_MAX_TOTAL_BYTES="2000",
        MESSAGING_ATTACHMENTS_MAX_COUNT="3",
        MESSAGING_ATTACHMENT_EXTENSIONS=".pdf, TXT,.odt,",
        MESSAGING_ATTACHMENT_SCANNER="myproject.scanning.scan_with_clamav",
        MESSAGING_TEST_SENDS_PER_HOUR="0",
    ) == [
        str(tmp_path / "uploads"),
        1000,
        2000,
        3,
        [".pdf", ".txt", ".odt"],
        "myproject.scanning.scan_with_clamav",
        0,
    ]


@pytest.mark.parametrize(
    ("senders", "stops"),
    [
        ('Exam office <exams@uni.example>\n"Exams, Science" <science@uni.example>', False),
        ("Exams, Science <science@uni.example>", True),  # the unquoted comma of the README
    ],
)
def test_an_allowed_sender_that_is_not_one_address_stops_start_up(tmp_path, senders, stops):
    env = {name: value for name, value in os.environ.items() if not name.startswith("MESSAGING_")}
    env.update(VAR_DIR=str(tmp_path), MESSAGING_ALLOWED_SENDERS=senders)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert (result.returncode != 0) == stops, result.stdout + result.stderr
    assert ("messaging.E007" in result.stderr) == stops, result.stderr


# Test sends ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_none_means_no_limit_on_test_sends_and_the_default_is_20(settings, make_user, smtp_mailer):
    staff = grant(make_user(is_staff=True, email="staff@uni.example"), "view_message", "compose_message")
    draft = composing.save_draft(Message(composed_content=CONTENT), staff)
    settings.MESSAGING_TEST_SENDS_PER_HOUR = None
    for n in range(25):
        assert composing.send_test(draft, staff, f"colleague{n}@uni.example", "en").delivered
    del settings.MESSAGING_TEST_SENDS_PER_HOUR  # conf's default: 20 an hour
    with pytest.raises(composing.TooManyTestSends):
        composing.send_test(draft, staff, "one-more@uni.example", "en")
    assert len(smtp_mailer.received) == 25


# Attachments -----------------------------------------------------------------------------------------


def test_the_part_cache_keeps_64_mb_and_drops_the_least_recently_used_first(monkeypatch):
    assert attachments.PART_CACHE_BYTES == 64 * 2**20
    assert "small cache (64 MB, least recently used first)" in README_WORDS
    loads: list[str] = []

    def load_part(name, size):
        loads.append(name)
        return f"part {name}", size

    monkeypatch.setattr(attachments, "load_part", load_part)
    cache = attachments.PartCache(budget=100)
    cache.get(("a", 60))
    cache.get(("b", 30))
    cache.get(("a", 60))  # read again: now the most recently used
    cache.get(("c", 30))  # 120 bytes: the least recently used ("b") goes
    assert loads == ["a", "b", "c"]
    cache.get(("a", 60))
    cache.get(("c", 30))
    assert loads == ["a", "b", "c"]
    cache.get(("b", 30))
    assert loads == ["a", "b", "c", "b"]
    cache.get(("huge", 500))  # larger than the budget: kept alone, as the newest
    assert cache.get(("huge", 500)) == "part huge" and loads[-1] == "huge" and loads.count("huge") == 1


SCANNED: list[str] = []


def record_scan(uploaded) -> None:
    SCANNED.append(uploaded.name)
    if b"EICAR" in uploaded.read():
        raise ValidationError("it contains EICAR-Test-File.")


@pytest.fixture
def draft(make_user, settings, tmp_path) -> Message:
    settings.MEDIA_ROOT = tmp_path / "media"
    attachments.part_cache.clear()
    staff = grant(make_user(is_staff=True), "view_message", "compose_message", "send_message")
    yield composing.save_draft(Message(composed_content=CONTENT), staff)
    attachments.part_cache.clear()


@pytest.mark.django_db
def test_the_scanner_runs_once_per_file_only_after_the_other_checks_passed(draft, settings):
    settings.MESSAGING_ATTACHMENT_SCANNER = f"{__name__}.record_scan"
    SCANNED.clear()
    with pytest.raises(ValidationError):
        attachments.add(draft, [SimpleUploadedFile("a.pdf", PDF), SimpleUploadedFile("run.exe", b"MZ")])
    assert SCANNED == []
    with pytest.raises(ValidationError) as refused:
        attachments.add(
            draft,
            [
                SimpleUploadedFile("a.pdf", PDF),
                SimpleUploadedFile("b.pdf", b"EICAR"),
                SimpleUploadedFile("c.pdf", b"EICAR"),
            ],
        )
    # The first file it refuses stops the check (the README says so).
    assert SCANNED == ["a.pdf", "b.pdf"]
    assert refused.value.messages == ["b.pdf was refused: it contains EICAR-Test-File."]
    assert "the first file it refuses stops the check" in README_WORDS
    SCANNED.clear()
    attachments.add(draft, [SimpleUploadedFile("a.pdf", PDF), SimpleUploadedFile("d.pdf", PDF)])
    assert SCANNED == ["a.pdf", "d.pdf"] and draft.attachments.count() == 2


@pytest.mark.django_db
def test_a_missing_file_makes_the_failure_watch_pause_a_large_send(
    draft, make_user, settings, smtp_mailer, django_capture_on_commit_callbacks
):
    settings.MESSAGING_NOTIFY_SENDER = False
    settings.MESSAGING_AUTO_PAUSE_SAME_ERROR = 3
    (attachment,) = attachments.add(draft, [SimpleUploadedFile("gone.pdf", PDF)])
    (settings.MEDIA_ROOT / attachment.file.name).unlink()
    draft.virtual_message_receivers = {"chosen_user_ids": [make_user().pk for _ in range(8)], "group_ids": []}
    draft.save()
    with django_capture_on_commit_callbacks(execute=True):
        composing.queue_send(draft, draft.created_by)
    draft.refresh_from_db()
    assert draft.status == Message.Status.PAUSED
    assert draft.status_data["paused"]["automatic"] and draft.status_data["paused"]["rule"] == "same_error"
    failed = [r for r in draft.receivers.all() if r.status == "failed"]
    assert len(failed) == 3
    assert all("gone.pdf cannot be read" in r.errors[-1]["error_message"] for r in failed)
    assert smtp_mailer.received == []


@pytest.mark.django_db
def test_stored_files_are_never_served_directly(admin_client, draft):
    (attachment,) = attachments.add(draft, [SimpleUploadedFile("plan.pdf", PDF)])
    name = attachment.file.name
    assert name.startswith("messaging/attachments/")
    for url in (f"/{name}", f"/media/{name}", f"/static/{name}", attachment.file.url):
        assert admin_client.get(url if url.startswith("/") else f"/{url}").status_code == 404, url
    download = reverse("messaging:attachment_download", args=[attachment.pk])
    assert admin_client.get(download).status_code == 200


# Recipients ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_exact_address_comes_first_of_all_and_the_figures_hold(make_user):
    # Both contain "ann@uni.example"; by name, Aasen would come first.
    joann = make_user(username="b1", first_name="Adam", last_name="Aasen", email="joann@uni.example")
    ann = make_user(username="z1", first_name="Zed", last_name="Zulu", email="ann@uni.example")
    found = selectors.search_recipients("ANN@uni.example")
    assert [f.user for f in found.users] == [ann, joann]
    # An address of theirs other than the account email counts as exact too.
    other = make_user(username="y1", first_name="Yann", last_name="Young", emails=["ann@uni.example"])
    found = selectors.search_recipients("ann@uni.example")
    assert [f.user for f in found.users][:2] in ([ann, other], [other, ann])
    assert (selectors.SEARCH_LIMIT, selectors.GROUP_MEMBERS_LISTED) == (10, 50)
    assert "Up to 10 of each are listed" in README_WORDS and "the first 50 and" in README_WORDS


# Pages -----------------------------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, make_user):
    staff = grant(make_user(is_staff=True), "view_message", "compose_message", "send_message")
    client.force_login(staff)
    client.staff = staff
    return client


def shown_explanations(html: str) -> list[str]:
    return re.findall(r'<span data-context-type-help="(\w+)">', html)  # the ones not hidden


@pytest.mark.django_db
def test_template_pages_explain_the_context_type_like_drafts_do(staff_client):
    create = staff_client.get(reverse("messaging:template_create")).content.decode()
    assert "data-context-type-select" in create  # compose.js shows the chosen one's
    for value in context_types.explanations():
        assert f'data-context-type-help="{value}"' in create
    template = message_templates.save_template(
        MessageTemplate(
            name="Exam moved",
            context_type=Message.ContextType.DEADLINE_MOVED,
            composed_content=CONTENT,
        ),
        staff_client.staff,
    )
    edit = staff_client.get(reverse("messaging:template_edit", args=[template.pk])).content.decode()
    assert shown_explanations(edit) == [Message.ContextType.DEADLINE_MOVED]
    assert str(context_types.explanations()[Message.ContextType.DEADLINE_MOVED]) in edit


@pytest.mark.django_db
def test_the_editor_bundle_loads_on_the_compose_and_template_pages_only(staff_client):
    draft = composing.save_draft(Message(composed_content=CONTENT), staff_client.staff)
    template = message_templates.save_template(
        MessageTemplate(name="Exam schedule", composed_content=CONTENT), staff_client.staff
    )
    bundle = "vendor/tiptap/tiptap.min.js"
    with_editor = [
        reverse("messaging:message_create"),
        reverse("messaging:message_edit", args=[draft.pk]),
        reverse("messaging:template_create"),
        reverse("messaging:template_edit", args=[template.pk]),
    ]
    without_editor = [
        reverse("messaging:message_list"),
        reverse("messaging:message_preview", args=[draft.pk]),
        reverse("messaging:message_status", args=[draft.pk]),
        reverse("messaging:template_list"),
    ]
    for url in with_editor + without_editor:
        response = staff_client.get(url)
        assert response.status_code == 200, url
        assert (bundle in response.content.decode()) == (url in with_editor), url


def test_the_editor_bundle_weighs_what_the_readme_says():
    minified, gzipped = (int(n) for n in re.search(r"(\d+) KB minified, (\d+) KB gzipped", README).groups())
    data = EDITOR_BUNDLE.read_bytes()
    # Within 2%: a rebuild that changes the size more must update the README.
    assert abs(len(data) / 1024 - minified) <= 0.02 * minified, len(data) / 1024
    assert abs(len(gzip.compress(data)) / 1024 - gzipped) <= 0.02 * gzipped, len(gzip.compress(data)) / 1024


def test_every_package_in_the_editor_bundle_is_mit_licensed():
    licence = (EDITOR_BUNDLE.parent / "LICENSE").read_text(encoding="utf-8")
    packages = re.findall(r"^(@?[\w./-]+) (\d[\w.+-]*) \((.+)\)$", licence, re.M)
    names = {name for name, _version, _licence in packages}
    assert {"@tiptap/core", "@tiptap/pm", "prosemirror-model", "prosemirror-view"} <= names
    assert {licence for _name, _version, licence in packages} == {"MIT"}


# Licences --------------------------------------------------------------------------------------------


def readme_licences() -> dict[str, str]:
    """{package: licence} from the README's table of runtime dependencies."""
    section = README.split("| runtime dependency (`requirements.txt`) | licence |", 1)[1]
    rows = re.findall(r"^\| (.+?) \| (.+?) \|$", section.split("\n\n", 1)[0], re.M)
    return {
        canonicalize_name(name.strip()): licence.replace("**", "")
        for names, licence in rows
        if names != "---"
        for name in names.replace("**", "").split(",")
    }


def requirements() -> list[Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def licence_of(name: str) -> str:
    metadata = importlib.metadata.metadata(name)
    classifiers = " ".join(c for c in metadata.get_all("Classifier") or [] if c.startswith("License"))
    return " ".join([metadata.get("License-Expression") or "", metadata.get("License") or "", classifiers])


def test_the_licence_table_lists_every_runtime_dependency_as_its_metadata_does():
    table = readme_licences()
    installed = {canonicalize_name(r.name) for r in requirements()}
    installed |= {f"{canonicalize_name(r.name)}-{extra}" for r in requirements() for extra in r.extras}
    assert installed == set(table)
    for name, licence in table.items():
        expression = importlib.metadata.metadata(name).get("License-Expression")
        if expression:
            assert licence.startswith(expression), (name, expression, licence)


def test_what_the_dependencies_pull_in_is_permissive_except_certifi():
    roots = {canonicalize_name(r.name): set(r.extras) for r in requirements()}
    seen: set[str] = set()
    todo = list(roots.items())
    while todo:
        name, extras = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in {"", *extras}]
            if requirement.marker is None or any(requirement.marker.evaluate(e) for e in environments):
                todo.append((canonicalize_name(requirement.name), set(requirement.extras)))
    pulled_in = seen - set(readme_licences())
    assert "certifi" in pulled_in and "MPL-2.0" in licence_of("certifi")
    assert "except certifi (MPL-2.0" in README_WORDS
    for name in pulled_in - {"certifi"}:
        assert re.search(r"BSD|MIT|Apache|PSF", licence_of(name)), (name, licence_of(name))
