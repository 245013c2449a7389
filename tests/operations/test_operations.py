"""Operations: heartbeats, the health figures, `messaging_health`, /metrics and the staff page."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from messaging.models import Heartbeat, Message, MessageReceiver
from messaging.operations import heartbeats
from messaging.operations.health import health_report
from tests import conftest
from tests.conftest import wait_until

Status = Message.Status
RStatus = MessageReceiver.Status
TOKEN = "s3cret-token"
HTMX = {"HTTP_HX_REQUEST": "true"}


def grant_view(user):
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="messaging", codename="view_message")
    )
    return user


@pytest.fixture
def staff(make_user):
    return grant_view(make_user(is_staff=True, username="ops"))


@pytest.fixture
def consumer(db):
    heartbeats.beat("host-a:1", Heartbeat.Kind.CONSUMER, pid=1)
    return Heartbeat.objects.get(name="host-a:1")


def message(status, **fields):
    return Message.objects.create(status=status, **fields)


def receivers(msg, user, n=1, **fields):
    return MessageReceiver.objects.bulk_create(
        [MessageReceiver(message=msg, user=user, send_to=user.email, **fields) for _ in range(n)]
    )


def run_health(*args) -> tuple[int, str]:
    """(exit code, stdout) of `manage.py messaging_health *args`, through call_command."""
    out = StringIO()
    try:
        call_command("messaging_health", *args, stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue()
    return 0, out.getvalue()


# Heartbeats ---------------------------------------------------------------------------------------


class TestHeartbeats:
    def test_beat_upserts_and_keeps_the_start(self, db):
        start = timezone.now() - timedelta(minutes=5)
        with time_machine.travel(start, tick=False):
            heartbeats.beat("h:1", Heartbeat.Kind.CONSUMER, workers=2)
        heartbeats.beat("h:1", Heartbeat.Kind.CONSUMER, workers=4)
        row = Heartbeat.objects.get(name="h:1")
        assert row.started_datetime == start
        assert row.seen_datetime > start
        assert row.details == {"workers": 4}
        assert Heartbeat.objects.count() == 1

    def test_beat_prunes_consumers_unseen_for_a_day(self, db):
        with time_machine.travel(timezone.now() - timedelta(days=2), tick=False):
            heartbeats.beat("dead:1", Heartbeat.Kind.CONSUMER)
            heartbeats.record_sweep()
        heartbeats.beat("live:2", Heartbeat.Kind.CONSUMER)
        assert set(Heartbeat.objects.values_list("name", flat=True)) == {"live:2", heartbeats.SWEEPER}

    def test_record_sweep_and_forget(self, db):
        heartbeats.record_sweep()
        assert Heartbeat.objects.get(name="sweeper").kind == Heartbeat.Kind.SWEEPER
        heartbeats.forget("sweeper")
        assert not Heartbeat.objects.exists()

    def test_consumer_name_is_host_and_pid(self):
        import socket

        assert heartbeats.consumer_name() == f"{socket.gethostname()}:{os.getpid()}"


@pytest.mark.django_db(transaction=True)
def test_heartbeat_thread_writes_its_row_and_deletes_it_on_stop():
    thread = heartbeats.HeartbeatThread(name="thread-test:1", interval=0.05, workers=3)
    thread.start()
    try:
        wait_until(lambda: Heartbeat.objects.filter(name="thread-test:1").exists(), timeout=10)
        first = Heartbeat.objects.get(name="thread-test:1")
        assert first.kind == Heartbeat.Kind.CONSUMER
        assert first.details["workers"] == 3
        wait_until(
            lambda: Heartbeat.objects.get(name="thread-test:1").seen_datetime > first.seen_datetime,
            timeout=10,
            message="a second beat",
        )
    finally:
        thread.stop()
    assert not thread.is_alive()
    assert not Heartbeat.objects.filter(name="thread-test:1").exists()


@pytest.mark.django_db(transaction=True)
def test_run_huey_consumer_beats_while_it_runs(huey_queue, tmp_path):
    """A real `manage.py run_huey` writes its heartbeat, and deletes it on a graceful stop."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings_test",
        "DATABASE_URL": conftest.test_database_url(),
        "HUEY_IMMEDIATE": "0",
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable,
        "manage.py",
        "run_huey",
        "--workers",
        "2",
        "--worker-type",
        "thread",
        "--no-periodic",
    ]
    with (tmp_path / "consumer.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=conftest.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(
                lambda: Heartbeat.objects.filter(kind=Heartbeat.Kind.CONSUMER).exists(),
                timeout=30,
                message="the consumer's heartbeat",
            )
            row = Heartbeat.objects.get(kind=Heartbeat.Kind.CONSUMER)
            assert row.name.endswith(f":{process.pid}")
            assert row.details["workers"] == 2
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=15)
    assert not Heartbeat.objects.filter(kind=Heartbeat.Kind.CONSUMER).exists()


