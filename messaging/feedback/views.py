"""Suppressed addresses and the bounce messages that could not be matched: staff see them, and
staff with the permission lift a suppression (audited) or dismiss a kept bounce."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django_tables2 import RequestConfig

from messaging.feedback import suppressions
from messaging.models import AuditEvent, Suppression, UnmatchedBounce
from messaging.staff_pages import VIEW, render_page, staff_permission_required
from messaging.tracking.filters import SuppressionFilter
from messaging.tracking.tables import SuppressionTable

LIFT = "messaging.lift_suppression"
PER_PAGE = 50
UNMATCHED_LISTED = 50
LIFTS_LISTED = 20


def _page(request: HttpRequest, params=None) -> HttpResponse:
    found = SuppressionFilter(
        params if params is not None else request.GET, queryset=Suppression.objects.all()
    )
    table = SuppressionTable(found.qs, can_lift=request.user.has_perm(LIFT))
    RequestConfig(request, paginate={"per_page": PER_PAGE}).configure(table)
    context = {
        "filter": found,
        "table": table,
        "unmatched": UnmatchedBounce.objects.defer("raw")[:UNMATCHED_LISTED],
        "unmatched_count": UnmatchedBounce.objects.count(),
        "lifted": AuditEvent.objects.filter(action=AuditEvent.Action.SUPPRESSION_LIFTED).select_related(
            "actor"
        )[:LIFTS_LISTED],
        "can_lift": request.user.has_perm(LIFT),
    }
    return render_page(request, "messaging/feedback/suppressions.html", context, "results")


@staff_permission_required(VIEW)
@require_GET
def suppression_list(request: HttpRequest) -> HttpResponse:
    return _page(request)


@staff_permission_required(LIFT)
@require_POST
def suppression_lift(request: HttpRequest, pk: int) -> HttpResponse:
    suppression = get_object_or_404(Suppression, pk=pk)
    if suppressions.lift(suppression, actor=request.user):
        messages.success(request, _("%(address)s will be sent to again.") % {"address": suppression.address})
    # The list as the staff member filtered it (htmx sends the page's query in its URL).
    return _page(request, request.GET)


@staff_permission_required(VIEW)
@require_GET
def unmatched_bounce_download(request: HttpRequest, pk: int) -> HttpResponse:
    bounce = get_object_or_404(UnmatchedBounce, pk=pk)
    if bounce.provider:  # a provider's event, as JSON
        response = HttpResponse(bytes(bounce.raw), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="report-{bounce.pk}.json"'
    else:
        response = HttpResponse(bytes(bounce.raw), content_type="message/rfc822")
        response["Content-Disposition"] = f'attachment; filename="bounce-{bounce.pk}.eml"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@staff_permission_required(LIFT)
@require_POST
def unmatched_bounce_dismiss(request: HttpRequest, pk: int) -> HttpResponse:
    UnmatchedBounce.objects.filter(pk=pk).delete()
    messages.success(request, _("The report was dismissed."))
    return _page(request, request.GET)
