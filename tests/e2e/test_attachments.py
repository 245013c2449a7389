"""Attachments in a real Chromium (issue 14): a PDF attached on the compose page is saved with
the draft, listed (and downloadable), listed on the preview, refused in place when of a
forbidden type, and removed again; no console error or CSP violation on the way."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from messaging.models import MessageAttachment
from tests.conftest import wait_until
from tests.e2e.conftest import assert_accessible, composed_draft, make_staff, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def stored_files(media) -> list:
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def test_attach_a_pdf_preview_it_and_remove_it(
    e2e_page, e2e_problems, live_server, make_user, settings, tmp_path, screenshot
):
    page = e2e_page
    media = tmp_path / "media"
    settings.MEDIA_ROOT = media
    staff = make_staff(make_user, ["view_message", "compose_message", "send_message"])
    draft = composed_draft(staff, [make_user()], "Exam schedule", "<p>See the attached schedule.</p>")
    pdf = tmp_path / "Eksamensplan høst.pdf"
    pdf.write_bytes(PDF)
    program = tmp_path / "setup.exe"
    program.write_bytes(b"MZ")

    sign_in(page, live_server.url, staff, f"/messages/{draft.pk}/edit/")
    file_input = page.get_by_label("Add files")
    expect(file_input).to_have_attribute(
        "accept",
        ".pdf,.txt,.csv,.ics,.png,.jpg,.jpeg,.gif,.doc,.docx,.xls,.xlsx,.ppt,.pptx,.odt,.ods,.odp,.zip",
    )
    expect(page.locator("#attachments-help")).to_contain_text("Up to 10 files")

    # A forbidden type: the error is next to the input, nothing is saved.
    file_input.set_input_files(str(program))
    page.locator("#save-draft").click()
    expect(page.locator("#attachments-errors")).to_contain_text(
        "setup.exe: files of this type cannot be attached"
    )
    expect(page.get_by_label("Add files")).to_have_attribute("aria-invalid", "true")
    assert not MessageAttachment.objects.exists() and stored_files(media) == []

    page.get_by_label("Add files").set_input_files(str(pdf))
    page.locator("#save-draft").click()
    name = page.locator("[data-testid=attachment-name]")
    expect(name).to_have_text("Eksamensplan høst.pdf")
    expect(page.locator("[data-testid=attachment]")).to_contain_text("application/pdf")
    screenshot("attachments-01-compose")
    assert_accessible(page, "the compose page with an attachment")
    (attachment,) = MessageAttachment.objects.filter(message=draft)
    download = page.request.get(f"{live_server.url}{name.get_attribute('href')}")
    assert download.ok and download.body() == PDF
    assert download.headers["content-disposition"].startswith("attachment; filename*=utf-8''Eksamensplan")

    page.locator("#preview-link").click()
    listed = page.locator("[data-testid=preview-attachment]")
    expect(listed).to_contain_text("Eksamensplan høst.pdf")
    screenshot("attachments-02-preview")

    page.locator("#edit-link").click()
    page.get_by_label("Remove on save: Eksamensplan høst.pdf").check()
    page.locator("#save-draft").click()
    expect(page.locator("#attachment-list")).to_have_count(0)
    expect(page.locator(".alert-success")).to_contain_text("Draft saved.")
    assert not MessageAttachment.objects.filter(pk=attachment.pk).exists()
    wait_until(lambda: stored_files(media) == [], timeout=10, message="the removed file to be deleted")

    assert not e2e_problems.csp_violations, e2e_problems.csp_violations
    assert not e2e_problems.console_errors, e2e_problems.console_errors
    assert not e2e_problems.page_errors, e2e_problems.page_errors