# The figures --------------------------------------------------------------------------------------


class TestHealthReport:
    def test_figures(self, make_user, consumer):
        user = make_user()
        now = timezone.now()
        heartbeats.beat("host-b:2", Heartbeat.Kind.CONSUMER)
        Heartbeat.objects.filter(name="host-b:2").update(seen_datetime=now - timedelta(minutes=5))
        Heartbeat.objects.create(
            name="sweeper", kind=Heartbeat.Kind.SWEEPER, seen_datetime=now - timedelta(seconds=40)
        )
        for status, n in [(Status.SCHEDULED, 2), (Status.QUEUED, 1), (Status.PAUSED, 1), (Status.BLOCKED, 3)]:
            for _ in range(n):
                message(status)
        message(Status.SENT)
        started = now - timedelta(minutes=10)
        sending = message(Status.SENDING, status_data={"sending_started": started.isoformat()})
        # Prepared an hour before the start: they wait from the start, not from their creation.
        receivers(sending, user, 3, created_datetime=now - timedelta(hours=1))
        receivers(sending, user, 2, status=RStatus.SENT, sent_datetime=now - timedelta(seconds=30))
        receivers(sending, user, 1, status=RStatus.SENT, sent_datetime=now - timedelta(seconds=90))
        receivers(sending, user, 2, status=RStatus.FAILED, last_error="451 try later")
        receivers(sending, user, 1, status=RStatus.ERROR, last_error="550 no such user")
        old = message(Status.ERROR, created_datetime=now - timedelta(days=8))
        receivers(old, user, 5, status=RStatus.ERROR, last_error="old failure")
        paused = message(Status.PAUSED)
        receivers(paused, user, 4)  # not waiting: its message is paused

        report = health_report(now)

        assert report.consumers_alive == 1
        assert [(c.name, c.alive) for c in report.consumers] == [("host-a:1", True), ("host-b:2", False)]
        assert report.sweeper_age_seconds == pytest.approx(40, abs=1)
        assert report.message_counts == {
            "scheduled": 2,
            "queued": 1,
            "preparing": 0,
            "sending": 1,
            "paused": 2,
            "blocked": 3,
        }
        assert report.receivers_waiting == 3
        assert report.oldest_waiting_seconds == pytest.approx(600, abs=1)
        assert report.sends_last_minute == 2
        assert report.failures == [("451 try later", False, 2), ("550 no such user", False, 1)]
        # Waiting since the start, but the last send was 30 s ago: progressing, not overdue.
        assert report.overdue_receivers_seconds == pytest.approx(30, abs=1)

    def test_oldest_waiting_counts_from_creation_when_created_after_the_start(self, make_user, db):
        now = timezone.now()
        sending = message(
            Status.SENDING, status_data={"sending_started": (now - timedelta(hours=2)).isoformat()}
        )
        receivers(sending, make_user(), created_datetime=now - timedelta(minutes=3))
        assert health_report(now).oldest_waiting_seconds == pytest.approx(180, abs=1)

    def test_empty(self, db):
        report = health_report()
        assert report.consumers_alive == 0
        assert report.sweeper_last_run is None
        assert report.receivers_waiting == 0
        assert report.oldest_waiting_seconds is None
        assert report.overdue_seconds == 0
        assert report.failures == []
        assert len(report.problems()) == 1


# manage.py messaging_health -----------------------------------------------------------------------


