"""Attachments (issue 14): limits, hostile names, the scanner hook, drafts only, copies and
deletion of the stored files, the staff download, and sending them with every receiver's email
over real SMTP without reading a file per receiver."""

from __future__ import annotations

import email.policy
import hashlib
import os
import socketserver
import threading
import time
import tracemalloc
import unicodedata
from email import message_from_bytes
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.mail import EmailMultiAlternatives
from django.db import connection, transaction
from django.template.defaultfilters import filesizeformat
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from messaging.compose import attachments, composing
from messaging.engine.channels import fast_email
from messaging.models import Message, MessageAttachment
from tests.conftest import grant

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
CONTENT = {"en": {"subject": "Exam schedule", "body": "<p>See the attached schedule.</p>"}}
BOUNDARY = "----attachment-test-boundary"


@pytest.fixture(autouse=True)
def media(settings, tmp_path) -> Path:
    """Each test stores files in its own MEDIA_ROOT; sending starts with no part cached."""
    settings.MEDIA_ROOT = tmp_path / "media"
    attachments.part_cache.clear()
    yield settings.MEDIA_ROOT
    attachments.part_cache.clear()


def stored_files(media: Path) -> list[Path]:
    return sorted(p for p in media.rglob("*") if p.is_file()) if media.exists() else []


@pytest.fixture
def staff(make_user):
    return grant(
        make_user(is_staff=True, username="coordinator", email="coordinator@uni.example"),
        "view_message",
        "compose_message",
        "send_message",
    )


@pytest.fixture
def draft(staff) -> Message:
    return composing.save_draft(Message(composed_content=CONTENT), staff)


def upload(name: str, data: bytes = PDF, content_type: str = "application/pdf") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def attach(message: Message, name: str = "schedule.pdf", data: bytes = PDF) -> MessageAttachment:
    (attachment,) = attachments.add(message, [upload(name, data)])
    return attachment


def form_data(**extra) -> dict:
    return {"context_type": "other", "subject_en": "Exam schedule", "body_en": "<p>See it.</p>", **extra}


def multipart(fields: dict, files: list[tuple[str, bytes, str]]) -> bytes:
    """A multipart/form-data body written by hand, so that file names reach the server exactly
    as a hostile client sends them (Django's test client would reduce them to a basename)."""
    parts = []
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            parts.append(
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{item}\r\n'.encode()
            )
    for filename, data, content_type in files:
        head = (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="attachments"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        )
        parts.append(head.encode("utf-8", "surrogateescape") + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def post_raw(client, url: str, fields: dict, files: list[tuple[str, bytes, str]]):
    return client.post(
        url, data=multipart(fields, files), content_type=f"multipart/form-data; boundary={BOUNDARY}"
    )


def errors_in_place(response) -> str:
    """The text of the attachments fieldset of the compose form."""
    content = response.content.decode()
    start = content.index('id="attachments"')
    return content[start : content.index("</fieldset>", start)]


# File names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("../../etc/passwd", "passwd"),
        ("../../../secret.pdf", "secret.pdf"),
        ("C:\\x\\y.pdf", "y.pdf"),
        ("\\\\server\\share\\plan.pdf", "plan.pdf"),
        ("exam\x00schedule.pdf", "examschedule.pdf"),
        ("line\r\nBcc: victim@x.org.pdf", "lineBcc_ victim@x.org.pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # a right-to-left override hiding ".exe"
        ("zero\u200bwidth.pdf", "zerowidth.pdf"),
        ("tab\there.txt", "tabhere.txt"),
        ("Cafe\u0301.pdf", "Café.pdf"),  # NFC
        ("  spaced   out  .pdf ", "spaced out.pdf"),
        ("rapport.PDF", "rapport.pdf"),
        ("...", "attachment"),
        (".....pdf", "attachment.pdf"),
        (".pdf", "attachment.pdf"),
        ("", "attachment"),
        ("\x00\x01\x02", "attachment"),
        ("CON.txt", "_CON.txt"),
        ('a<b>:"c|?*.pdf', "a_b___c___.pdf"),
        ("archive.tar.gz", "archive.tar.gz"),
    ],
)
def test_names_recipients_see_are_cleaned(name, shown):
    assert attachments.clean_filename(name) == shown


def test_a_very_long_name_is_trimmed_keeping_its_extension():
    cleaned = attachments.clean_filename("Eksamensplan " * 100 + ".pdf")
    assert len(cleaned) <= attachments.FILENAME_MAX_LENGTH
    assert cleaned.endswith(".pdf") and cleaned.startswith("Eksamensplan Eksamensplan")
    assert attachments.clean_filename("x" * 1000) == "x" * attachments.FILENAME_MAX_LENGTH


