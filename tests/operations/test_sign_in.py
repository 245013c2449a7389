"""Sign-in resists guessing: django-axes locks a username + address pair on /login/ and /admin/,
the lockout page says why and until when, failures and lockouts are audited, administrators can
unlock, idle sessions end, and wholly numeric passwords are refused.

Everything goes through the real URLs: axes sees only sign-ins that come with a request.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from messaging import sign_in
from messaging.models import AuditEvent
from tests.conftest import grant

PASSWORD = "a-long-and-right-passphrase"
WRONG = "wrong-guess-4711"
HERE, ELSEWHERE = "198.51.100.7", "203.0.113.9"
LOGIN, ADMIN_LOGIN = "/login/", "/admin/login/"


@pytest.fixture
def staff(make_user):
    return grant(make_user(is_staff=True, password=PASSWORD), "view_message")


@pytest.fixture
def limit(settings) -> int:
    return settings.AXES_FAILURE_LIMIT


def sign_in_as(client, username: str, password: str, address: str = HERE, url: str = LOGIN):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in_user_id(client) -> str | None:
    return client.session.get("_auth_user_id")


def fail(client, username: str, times: int, address: str = HERE, url: str = LOGIN) -> list:
    return [sign_in_as(client, username, WRONG, address, url).status_code for _ in range(times)]


def assert_locked_out(response) -> None:
    assert response.status_code == 429
    page = response.content.decode()
    assert 'id="locked-out"' in page and 'id="login-form"' not in page  # the view's form is replaced
    assert "After too many failed sign-ins, this account is locked for sign-ins from your address." in page
    assert "contact an administrator" in page


@pytest.mark.django_db
def test_the_defaults_lock_after_five_failures_for_fifteen_minutes(settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"
    assert settings.MIDDLEWARE[-1] == "axes.middleware.AxesMiddleware"


@pytest.mark.django_db
def test_failures_below_the_limit_then_the_right_password_signs_in(client, staff, limit):
    assert fail(client, staff.username, limit - 1) == [200] * (limit - 1)  # the form again, with its error
    assert signed_in_user_id(client) is None

    response = sign_in_as(client, staff.username, PASSWORD)

    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert signed_in_user_id(client) == str(staff.pk)
    # A success starts the count again: as many failures again do not lock.
    assert not AccessAttempt.objects.filter(username=staff.username).exists()
    client.logout()
    assert fail(client, staff.username, limit - 1) == [200] * (limit - 1)
    assert sign_in_as(client, staff.username, PASSWORD).status_code == 302


@pytest.mark.django_db
def test_reaching_the_limit_locks_even_the_right_password(client, staff, limit):
    statuses = fail(client, staff.username, limit)

    assert statuses == [200] * (limit - 1) + [429]  # the failure that reaches the limit locks
    response = sign_in_as(client, staff.username, PASSWORD)
    assert_locked_out(response)
    assert signed_in_user_id(client) is None


@pytest.mark.django_db
def test_the_lockout_page_says_when_it_unlocks_and_each_attempt_restarts_the_wait(client, staff, limit):
    start = timezone.now().replace(second=0, microsecond=0)
    with time_machine.travel(start, tick=False):
        fail(client, staff.username, limit)
    with time_machine.travel(start + timedelta(minutes=10), tick=False):
        response = sign_in_as(client, staff.username, PASSWORD)
    unlocks = timezone.localtime(start + timedelta(minutes=10 + 15)).strftime("%Y-%m-%d %H:%M")

    assert_locked_out(response)
    assert f"You can try again in 15 minutes, at {unlocks}." in response.content.decode()
    # 14 minutes after that attempt: still locked; 15 minutes after it: the right password works.
    with time_machine.travel(start + timedelta(minutes=10 + 14), tick=False):
        assert sign_in_as(client, staff.username, PASSWORD).status_code == 429
    with time_machine.travel(start + timedelta(minutes=10 + 14 + 15, seconds=1), tick=False):
        assert sign_in_as(client, staff.username, PASSWORD).status_code == 302
    assert signed_in_user_id(client) == str(staff.pk)


@pytest.mark.django_db
def test_the_same_username_from_another_address_is_not_locked(client, staff, limit):
    fail(client, staff.username, limit, address=HERE)

    assert sign_in_as(client, staff.username, PASSWORD, address=HERE).status_code == 429
    assert sign_in_as(client, staff.username, PASSWORD, address=ELSEWHERE).status_code == 302
    assert signed_in_user_id(client) == str(staff.pk)


@pytest.mark.django_db
def test_another_username_from_the_same_address_is_not_locked(client, staff, make_user, limit):
    colleague = make_user(is_staff=True, password=PASSWORD)
    fail(client, staff.username, limit)

    assert sign_in_as(client, colleague.username, PASSWORD).status_code == 302
    assert signed_in_user_id(client) == str(colleague.pk)


@pytest.mark.django_db
def test_a_forged_forwarded_for_header_does_not_escape_the_lock(client, staff, limit):
    for n in range(limit):
        client.post(
            LOGIN,
            {"username": staff.username, "password": WRONG},
            REMOTE_ADDR=HERE,
            HTTP_X_FORWARDED_FOR=f"192.0.2.{n}",
        )

    response = client.post(
        LOGIN,
        {"username": staff.username, "password": PASSWORD},
        REMOTE_ADDR=HERE,
        HTTP_X_FORWARDED_FOR="192.0.2.99",
    )

    assert_locked_out(response)


def test_behind_trusted_proxies_the_address_the_outermost_one_saw_counts(settings):
    forwarded = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 198.51.100.7, 10.0.0.1"}
    request = RequestFactory().post(LOGIN, **forwarded)

    settings.SIGN_IN_TRUSTED_PROXIES = 0
    assert sign_in.client_ip_address(request) == "10.0.0.2"
    settings.SIGN_IN_TRUSTED_PROXIES = 2  # the client's own entry (6.6.6.6) is never believed
    assert sign_in.client_ip_address(request) == "198.51.100.7"
    settings.SIGN_IN_TRUSTED_PROXIES = 4  # more proxies than entries: not from our proxies
    assert sign_in.client_ip_address(request) == "10.0.0.2"
    garbage = RequestFactory().post(LOGIN, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="not-an-address")
    settings.SIGN_IN_TRUSTED_PROXIES = 1
    assert sign_in.client_ip_address(garbage) == "10.0.0.2"


@pytest.mark.django_db
def test_the_admin_sign_in_is_locked_too_and_shares_the_count(client, make_user, limit):
    admin = make_user(is_staff=True, is_superuser=True, password=PASSWORD)
    fail(client, admin.username, limit - 1, url=LOGIN)

    # One more failure, on the admin's own sign-in page, reaches the limit.
    assert_locked_out(sign_in_as(client, admin.username, WRONG, url=ADMIN_LOGIN))
    assert_locked_out(sign_in_as(client, admin.username, PASSWORD, url=ADMIN_LOGIN))
    assert_locked_out(sign_in_as(client, admin.username, PASSWORD, url=LOGIN))
    assert signed_in_user_id(client) is None


@pytest.mark.django_db
def test_failures_and_the_lockout_are_audited_without_the_password(client, staff, limit):
    fail(client, staff.username, limit)
    sign_in_as(client, "nobody-by-this-name", WRONG)

    failed = AuditEvent.objects.filter(action=AuditEvent.Action.SIGN_IN_FAILED).order_by("id")
    assert [event.actor for event in failed] == [staff] * limit + [None]
    assert failed[0].message is None
    assert failed[0].details == {"username": staff.username, "ip_address": HERE, "path": LOGIN}
    assert failed.last().details["username"] == "nobody-by-this-name"
    locked = AuditEvent.objects.get(action=AuditEvent.Action.LOCKED_OUT)
    assert locked.actor == staff
    assert locked.details == {
        "username": staff.username,
        "ip_address": HERE,
        "path": LOGIN,
        "failures": limit,
        "cool_off_minutes": 15,
    }
    stored = json.dumps([event.details for event in AuditEvent.objects.all()])
    stored += "".join(AccessAttempt.objects.values_list("post_data", flat=True))
    assert WRONG not in stored


@pytest.mark.django_db
def test_each_attempt_while_locked_is_audited_as_a_failure_and_a_lockout(client, staff, limit):
    fail(client, staff.username, limit)
    sign_in_as(client, staff.username, PASSWORD)

    assert AuditEvent.objects.filter(action=AuditEvent.Action.SIGN_IN_FAILED).count() == limit + 1
    lockouts = AuditEvent.objects.filter(action=AuditEvent.Action.LOCKED_OUT).order_by("id")
    assert [event.details["failures"] for event in lockouts] == [limit, limit + 1]


@pytest.mark.django_db
def test_axes_reset_username_unlocks(client, staff, make_user, limit):
    other = make_user(password=PASSWORD)
    fail(client, staff.username, limit)
    fail(client, other.username, limit)

    call_command("axes_reset_username", staff.username)

    assert sign_in_as(client, staff.username, PASSWORD).status_code == 302
    assert sign_in_as(client, other.username, PASSWORD).status_code == 429  # only the one named


@pytest.mark.django_db
def test_axes_reset_ip_username_and_axes_reset_unlock(client, staff, make_user, limit):
    other = make_user(password=PASSWORD)
    fail(client, staff.username, limit)
    fail(client, other.username, limit)

    call_command("axes_reset_ip_username", HERE, staff.username)
    assert sign_in_as(client, staff.username, PASSWORD).status_code == 302
    assert sign_in_as(client, other.username, PASSWORD).status_code == 429
    call_command("axes_reset")
    assert sign_in_as(client, other.username, PASSWORD).status_code == 302


@pytest.mark.django_db
def test_deleting_the_attempt_in_the_admin_unlocks(client, staff, make_user, limit):
    fail(client, staff.username, limit)
    admin_client = client.__class__()
    admin_client.force_login(make_user(is_staff=True, is_superuser=True))

    listing = admin_client.get(reverse("admin:axes_accessattempt_changelist"))
    assert listing.status_code == 200
    assert staff.username in listing.content.decode() and "Locked Out" in listing.content.decode()
    attempt = AccessAttempt.objects.get(username=staff.username)
    deleted = admin_client.post(
        reverse("admin:axes_accessattempt_delete", args=[attempt.pk]), {"post": "yes"}
    )

    assert deleted.status_code == 302
    assert sign_in_as(client, staff.username, PASSWORD).status_code == 302


@pytest.mark.django_db
def test_the_audit_admin_shows_message_less_sign_in_events(client, staff, make_user, limit):
    fail(client, staff.username, limit)
    admin_client = client.__class__()
    admin_client.force_login(make_user(is_staff=True, is_superuser=True))

    listing = admin_client.get(reverse("admin:messaging_auditevent_changelist"))
    locked = AuditEvent.objects.get(action=AuditEvent.Action.LOCKED_OUT)
    detail = admin_client.get(reverse("admin:messaging_auditevent_change", args=[locked.pk]))

    assert listing.status_code == 200 and "Locked out after failed sign-ins" in listing.content.decode()
    assert detail.status_code == 200


@pytest.mark.django_db
def test_an_idle_session_ends_and_each_request_extends_it(client, staff, settings):
    idle = timedelta(seconds=settings.SESSION_COOKIE_AGE)
    assert idle == timedelta(minutes=60)
    page = reverse("messaging:message_list")
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert sign_in_as(client, staff.username, PASSWORD).status_code == 302
    # Each request within the idle time moves the end: two of them span more than one idle time.
    with time_machine.travel(start + idle - timedelta(minutes=1), tick=False):
        assert client.get(page).status_code == 200
    with time_machine.travel(start + 2 * idle - timedelta(minutes=2), tick=False):
        assert client.get(page).status_code == 200
    with time_machine.travel(start + 3 * idle, tick=False):
        response = client.get(page)

    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_the_session_row_is_written_at_most_once_a_minute(client, staff):
    """A page polling every 2 s must not write the session table (SQLite's one writer) each time."""
    page = reverse("messaging:message_list")
    start = timezone.now()

    def session_writes(at) -> int:
        with time_machine.travel(at, tick=False), CaptureQueriesContext(connection) as queries:
            assert client.get(page).status_code == 200
        return sum("django_session" in q["sql"] and q["sql"].startswith("UPDATE") for q in queries)

    with time_machine.travel(start, tick=False):
        assert sign_in_as(client, staff.username, PASSWORD).status_code == 302
    writes = [session_writes(start + timedelta(seconds=s)) for s in (2, 30, 58, 61, 63)]

    assert writes == [0, 0, 0, 1, 0]


def test_a_wholly_numeric_password_is_refused():
    with pytest.raises(ValidationError) as refused:
        password_validation.validate_password("12345678901")

    assert "password_entirely_numeric" in [error.code for error in refused.value.error_list]
