from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def message_list(request: HttpRequest) -> HttpResponse:
    return render(request, "messaging/message_list.html", {})