@hypothesis_settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=400))
def test_any_name_becomes_a_safe_name(name):
    cleaned = attachments.clean_filename(name)
    assert 0 < len(cleaned) <= attachments.FILENAME_MAX_LENGTH
    assert cleaned == unicodedata.normalize("NFC", cleaned)
    assert not any(unicodedata.category(c)[0] == "C" or c in attachments.UNSAFE_CHARACTERS for c in cleaned)
    assert cleaned == cleaned.strip() and not cleaned.startswith(".") and not cleaned.endswith(".")
    assert attachments.clean_filename(cleaned) == cleaned


def test_content_type_comes_from_the_extension_never_from_the_browser(draft):
    (attachment,) = attachments.add(draft, [upload("plan.pdf", content_type="text/html")])
    assert attachment.content_type == "application/pdf"
    assert attachments.content_type_for("notes.TXT") == "text/plain"
    assert attachments.content_type_for("no-extension") == "application/octet-stream"


# Checking and storing -------------------------------------------------------------------------------


def test_a_file_is_stored_under_a_random_name_with_its_hash_and_size(draft, media):
    data = PDF * 1000
    attachment = attach(draft, "../../etc/Exam schedule.pdf", data)
    assert attachment.filename == "Exam schedule.pdf"
    assert (attachment.size, attachment.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    (path,) = stored_files(media)
    assert path.read_bytes() == data
    assert path.parent == media / "messaging" / "attachments"
    assert "Exam" not in path.name and "." not in path.name


@pytest.mark.parametrize(
    ("files", "limits", "says"),
    [
        (
            [upload("big.pdf", b"x" * 101)],
            {"MESSAGING_ATTACHMENT_MAX_BYTES": 100},
            "each file may be at most",
        ),
        (
            [upload("a.pdf", b"x" * 60), upload("b.pdf", b"x" * 60)],
            {"MESSAGING_ATTACHMENTS_MAX_TOTAL_BYTES": 100},
            "at most 100\xa0bytes are allowed per message",
        ),
        ([upload(f"{n}.pdf") for n in range(4)], {"MESSAGING_ATTACHMENTS_MAX_COUNT": 3}, "At most 3 files"),
        ([upload("setup.exe", b"MZ")], {}, "files of this type cannot be attached"),
        ([upload("no-extension", b"data")], {}, "files of this type cannot be attached"),
        ([upload("empty.pdf", b"")], {}, "empty.pdf is empty"),
    ],
)
def test_limits_refuse_and_store_nothing(draft, media, settings, files, limits, says):
    for name, value in limits.items():
        setattr(settings, name, value)
    with pytest.raises(ValidationError) as refused:
        attachments.add(draft, files)
    assert any(says in message for message in refused.value.messages), refused.value.messages
    assert not draft.attachments.exists() and stored_files(media) == []


def test_existing_attachments_count_towards_the_total_and_the_count(draft, settings):
    attach(draft, "first.pdf", b"x" * 60)
    settings.MESSAGING_ATTACHMENTS_MAX_TOTAL_BYTES = 100
    with pytest.raises(ValidationError, match="per message"):
        attachments.add(draft, [upload("second.pdf", b"x" * 60)])
    settings.MESSAGING_ATTACHMENTS_MAX_COUNT = 1
    with pytest.raises(ValidationError, match="At most 1 files"):
        attachments.add(draft, [upload("tiny.pdf", b"x")])


def test_every_problem_is_reported_at_once(draft):
    files = [upload("empty.pdf", b""), upload("run.exe", b"MZ"), upload("fine.pdf")]
    with pytest.raises(ValidationError) as refused:
        attachments.add(draft, files)
    assert len(refused.value.messages) == 2


def refuse_eicar(uploaded) -> None:
    """A test scanner: the EICAR test string stands for a virus."""
    if EICAR in uploaded.read():
        raise ValidationError("Virus found: EICAR-Test-File.")


SCANNED: list[bytes] = []


def record_scan(uploaded) -> None:
    SCANNED.append(uploaded.read())


def test_the_scanner_refuses_a_file_and_nothing_is_stored(draft, media, settings):
    settings.MESSAGING_ATTACHMENT_SCANNER = "tests.compose.test_attachments.refuse_eicar"
    with pytest.raises(ValidationError) as refused:
        attachments.add(draft, [upload("clean.pdf"), upload("eicar.pdf", EICAR)])
    assert refused.value.messages == ["eicar.pdf was refused: Virus found: EICAR-Test-File."]
    assert not draft.attachments.exists() and stored_files(media) == []
    attach(draft, "clean.pdf")  # clean files pass


def test_the_scanner_gets_each_file_from_its_start_and_the_whole_file_is_stored(draft, media, settings):
    settings.MESSAGING_ATTACHMENT_SCANNER = "tests.compose.test_attachments.record_scan"
    SCANNED.clear()
    attachments.add(draft, [upload("a.pdf", b"first file"), upload("b.pdf", b"second file")])
    assert SCANNED == [b"first file", b"second file"]
    assert sorted(p.read_bytes() for p in stored_files(media)) == [b"first file", b"second file"]


def test_only_drafts_change_attachments(draft, staff, make_user, media, django_capture_on_commit_callbacks):
    attachment = attach(draft)
    draft.virtual_message_receivers = {"chosen_user_ids": [make_user().pk], "group_ids": []}
    draft.save()
    with django_capture_on_commit_callbacks(execute=True):
        composing.queue_send(draft, staff)
    draft.refresh_from_db()
    assert not draft.is_draft
    with pytest.raises(attachments.NotADraft):
        attachments.add(draft, [upload("late.pdf")])
    with pytest.raises(attachments.NotADraft):
        attachments.remove(attachment)
    assert list(draft.attachments.all()) == [attachment] and len(stored_files(media)) == 1
    with pytest.raises(attachments.NotADraft):
        attachments.add(Message(composed_content=CONTENT), [upload("unsaved.pdf")])


def test_a_file_is_removed_only_once_its_deletion_is_committed(
    draft, media, django_capture_on_commit_callbacks
):
    attachment = attach(draft)
    (path,) = stored_files(media)
    with pytest.raises(RuntimeError), transaction.atomic():
        attachments.remove(attachment)
        raise RuntimeError("rolled back")
    assert path.exists() and draft.attachments.count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        attachments.remove(attachment)
    assert not path.exists() and not draft.attachments.exists()


def test_a_duplicate_has_its_own_copies_of_the_files(draft, staff, media, django_capture_on_commit_callbacks):
    original = attach(draft, "plan.pdf", b"the plan")
    copy = composing.duplicate(draft, actor=staff)
    (copied,) = copy.attachments.all()
    assert (copied.filename, copied.size, copied.sha256) == ("plan.pdf", original.size, original.sha256)
    assert copied.file.name != original.file.name
    assert len(stored_files(media)) == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert composing.delete_draft(draft)
    assert not (media / original.file.name).exists()
    assert (media / copied.file.name).read_bytes() == b"the plan"


def test_a_file_missing_from_storage_is_left_out_of_a_duplicate(draft, staff, media):
    gone = attach(draft, "gone.pdf")
    attach(draft, "kept.pdf", b"kept")
    (media / gone.file.name).unlink()
    copy = composing.duplicate(draft, actor=staff)
    (copied,) = copy.attachments.all()
    assert copied.filename == "kept.pdf" and (media / copied.file.name).read_bytes() == b"kept"


def test_deleting_a_draft_removes_its_files(staff_client, draft, media, django_capture_on_commit_callbacks):
    attach(draft, "a.pdf")
    attach(draft, "b.pdf")
    assert len(stored_files(media)) == 2
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(reverse("messaging:message_delete", args=[draft.pk]))
    assert response.status_code == 302 and not Message.objects.filter(pk=draft.pk).exists()
    assert stored_files(media) == []


def test_a_message_deleted_by_retention_takes_its_files(draft, media, django_capture_on_commit_callbacks):
    from messaging.operations import retention

    attach(draft)
    Message.objects.filter(pk=draft.pk).update(status=Message.Status.SENT)
    with django_capture_on_commit_callbacks(execute=True):
        assert retention.delete_messages_without_receivers() == 1
    assert stored_files(media) == [] and not MessageAttachment.objects.exists()


# The compose form -----------------------------------------------------------------------------------


def test_files_are_saved_with_a_new_draft_in_the_same_save(staff_client, media):
    response = staff_client.post(
        reverse("messaging:message_create"),
        {**form_data(), "attachments": [upload("Exam schedule.pdf"), upload("rooms.csv", b"room;seats\n")]},
    )
    assert response.status_code == 302
    message = Message.objects.get()
    assert [(a.filename, a.content_type) for a in message.attachments.all()] == [
        ("Exam schedule.pdf", "application/pdf"),
        ("rooms.csv", "text/csv"),
    ]
    page = staff_client.get(reverse("messaging:message_edit", args=[message.pk])).content.decode()
    assert "Exam schedule.pdf" in page and "rooms.csv" in page
    assert reverse("messaging:attachment_download", args=[message.attachments.first().pk]) in page
    assert 'name="remove_attachments"' in page


def test_the_compose_form_posts_files(staff_client):
    page = staff_client.get(reverse("messaging:message_create")).content.decode()
    form_tag = page[page.index('<form method="post" action="/messages/new/" id="compose-form"') :].split(
        ">", 1
    )[0]
    assert 'enctype="multipart/form-data"' in form_tag and 'hx-encoding="multipart/form-data"' in form_tag
    assert 'type="file" name="attachments"' in page and " multiple" in page
    assert 'accept=".pdf,.txt,' in page and 'aria-describedby="attachments-help"' in page
    assert "Up to 10 files, each at most 10.0\xa0MB, 20.0\xa0MB in all." in page


def test_a_file_larger_than_the_in_memory_upload_limit_is_stored_whole(staff_client, media, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # Django spools it to a temporary file
    data = os.urandom(300_000)
    response = staff_client.post(
        reverse("messaging:message_create"), {**form_data(), "attachments": [upload("scan.pdf", data)]}
    )
    assert response.status_code == 302
    (attachment,) = MessageAttachment.objects.all()
    assert attachment.sha256 == hashlib.sha256(data).hexdigest()
    assert [p.read_bytes() for p in stored_files(media)] == [data]


def test_remove_and_add_in_one_save(staff_client, draft, media, django_capture_on_commit_callbacks):
    old = attach(draft, "old.pdf", b"old")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            reverse("messaging:message_edit", args=[draft.pk]),
            {**form_data(), "remove_attachments": [old.pk], "attachments": [upload("new.pdf", b"new")]},
        )
    assert response.status_code == 302
    assert [a.filename for a in draft.attachments.all()] == ["new.pdf"]
    assert [p.read_bytes() for p in stored_files(media)] == [b"new"]


@pytest.mark.parametrize(
    ("files", "limits", "says"),
    [
        (
            [("big.pdf", b"x" * 101, "application/pdf")],
            {"MESSAGING_ATTACHMENT_MAX_BYTES": 100},
            "big.pdf is 101",
        ),
        (
            [("a.pdf", b"x" * 60, "application/pdf"), ("b.pdf", b"x" * 60, "application/pdf")],
            {"MESSAGING_ATTACHMENTS_MAX_TOTAL_BYTES": 100},
            "per message",
        ),
        ([(f"{n}.pdf", PDF, "application/pdf") for n in range(30)], {}, "At most 10 files"),
        ([("setup.exe", b"MZ", "application/pdf")], {}, "setup.exe: files of this type cannot be attached"),
        ([("empty.pdf", b"", "application/pdf")], {}, "is empty"),
        ([("ok.pdf", PDF, "application/pdf"), ("x.sh", b"#!", "text/plain")], {}, "x.sh: files of this type"),
    ],
)
def test_a_bad_file_shows_in_place_and_nothing_is_saved(
    staff_client, draft, media, settings, files, limits, says
):
    for name, value in limits.items():
        setattr(settings, name, value)
    before = Message.objects.get(pk=draft.pk).composed_content
    fields = {**form_data(subject_en="Changed subject"), "next": "edit"}
    for url in (reverse("messaging:message_edit", args=[draft.pk]), reverse("messaging:message_create")):
        response = post_raw(staff_client, url, fields, files)
        assert response.status_code == 200
        fieldset = errors_in_place(response)
        assert says in fieldset and "No file was saved" in fieldset
        assert 'aria-invalid="true"' in fieldset
    assert Message.objects.count() == 1 and Message.objects.get(pk=draft.pk).composed_content == before
    assert not MessageAttachment.objects.exists() and stored_files(media) == []


@pytest.mark.parametrize(
    ("sent_name", "shown"),
    [
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("C:\\Users\\x\\exam.pdf", "exam.pdf"),
        ("nul\x00byte.pdf", "nulbyte.pdf"),
        ("bidi\u202efdp.pdf", "bidifdp.pdf"),
        # (Django answers 400 to a part whose headers pass 1024 bytes, before any view runs.)
        ("x" * 800 + ".pdf", "x" * 96 + ".pdf"),
        ("Eksamensplan æøå.pdf", "Eksamensplan æøå.pdf"),
    ],
)
def test_hostile_names_over_http_are_stored_under_a_random_name(staff_client, media, sent_name, shown):
    response = post_raw(
        staff_client, reverse("messaging:message_create"), form_data(), [(sent_name, PDF, "text/html")]
    )
    assert response.status_code == 302
    (attachment,) = MessageAttachment.objects.all()
    assert attachment.filename == shown and attachment.content_type == "application/pdf"
    (path,) = stored_files(media)
    assert path.parent == media / "messaging" / "attachments" and path.read_bytes() == PDF


def test_names_of_only_dots_are_refused_as_without_a_type(staff_client, media):
    response = post_raw(
        staff_client, reverse("messaging:message_create"), form_data(), [("....", PDF, "application/pdf")]
    )
    assert response.status_code == 200 and "attachment: files of this type" in errors_in_place(response)
    assert not Message.objects.exists() and stored_files(media) == []


def test_files_of_a_save_with_other_errors_are_named_and_not_saved(staff_client, media):
    response = post_raw(
        staff_client,
        reverse("messaging:message_create"),
        form_data(subject_en=""),
        [("plan.pdf", PDF, "application/pdf")],
    )
    assert response.status_code == 200
    assert "Not saved (the draft has errors): plan.pdf" in errors_in_place(response)
    assert not Message.objects.exists() and stored_files(media) == []


def test_the_scanner_refusal_shows_in_place(staff_client, draft, media, settings):
    settings.MESSAGING_ATTACHMENT_SCANNER = "tests.compose.test_attachments.refuse_eicar"
    response = post_raw(
        staff_client,
        reverse("messaging:message_edit", args=[draft.pk]),
        form_data(),
        [("eicar.pdf", EICAR, "application/pdf")],
    )
    assert response.status_code == 200
    assert "eicar.pdf was refused: Virus found: EICAR-Test-File." in errors_in_place(response)
    assert not MessageAttachment.objects.exists() and stored_files(media) == []


def test_removing_another_messages_attachment_is_refused(staff_client, draft, staff, media):
    other = composing.save_draft(Message(composed_content=CONTENT), staff)
    theirs = attach(other, "theirs.pdf")
    for value in (theirs.pk, "not-a-number", -1):
        response = staff_client.post(
            reverse("messaging:message_edit", args=[draft.pk]), {**form_data(), "remove_attachments": [value]}
        )
        assert response.status_code == 200
        assert "valid" in errors_in_place(response)
    assert list(other.attachments.all()) == [theirs] and len(stored_files(media)) == 1


def test_a_sent_message_keeps_its_attachments_when_an_old_form_is_posted(
    staff_client, draft, media, monkeypatch
):
    attachment = attach(draft)
    # The form was valid when checked; the message was sent before its attachments were saved.
    real_update = attachments.update

    def sent_meanwhile(message, uploads, remove_ids=()):
        Message.objects.filter(pk=message.pk).update(status=Message.Status.SENT)
        return real_update(message, uploads, remove_ids)

    monkeypatch.setattr(attachments, "update", sent_meanwhile)
    response = staff_client.post(
        reverse("messaging:message_edit", args=[draft.pk]),
        {
            **form_data(subject_en="Changed"),
            "remove_attachments": [attachment.pk],
            "attachments": [upload("n.pdf")],
        },
    )
    assert response.status_code == 409
    draft.refresh_from_db()
    assert draft.composed_content == CONTENT and list(draft.attachments.all()) == [attachment]
    assert len(stored_files(media)) == 1


def test_a_limit_reached_by_another_save_meanwhile_shows_in_place(
    staff_client, draft, media, settings, monkeypatch
):
    settings.MESSAGING_ATTACHMENTS_MAX_COUNT = 1
    real_update = attachments.update

    def other_save_first(message, uploads, remove_ids=()):
        real_update(message, attachments.check_uploads([upload("theirs.pdf", b"theirs")], []))
        return real_update(message, uploads, remove_ids)

    monkeypatch.setattr(attachments, "update", other_save_first)
    response = staff_client.post(
        reverse("messaging:message_edit", args=[draft.pk]),
        {**form_data(subject_en="Changed"), "attachments": [upload("mine.pdf", b"mine")]},
    )
    assert response.status_code == 200
    assert "At most 1 files can be attached; this would make 2." in errors_in_place(response)
    draft.refresh_from_db()
    # The whole save was rolled back, the other save's file included (it was in the same transaction here).
    assert draft.composed_content == CONTENT and not draft.attachments.exists()
    assert b"mine" not in [p.read_bytes() for p in stored_files(media)]


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    files=st.lists(
        st.tuples(
            st.text(max_size=120)
            | st.sampled_from(["../../etc/passwd", "C:\\x\\y.pdf", "a\r\nb.pdf", "\x00.pdf"]),
            st.binary(max_size=300),
            st.sampled_from(["application/pdf", "text/html", "", 'x/y; evil="1"']),
        ),
        max_size=12,
    ),
    remove=st.lists(st.integers(min_value=-3, max_value=10**6) | st.text(max_size=6), max_size=3),
)
def test_arbitrary_files_never_500_and_save_all_or_nothing(staff_client, media, files, remove):
    before_messages, before_files = Message.objects.count(), len(stored_files(media))
    response = post_raw(
        staff_client,
        reverse("messaging:message_create"),
        {**form_data(), **({"remove_attachments": [str(r) for r in remove]} if remove else {})},
        [(name, data, content_type) for name, data, content_type in files],
    )
    assert response.status_code in (200, 302, 400)
    if response.status_code == 302:
        message = Message.objects.latest("id")
        saved = list(message.attachments.all())
        assert len(stored_files(media)) == before_files + len(saved)
        for attachment in saved:
            assert attachment.filename == attachments.clean_filename(attachment.filename)
            assert attachment.file.read() and attachment.size <= 300
    else:
        assert Message.objects.count() == before_messages and len(stored_files(media)) == before_files


