"""Database connections: a worker delivers over no more lanes than
MESSAGING_DB_CONNECTIONS_PER_WORKER leaves room for, and a database system check compares what
the whole deployment may open with the live PostgreSQL server's max_connections.
"""

from __future__ import annotations

import socket
import threading

import pytest
from django.core import checks
from django.db import connection

from messaging.checks import ConnectionBudget, connection_budget_problems, huey_workers
from messaging.engine.delivery import lane_count
from messaging.models import Message, MessageReceiver
from tests.engine_helpers import SEND_ARGS, LanguageSubject

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="max_connections is a PostgreSQL setting (DATABASE_URL=postgres://…)",
)
on_sqlite = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's own case")


def budget_warnings(databases=("default",)) -> list[checks.CheckMessage]:
    found = checks.run_checks(databases=list(databases) if databases else None)
    return [message for message in found if message.id in ("messaging.W001", "messaging.W002")]


def live_max_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        return int(cursor.fetchone()[0])


# The bound ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("smtp_connections", "per_worker", "lanes"),
    [
        (16, 17, 16),  # the defaults: every lane has its connection
        (16, 5, 4),  # the worker's own connection and four lanes
        (4, 17, 4),  # fewer SMTP sessions than the bound allows
        (16, 2, 1),
        (16, 1, 1),  # one lane, on the worker's own connection
    ],
)
def test_lanes_are_bounded_by_the_database_connections_per_worker(
    settings, smtp_connections, per_worker, lanes
):
    settings.MESSAGING_SMTP_CONNECTIONS = smtp_connections
    settings.MESSAGING_DB_CONNECTIONS_PER_WORKER = per_worker
    assert not connection.in_atomic_block
    assert lane_count() == lanes