class TestHealthCommand:
    def test_fresh_heartbeat_exits_0(self, consumer):
        code, out = run_health()
        assert code == 0
        assert "consumers alive: 1 (host-a:1)" in out
        assert out.strip().endswith("OK")

    def test_stale_heartbeat_exits_1(self, consumer):
        with time_machine.travel(timezone.now() + timedelta(seconds=121)):
            code, out = run_health()
        assert code == 1
        assert "consumers alive: 0" in out
        assert "PROBLEM: No consumer is alive" in out

    def test_heartbeat_within_the_stale_limit_is_fresh(self, consumer, settings):
        settings.MESSAGING_HEARTBEAT_STALE_SECONDS = 300
        with time_machine.travel(timezone.now() + timedelta(seconds=200)):
            assert run_health()[0] == 0

    def test_no_heartbeat_at_all_exits_1(self, db):
        assert run_health()[0] == 1

    def test_overdue_scheduled_message_exits_1(self, consumer, settings):
        message(Status.SCHEDULED, send_at=timezone.now() - timedelta(minutes=20))
        code, out = run_health()
        assert code == 1
        assert "A scheduled message has waited 20 min" in out
        assert run_health("--max-wait", "1800")[0] == 0
        settings.MESSAGING_HEALTH_MAX_WAIT_SECONDS = 1800
        assert run_health()[0] == 0

    def test_scheduled_message_not_yet_due_is_fine(self, consumer):
        message(Status.SCHEDULED, send_at=timezone.now() + timedelta(hours=3))
        assert run_health()[0] == 0

    def test_overdue_queued_message_exits_1(self, consumer):
        queued = (timezone.now() - timedelta(minutes=16)).isoformat()
        message(Status.QUEUED, status_data={"queued_datetime": queued})
        code, out = run_health()
        assert code == 1
        assert "A queued message has waited" in out

    def test_waiting_receivers_without_sends_exit_1(self, consumer, make_user):
        user = make_user()
        started = timezone.now() - timedelta(minutes=30)
        sending = message(Status.SENDING, status_data={"sending_started": started.isoformat()})
        receivers(sending, user, 2, created_datetime=started - timedelta(seconds=1))
        code, out = run_health()
        assert code == 1
        assert "Receivers have waited 30 min" in out
        # A send a moment ago: delivery is progressing, so the long send is not overdue.
        receivers(sending, user, status=RStatus.SENT, sent_datetime=timezone.now() - timedelta(seconds=5))
        assert run_health()[0] == 0

    def test_exit_status_of_the_process(self, db):
        command = load_command_class("messaging", "messaging_health")
        command.stderr = StringIO()
        with pytest.raises(SystemExit) as exited:
            command.run_from_argv(["manage.py", "messaging_health"])
        assert exited.value.code == 1

    def test_json(self, consumer):
        out = StringIO()
        call_command("messaging_health", "--json", "--max-wait", "60", stdout=out)
        data = json.loads(out.getvalue())
        assert data["healthy"] is True
        assert data["consumers_alive"] == 1
        assert data["max_wait_seconds"] == 60
        assert data["consumers"][0]["name"] == "host-a:1"
        assert data["problems"] == []


# /metrics -----------------------------------------------------------------------------------------


