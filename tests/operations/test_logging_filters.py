"""An expected 403 logs one line without a traceback; a 500 still logs its traceback."""

from __future__ import annotations

import logging

import pytest
from django.test import Client
from django.urls import include, path, reverse


def broken_view(request):
    raise RuntimeError("something is wrong in the code")


urlpatterns = [
    path("broken/", broken_view),
    path("messages/", include("messaging.urls")),
]


def request_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "django.request"]


@pytest.mark.django_db
def test_a_student_on_a_staff_page_logs_one_line(client, make_user, caplog):
    client.force_login(make_user())
    with caplog.at_level(logging.INFO, logger="django.request"):
        response = client.get(reverse("messaging:message_list"))
    assert response.status_code == 403
    (record,) = request_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"Forbidden (Permission denied): {reverse('messaging:message_list')}"
    assert record.exc_info is None
    assert "Traceback" not in caplog.text


@pytest.mark.urls(__name__)
def test_a_server_error_still_logs_its_traceback(caplog):
    with caplog.at_level(logging.INFO, logger="django.request"):
        response = Client(raise_request_exception=False).get("/broken/")
    assert response.status_code == 500
    (record,) = request_records(caplog)
    assert record.levelno == logging.ERROR
    assert record.exc_info and isinstance(record.exc_info[1], RuntimeError)
    assert "Traceback" in caplog.text
    assert "something is wrong in the code" in caplog.text