class ConnectionPeak(threading.Thread):
    """The most connections to the test database held at once by anything but this thread,
    sampled from pg_stat_activity while a delivery runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self.stopped = threading.Event()

    def run(self):
        try:
            with connection.cursor() as cursor:  # this thread's own connection
                while not self.stopped.is_set():
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                    self.peak = max(self.peak, cursor.fetchone()[0])
                    self.stopped.wait(0.005)
        finally:
            connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_delivering_worker_holds_no_more_connections_than_the_bound(
    settings, smtp_mailer, django_user_model, capsys
):
    """A relay taking 50 ms per message makes extra lanes pay, so the worker adds them up to
    the bound: three connections = its own + two lanes, whatever MESSAGING_SMTP_CONNECTIONS."""
    settings.MESSAGING_SMTP_CONNECTIONS = 8
    settings.MESSAGING_DB_CONNECTIONS_PER_WORKER = 3
    smtp_mailer.handler.data_delay = 0.05
    users = django_user_model.objects.bulk_create(
        django_user_model(username=f"budget{i}", email=f"budget{i}@uni.example") for i in range(40)
    )
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    monitor = ConnectionPeak() if connection.vendor == "postgresql" else None
    if monitor:
        monitor.start()
    try:
        message.prepare_and_send(LanguageSubject(), **SEND_ARGS)
    finally:
        if monitor:
            monitor.stopped.set()
            monitor.join()

    with capsys.disabled():
        peak = monitor.peak if monitor else "n/a (SQLite)"
        print(
            f"\nconnection bound 3, MESSAGING_SMTP_CONNECTIONS=8: most SMTP sessions at once "
            f"{smtp_mailer.handler.most_in_flight}, most database connections at once {peak}"
        )
    assert set(MessageReceiver.objects.filter(message=message).values_list("status", flat=True)) == {"sent"}
    assert 1 <= smtp_mailer.handler.most_in_flight <= 2
    if monitor:
        assert 1 <= monitor.peak <= 3


# The system check ---------------------------------------------------------------------------------


@on_postgresql
@pytest.mark.django_db
def test_the_check_warns_when_the_deployment_can_exceed_the_live_max_connections(settings):
    live = live_max_connections()
    per_host = 2 * 17 + 1  # two huey workers x (16 lanes + their own) + the heartbeat
    settings.HUEY = {**settings.HUEY, "consumer": {**settings.HUEY["consumer"], "workers": 2}}
    settings.MESSAGING_WORKER_HOSTS = hosts = live // per_host + 1
    settings.MESSAGING_WEB_DB_CONNECTIONS = 10
    total = hosts * per_host + 10

    (warning,) = budget_warnings()

    assert warning.id == "messaging.W001"
    assert (
        f"{hosts} worker hosts x (2 huey workers x (16 lanes + 1) + 1 heartbeat) + 10 web = {total}"
        in warning.msg
    )
    assert f"max_connections {live} - " in warning.msg
    assert "MESSAGING_DB_CONNECTIONS_PER_WORKER to " in warning.hint

    # The value the hint names is within the budget.
    suggested = int(warning.hint.split("MESSAGING_DB_CONNECTIONS_PER_WORKER to ")[1].split()[0])
    settings.MESSAGING_DB_CONNECTIONS_PER_WORKER = suggested
    assert budget_warnings() == []


@on_postgresql
@pytest.mark.django_db
def test_the_check_is_quiet_when_the_deployment_fits(settings):
    settings.MESSAGING_WORKER_HOSTS = 1
    settings.MESSAGING_WEB_DB_CONNECTIONS = 10
    settings.HUEY = {**settings.HUEY, "consumer": {**settings.HUEY["consumer"], "workers": 2}}
    assert ConnectionBudget.from_settings().total <= live_max_connections() - 3
    assert budget_warnings() == []


@on_postgresql
@pytest.mark.django_db
def test_when_not_even_one_connection_per_worker_fits_the_hint_says_so(settings):
    settings.MESSAGING_WORKER_HOSTS = live_max_connections()
    (warning,) = budget_warnings()
    assert "Not even one connection per worker fits" in warning.hint


@pytest.mark.django_db
def test_the_check_runs_only_when_the_database_is_asked_for(settings):
    """Commands that need no database (collectstatic at build time, runserver's reloads) do not
    connect for it: Django runs database checks at `migrate` and `check --database`."""
    settings.MESSAGING_WORKER_HOSTS = 1_000_000
    assert budget_warnings(databases=None) == []


@on_postgresql
@pytest.mark.django_db
def test_an_unreachable_database_gives_a_warning_not_a_crash(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    unreachable = connection.copy(alias="unreachable")
    unreachable.settings_dict = {**unreachable.settings_dict, "HOST": "127.0.0.1", "PORT": closed_port}
    try:
        (warning,) = connection_budget_problems(unreachable, ConnectionBudget(1_000_000, 2, 16, 10))
    finally:
        unreachable.close()
    assert warning.id == "messaging.W002"
    assert "Could not read PostgreSQL's max_connections" in warning.msg


@on_sqlite
@pytest.mark.django_db
def test_on_sqlite_the_check_says_nothing(settings):
    settings.MESSAGING_WORKER_HOSTS = 1_000_000
    assert budget_warnings() == []


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "MESSAGING_DB_CONNECTIONS_PER_WORKER",
            0,
            "MESSAGING_DB_CONNECTIONS_PER_WORKER must be a whole number of at least 1 (is 0)",
        ),
        (
            "MESSAGING_DB_CONNECTIONS_PER_WORKER",
            "9",
            "MESSAGING_DB_CONNECTIONS_PER_WORKER must be a whole number of at least 1 (is '9')",
        ),
        ("MESSAGING_WORKER_HOSTS", 0, "MESSAGING_WORKER_HOSTS must be a whole number of at least 1 (is 0)"),
        (
            "MESSAGING_WORKER_HOSTS",
            True,
            "MESSAGING_WORKER_HOSTS must be a whole number of at least 1 (is True)",
        ),
        (
            "MESSAGING_WEB_DB_CONNECTIONS",
            -1,
            "MESSAGING_WEB_DB_CONNECTIONS must be a whole number of at least 0 (is -1)",
        ),
        (
            "MESSAGING_WEB_DB_CONNECTIONS",
            2.5,
            "MESSAGING_WEB_DB_CONNECTIONS must be a whole number of at least 0 (is 2.5)",
        ),
    ],
)
@pytest.mark.django_db
def test_invalid_values_are_an_error_naming_the_setting_and_the_budget_check_does_not_crash(
    settings, name, value, expected
):
    setattr(settings, name, value)
    found = checks.run_checks(databases=["default"])
    errors = [message for message in found if message.id == "messaging.E010"]
    assert [error.msg for error in errors] == [f"{expected}."]
    assert isinstance(errors[0], checks.Error)
    assert [message for message in found if message.id in ("messaging.W001", "messaging.W002")] == []


def test_the_default_settings_are_valid_and_keep_every_lane(settings):
    assert [m for m in checks.run_checks() if m.id == "messaging.E010"] == []
    assert ConnectionBudget.from_settings() == ConnectionBudget(
        hosts=1, workers=huey_workers(), lanes=16, web=10
    )
