"""People (issue 13): staff find a person and see every message they were sent, then open one
receiver's page for the exact subject and content that person got. Staff who may send also
revoke every signed link in the emails a person got (one of them leaked)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django_tables2 import RequestConfig

from messaging.preferences import link_revocation
from messaging.staff_pages import SEND, VIEW, redirect_to, render_page, staff_permission_required
from messaging.tracking import people
from messaging.tracking.tables import PersonReceiverTable

RECEIVERS_PER_PAGE = 25


@staff_permission_required(VIEW)
@require_GET
def person_search(request: HttpRequest) -> HttpResponse:
    found = people.search_people(request.GET.get("q", ""))
    return render_page(request, "messaging/tracking/person_search.html", {"found": found}, "results")


@staff_permission_required(VIEW)
@require_GET
def person_detail(request: HttpRequest, pk: int) -> HttpResponse:
    person = people.get_person(pk)
    receivers = people.person_receiver_filter(person.user, request.GET)
    table = PersonReceiverTable(receivers.qs)
    RequestConfig(request, paginate={"per_page": RECEIVERS_PER_PAGE}).configure(table)
    context = {
        "person": person,
        "filter": receivers,
        "table": table,
        "can_revoke_links": request.user.has_perm(SEND),
    }
    return render_page(request, "messaging/tracking/person_detail.html", context, "results")


@staff_permission_required(SEND)
@require_POST
def person_revoke_links(request: HttpRequest, pk: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=pk)
    link_revocation.revoke_links(user, actor=request.user)
    messages.success(
        request,
        _("The links in the emails sent to %(name)s so far no longer work; the next email has new ones.")
        % {"name": user.get_full_name() or user.get_username()},
    )
    return redirect_to(request, reverse("messaging:person_detail", args=[pk]))
