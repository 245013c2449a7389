"""Downloads of the staff UI: a message's receivers as CSV, with the status page's filters."""

from __future__ import annotations

from django.http import HttpRequest, StreamingHttpResponse
from django.views.decorators.http import require_GET

from messaging.staff_pages import VIEW, staff_permission_required
from messaging.tracking import exports, selectors


@staff_permission_required(VIEW)
@require_GET
def receiver_export(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    """The receivers the status page's table shows for the same query (q, status, outcome,
    language), every page of them, streamed: 100,000 receivers never sit in memory."""
    message = selectors.get_message_for_status(pk)
    receivers = selectors.receiver_filter(message, request.GET).qs
    response = StreamingHttpResponse(
        exports.csv_chunks(exports.receiver_rows(receivers)),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="message-{message.pk}-receivers.csv"'},
    )
    # The staff member's data: no shared cache keeps a copy.
    response["Cache-Control"] = "private, no-store"
    return response
