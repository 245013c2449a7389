"""People (issue 13): staff find a person and see every message they were sent, then open one
receiver's page for the exact subject and content that person got."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django_tables2 import RequestConfig

from messaging import people
from messaging.tables import PersonReceiverTable
from messaging.views import VIEW, _render, require_GET, staff_permission_required

RECEIVERS_PER_PAGE = 25


@staff_permission_required(VIEW)
@require_GET
def person_search(request: HttpRequest) -> HttpResponse:
    found = people.search_people(request.GET.get("q", ""))
    return _render(request, "messaging/person_search.html", {"found": found}, "results")


@staff_permission_required(VIEW)
@require_GET
def person_detail(request: HttpRequest, pk: int) -> HttpResponse:
    person = people.get_person(pk)
    receivers = people.person_receiver_filter(person.user, request.GET)
    table = PersonReceiverTable(receivers.qs)
    RequestConfig(request, paginate={"per_page": RECEIVERS_PER_PAGE}).configure(table)
    context = {"person": person, "filter": receivers, "table": table}
    return _render(request, "messaging/person_detail.html", context, "results")
