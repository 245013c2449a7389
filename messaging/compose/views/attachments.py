"""Downloading a message's attachment (staff only; files are never served as static media)."""

from __future__ import annotations

from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from messaging.models import MessageAttachment
from messaging.staff_pages import VIEW, staff_permission_required


@staff_permission_required(VIEW)
@require_GET
def attachment_download(request: HttpRequest, pk: int) -> FileResponse:
    attachment = get_object_or_404(MessageAttachment, pk=pk)
    try:
        stored = attachment.file.open("rb")
    except OSError as exc:  # the row outlived its file (restored database, storage cleaned up)
        raise Http404("The attachment's file is missing.") from exc
    # Django writes the name as RFC 6266 filename*= when it is not plain ASCII.
    response = FileResponse(
        stored, as_attachment=True, filename=attachment.filename, content_type=attachment.content_type
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response