def samples(response) -> dict:
    families = text_string_to_metric_families(response.content.decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


class TestMetrics:
    @pytest.fixture(autouse=True)
    def token(self, settings):
        settings.MESSAGING_METRICS_TOKEN = TOKEN

    def test_right_token(self, client, consumer, make_user):
        sending = message(Status.SENDING, status_data={"sending_started": timezone.now().isoformat()})
        receivers(sending, make_user(), 2)
        receivers(sending, make_user(), status=RStatus.FAILED, last_error="451 later")
        receivers(sending, make_user(), status=RStatus.SENT, sent_datetime=timezone.now())
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200
        assert response["Content-Type"] == CONTENT_TYPE_LATEST
        values = samples(response)
        assert values[("messaging_consumers_alive", ())] == 1
        assert values[("messaging_messages", (("status", "sending"),))] == 1
        assert values[("messaging_messages", (("status", "scheduled"),))] == 0
        assert values[("messaging_receivers_waiting", ())] == 2
        assert values[("messaging_sends_last_minute", ())] == 1
        assert values[("messaging_failures", (("permanent", "false"), ("reason", "451 later")))] == 1
        assert values[("messaging_sweeper_last_run_timestamp_seconds", ())] == 0
        assert values[("messaging_healthy", ())] == 1
        assert ("messaging_overdue_seconds", ()) in values
        assert ("messaging_oldest_waiting_receiver_age_seconds", ()) in values
        assert ("messaging_consumer_last_seen_timestamp_seconds", (("consumer", "host-a:1"),)) in values

    def test_unhealthy(self, client, db):
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert samples(response)[("messaging_healthy", ())] == 0

    def test_wrong_token(self, client, db):
        response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert b"messaging_" not in response.content

    def test_missing_token(self, client, db):
        response = client.get("/metrics")
        assert response.status_code == 401
        assert "WWW-Authenticate" in response

    def test_empty_token_setting_accepts_no_token(self, client, db, settings):
        settings.MESSAGING_METRICS_TOKEN = ""
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer").status_code == 401

    def test_staff_login(self, staff_client):
        response = staff_client.get("/metrics")
        assert response.status_code == 200
        assert b"messaging_consumers_alive" in response.content

    def test_non_staff_is_forbidden(self, client, make_user):
        client.force_login(grant_view(make_user()))
        assert client.get("/metrics").status_code == 403

    def test_staff_without_the_permission_is_forbidden(self, client, make_user):
        client.force_login(make_user(is_staff=True))
        assert client.get("/metrics").status_code == 403

    def test_only_get(self, client, db):
        assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405

    def test_url(self):
        assert reverse("metrics") == "/metrics"


# The staff page -----------------------------------------------------------------------------------


class TestOperationsPage:
    url = "/messages/operations/"

    def test_url(self):
        assert reverse("messaging:operations") == self.url

    def test_figures(self, staff_client, consumer, make_user):
        user = make_user()
        now = timezone.now()
        Heartbeat.objects.create(
            name="gone:9", kind=Heartbeat.Kind.CONSUMER, seen_datetime=now - timedelta(hours=1)
        )
        heartbeats.record_sweep()
        message(Status.SCHEDULED, send_at=now + timedelta(days=1))
        message(Status.BLOCKED)
        sending = message(
            Status.SENDING, status_data={"sending_started": (now - timedelta(seconds=90)).isoformat()}
        )
        receivers(sending, user, 4, created_datetime=now - timedelta(seconds=100))
        receivers(sending, user, 3, status=RStatus.SENT, sent_datetime=now - timedelta(seconds=10))
        receivers(sending, user, 2, status=RStatus.ERROR, last_error="550 mailbox unavailable")

        with time_machine.travel(now, tick=False):
            response = staff_client.get(self.url)

        assert response.status_code == 200
        html = response.content.decode()
        assert 'id="health-ok"' in html and 'id="health-problems"' not in html
        assert '<div class="fs-4" id="consumers-alive">1</div>' in html
        assert '<div class="fs-4" id="receivers-waiting">4</div>' in html
        assert '<div class="fs-4" id="sends-last-minute">3</div>' in html
        assert '<div class="fs-4" id="messages-scheduled">1</div>' in html
        assert '<div class="fs-4" id="messages-blocked">1</div>' in html
        assert '<div class="fs-4" id="messages-paused">0</div>' in html
        assert 'id="oldest-waiting" data-seconds="90"' in html
        assert 'data-consumer="host-a:1" data-alive="true"' in html
        assert 'data-consumer="gone:9" data-alive="false"' in html
        assert "550 mailbox unavailable" in html and 'data-count="2"' in html
        assert "last 7 days" in html
        assert 'id="sweeper-last-run"><time' in html
        assert 'hx-trigger="every 5s"' in html
        assert 'id="nav-operations"' in html

    def test_problems_are_announced(self, staff_client, db):
        html = staff_client.get(self.url).content.decode()
        # Polled, so not role="alert" (read out on every poll): the live region reads it once.
        assert 'id="health-problems" data-announce="health"' in html
        assert "No consumer is alive" in html
        assert 'id="no-consumers"' in html

    def test_htmx_polling_gets_the_figures_only(self, staff_client, consumer):
        response = staff_client.get(self.url, **HTMX)
        html = response.content.decode()
        assert response.status_code == 200
        assert html.lstrip().startswith('<div id="operations-figures"')
        assert "<html" not in html

    def test_anonymous_goes_to_login(self, client, db):
        response = client.get(self.url)
        assert response.status_code == 302 and reverse("login") in response["Location"]

    def test_non_staff_is_forbidden(self, client, make_user):
        client.force_login(grant_view(make_user()))
        assert client.get(self.url).status_code == 403

    def test_staff_without_the_permission_is_forbidden(self, client, make_user):
        client.force_login(make_user(is_staff=True))
        assert client.get(self.url).status_code == 403