# Download -------------------------------------------------------------------------------------------


def test_the_admin_shows_a_messages_attachments_read_only(admin_client, draft):
    attachment = attach(draft, "plan.pdf")
    page = admin_client.get(reverse("admin:messaging_message_change", args=[draft.pk])).content.decode()
    assert f'<a href="{reverse("messaging:attachment_download", args=[attachment.pk])}">plan.pdf</a>' in page
    assert attachment.sha256 in page
    for editable in ("filename", "file", "content_type", "DELETE"):
        assert f'name="attachments-0-{editable}"' not in page
    assert 'name="attachments-1-' not in page  # no empty form to add one


def test_staff_download_the_file_under_its_name(staff_client, draft):
    attachment = attach(draft, "Eksamensplan æøå.pdf", PDF * 10)
    response = staff_client.get(reverse("messaging:attachment_download", args=[attachment.pk]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == PDF * 10
    assert response["Content-Type"] == "application/pdf"
    assert (
        response["Content-Disposition"]
        == "attachment; filename*=utf-8''Eksamensplan%20%C3%A6%C3%B8%C3%A5.pdf"
    )
    assert response["X-Content-Type-Options"] == "nosniff"
    ascii_one = attach(draft, 'quote"d.pdf')
    response = staff_client.get(reverse("messaging:attachment_download", args=[ascii_one.pk]))
    assert response["Content-Disposition"] == 'attachment; filename="quote_d.pdf"'


def test_download_needs_staff_with_the_view_permission(client, make_user, draft):
    attachment = attach(draft)
    url = reverse("messaging:attachment_download", args=[attachment.pk])
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    client.force_login(grant(make_user(is_staff=False), "view_message"))
    assert client.get(url).status_code == 403
    client.force_login(grant(make_user(is_staff=True), "compose_message", "send_message"))
    assert client.get(url).status_code == 403
    client.force_login(grant(make_user(is_staff=True), "view_message"))
    assert client.get(url).status_code == 200
    assert client.post(url).status_code == 405


def test_a_missing_file_or_attachment_is_404(staff_client, draft, media):
    attachment = attach(draft)
    (media / attachment.file.name).unlink()
    assert staff_client.get(reverse("messaging:attachment_download", args=[attachment.pk])).status_code == 404
    assert staff_client.get(reverse("messaging:attachment_download", args=[10**9])).status_code == 404


def test_preview_and_status_list_the_attachments(staff_client, draft):
    attachment = attach(draft, "Exam schedule.pdf", PDF * 100)
    link = reverse("messaging:attachment_download", args=[attachment.pk])
    preview = staff_client.get(reverse("messaging:message_preview", args=[draft.pk])).content.decode()
    assert 'id="preview-attachments"' in preview and link in preview and "Exam schedule.pdf" in preview
    assert f"{filesizeformat(attachment.size)}</span>" in preview
    status_page = staff_client.get(reverse("messaging:message_status", args=[draft.pk])).content.decode()
    assert 'id="status-attachments"' in status_page and link in status_page


# Sending --------------------------------------------------------------------------------------------


def send_to(staff, users, message: Message, capture) -> Message:
    message.virtual_message_receivers = {"chosen_user_ids": [u.pk for u in users], "group_ids": []}
    message.save()
    with capture(execute=True):
        composing.queue_send(message, staff)
    message.refresh_from_db()
    return message


def attachment_parts(email) -> list:
    return list(email.iter_attachments())


class CountingOpens:
    def __init__(self, monkeypatch):
        self.names: list[str] = []
        original = FileSystemStorage.open

        def counting(storage, name, mode="rb"):
            self.names.append(name)
            return original(storage, name, mode)

        monkeypatch.setattr(FileSystemStorage, "open", counting)


def test_every_receiver_gets_the_attachments_over_smtp(
    staff, draft, make_user, smtp_mailer, monkeypatch, django_capture_on_commit_callbacks
):
    schedule = PDF * 5000
    attach(draft, "Eksamensplan æøå.pdf", schedule)
    attach(draft, "rooms.csv", "rom;plasser\nBlåbær;40\n".encode())
    opens = CountingOpens(monkeypatch)
    users = [make_user(email=f"student{n}@uni.example") for n in range(3)]
    with CaptureQueriesContext(connection) as queries:
        message = send_to(staff, users, draft, django_capture_on_commit_callbacks)
    assert message.status == Message.Status.SENT
    assert len(smtp_mailer.received) == 3
    for sunk in smtp_mailer.received:
        email = sunk.message
        assert email.get_content_type() == "multipart/mixed"
        assert "See the attached schedule." in email.get_body(("plain",)).get_content()
        pdf, csv = attachment_parts(email)
        assert (pdf.get_filename(), pdf.get_content_type()) == ("Eksamensplan æøå.pdf", "application/pdf")
        assert pdf.get_content_disposition() == "attachment"
        assert pdf.get_content() == schedule
        assert (csv.get_filename(), csv.get_content_type(), csv.get_param("charset")) == (
            "rooms.csv",
            "text/csv",
            "utf-8",
        )
        assert csv.get_content() == "rom;plasser\nBlåbær;40\n"
    # Each file read once for all three, and the attachments looked up once for the batch.
    assert len(opens.names) == 2
    assert len([q for q in queries.captured_queries if "messaging_messageattachment" in q["sql"]]) == 1


def test_lookups_and_reads_do_not_grow_with_receivers(
    staff, draft, make_user, smtp_mailer, monkeypatch, django_capture_on_commit_callbacks
):
    attach(draft)
    opens = CountingOpens(monkeypatch)
    users = [make_user() for _ in range(40)]
    with CaptureQueriesContext(connection) as queries:
        send_to(staff, users, draft, django_capture_on_commit_callbacks)
    assert len(smtp_mailer.received) == 40
    assert all(len(attachment_parts(s.message)) == 1 for s in smtp_mailer.received)
    assert len(opens.names) == 1
    assert len([q for q in queries.captured_queries if "messaging_messageattachment" in q["sql"]]) == 1


@pytest.mark.parametrize("with_attachment", [False, True])
def test_emails_with_and_without_attachments_use_the_fast_builder(
    staff, draft, make_user, smtp_mailer, monkeypatch, django_capture_on_commit_callbacks, with_attachment
):
    if with_attachment:
        attach(draft)
    built = []
    original = fast_email.FastEmailMultiAlternatives.message

    def spy(self, *, policy=email.policy.default):
        message = original(self, policy=policy)
        built.append(type(message))
        return message

    monkeypatch.setattr(fast_email.FastEmailMultiAlternatives, "message", spy)
    send_to(staff, [make_user()], draft, django_capture_on_commit_callbacks)
    assert built == [fast_email.PreparedMessage]
    expected = "multipart/mixed" if with_attachment else "multipart/alternative"
    assert smtp_mailer.received[0].message.get_content_type() == expected


def comparable(data: bytes) -> list:
    """What a mail client sees: every header of every part (boundaries aside; MIME-Version
    counts only at the top, where Django's builder also repeats it on an alternative part) and
    each part's decoded content."""
    parsed = message_from_bytes(data, policy=email.policy.default)
    seen = []
    for part in parsed.walk():
        headers = [
            (k, v if k.lower() != "content-type" else part.get_content_type())
            for k, v in part.items()
            if part is parsed or k.lower() != "mime-version"
        ]
        content = None if part.is_multipart() else part.get_content()
        seen.append((sorted(headers), part.get_filename(), part.get_param("charset"), content))
    return seen


@pytest.mark.parametrize("policy_name", ["SMTP", "default"])
@pytest.mark.parametrize("html", ["<p>Hei Åse, se vedlegget.</p>", None])
def test_prepared_attachments_make_the_email_djangos_builder_makes(draft, policy_name, html):
    attach(draft, "Eksamensplan æøå " * 6 + ".pdf", os.urandom(100_000))
    attach(draft, "rom.csv", "rom;plasser\nBlåbær;40\n".encode())
    parts = attachments.email_parts(draft.pk)
    mail_policy = getattr(email.policy, policy_name)
    built = {}
    for cls in (fast_email.FastEmailMultiAlternatives, EmailMultiAlternatives):
        mail = cls(
            subject="Eksamensplan",
            body="Hei Åse,\n\nse vedlegget.",
            from_email="Kari <kari@uni.example>",
            to=["ase@uni.example"],
            reply_to=["coordinator@uni.example"],
            headers={
                "Message-ID": "<receiver-1.message-2@messaging.local>",
                "Date": "Thu, 26 Nov 2026 08:00:00 +0000",
            },
        )
        if html:
            mail.attach_alternative(html, "text/html")
        for part in parts:
            mail.attach(part)
        built[cls] = mail.message(policy=mail_policy)
    fast, django_built = built[fast_email.FastEmailMultiAlternatives], built[EmailMultiAlternatives]
    assert isinstance(fast, fast_email.PreparedMessage) and fast._prepared is not None
    assert comparable(fast.as_bytes()) == comparable(django_built.as_bytes())
    # The message object itself has the parts a backend that inspects it expects.
    assert [p.get_content_type() for p in fast.walk()] == [p.get_content_type() for p in django_built.walk()]
    assert all(len(line) <= 78 for line in fast.as_bytes().split(mail_policy.linesep.encode()))


def test_a_test_send_carries_the_attachments(staff, draft, smtp_mailer):
    attach(draft, "plan.pdf", b"%PDF plan")
    result = composing.send_test(draft, staff)
    assert result.delivered, result.reason
    (sunk,) = smtp_mailer.received
    (part,) = attachment_parts(sunk.message)
    assert (part.get_filename(), part.get_content()) == ("plan.pdf", b"%PDF plan")


def test_a_file_missing_from_storage_fails_each_receiver_with_the_reason(
    staff, draft, make_user, smtp_mailer, media, settings, django_capture_on_commit_callbacks
):
    settings.MESSAGING_NOTIFY_SENDER = False
    attachment = attach(draft, "gone.pdf")
    (media / attachment.file.name).unlink()
    message = send_to(staff, [make_user(), make_user()], draft, django_capture_on_commit_callbacks)
    assert smtp_mailer.received == []
    for receiver in message.receivers.all():
        assert receiver.status == "failed" and receiver.permanent_failure
        assert "gone.pdf cannot be read" in receiver.errors[-1]["error_message"]


def test_a_file_changed_in_storage_is_not_sent(
    staff, draft, make_user, smtp_mailer, media, settings, django_capture_on_commit_callbacks
):
    settings.MESSAGING_NOTIFY_SENDER = False
    attachment = attach(draft, "plan.pdf")
    (media / attachment.file.name).write_bytes(b"tampered")
    message = send_to(staff, [make_user()], draft, django_capture_on_commit_callbacks)
    assert smtp_mailer.received == []
    assert "has changed since it was attached" in message.receivers.get().errors[-1]["error_message"]


class CountingSMTPHandler(socketserver.StreamRequestHandler):
    """One SMTP session: answers every command, reads DATA in large chunks (aiosmtpd reads it
    line by line, far slower than the sender being measured) and keeps only each email's size
    and the first email."""

    def handle(self) -> None:
        self.wfile.write(b"220 counting sink\r\n")
        while line := self.rfile.readline(1001):
            command = line[:4].upper()
            if command in (b"EHLO", b"HELO"):
                self.wfile.write(b"250-counting sink\r\n250 8BITMIME\r\n")
            elif command == b"DATA":
                self.wfile.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.server.keep(self._read_data())
                self.wfile.write(b"250 OK\r\n")
            elif command == b"QUIT":
                self.wfile.write(b"221 Bye\r\n")
                return
            else:  # MAIL, RCPT, RSET, NOOP
                self.wfile.write(b"250 OK\r\n")

    def _read_data(self) -> bytes:
        chunks, tail = [], b""
        while tail != b"\r\n.\r\n":
            chunk = self.rfile.read1(1 << 20)
            if not chunk:
                raise ConnectionError("the client left in the middle of DATA")
            chunks.append(chunk)
            tail = (tail + chunk)[-5:]
        return b"".join(chunks)


class CountingSMTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), CountingSMTPHandler)
        self.sizes: list[int] = []
        self.first: bytes = b""
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def keep(self, data: bytes) -> None:
        if not self.sizes:
            self.first = data
        self.sizes.append(len(data))

    def __enter__(self) -> CountingSMTPServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()
        self.server_close()


def test_memory_of_a_big_attachment_to_many_receivers(
    staff, draft, make_user, settings, media, django_capture_on_commit_callbacks
):
    receivers, size = 200, 5 * 1024 * 1024
    data = os.urandom(size)
    attach(draft, "big.pdf", data)
    users = [make_user() for _ in range(receivers)]
    with CountingSMTPServer() as sink:
        host, port = sink.server_address
        settings.MAILERS = {
            "default": {
                "BACKEND": "messaging.engine.channels.smtp_backend.EmailBackend",
                "OPTIONS": {"host": host, "port": port, "timeout": 30},
            }
        }
        started = time.monotonic()
        tracemalloc.start()
        try:
            message = send_to(staff, users, draft, django_capture_on_commit_callbacks)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        seconds = time.monotonic() - started
    print(
        f"\n{receivers} receivers x {size / 2**20:.0f} MiB attachment: tracemalloc peak "
        f"{peak / 2**20:.1f} MiB (a copy per receiver: {receivers * size / 2**20:.0f} MiB), "
        f"{seconds:.1f} s"
    )
    assert message.status == Message.Status.SENT
    assert len(sink.sizes) == receivers and min(sink.sizes) > size
    (part,) = message_from_bytes(sink.first, policy=email.policy.default).iter_attachments()
    assert part.get_content() == data
    assert peak < 20 * size, f"peak {peak / 2**20:.1f} MiB"
