"""Shared fixtures: users, a real SMTP sink, and a real huey consumer process."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from messaging.models import MessagingProfile, UserEmail
from messaging.operations.mailsink import MailSink

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count(1)


@pytest.fixture
def make_user(db):
    """make_user(language="nb", emails=["a@x.org"], primary="a@x.org", email="user@x.org")"""

    def make(
        language: str | None = "en", emails=(), primary: str | None = None, email: str | None = None, **fields
    ):
        n = next(_counter)
        fields.setdefault("username", f"user{n}")
        fields.setdefault("first_name", f"First{n}")
        fields.setdefault("last_name", f"Last{n}")
        user = get_user_model().objects.create_user(
            email=f"user{n}@example.org" if email is None else email, **fields
        )
        if language is not None:
            MessagingProfile.objects.create(user=user, languagecode=language)
        for address in emails:
            UserEmail.objects.create(user=user, email=address, is_primary=(address == primary))
        return user

    return make


@pytest.fixture
def staff_client(client, staff):
    """The test client signed in as the module's own `staff` fixture (modules define who staff
    is and what they may do; some override this fixture whole)."""
    client.force_login(staff)
    return client


@pytest.fixture(autouse=True)
def empty_rate_limits():
    """Each test starts with no send counted against the sending limits. On the database they
    go with the test's data; in Redis (REDIS_URL) they would outlive the test, for up to a day."""
    url = os.environ.get("REDIS_URL")
    if url:
        from messaging.engine.rate_limits import RedisStore, _redis_store

        client = _redis_store(url).client
        for key in client.scan_iter(f"{RedisStore.prefix}*"):
            client.delete(key)
    yield


@pytest.fixture(autouse=True)
def lanes_measured_afresh():
    """Each test's deliveries size their lanes from what they see, not from an earlier test's
    relay (messaging.engine.lane_sizing remembers a count per relay in the process)."""
    from messaging.engine import lane_sizing

    lane_sizing.forget_all()
    yield


@pytest.fixture
def scripted_channel():
    """The email channel replaced by a ScriptedChannel (tests.engine_helpers) for one test."""
    from messaging.engine import channels
    from tests.engine_helpers import ScriptedChannel

    original = channels.get_channel("email")
    channel = channels.register(ScriptedChannel())
    yield channel
    channels.register(original)


@pytest.fixture
def engine_settings(settings):
    """For tests that drive consumers (tests.process_helpers.ENGINE_ENV) and the sweeper in this
    process too: the same engine settings as those consumers."""
    from tests.process_helpers import ENGINE_ENV

    settings.MESSAGING_LEASE_SECONDS = ENGINE_ENV["MESSAGING_LEASE_SECONDS"]
    settings.MESSAGING_RETRY_BASE_SECONDS = ENGINE_ENV["MESSAGING_RETRY_BASE_SECONDS"]
    return settings


@pytest.fixture
def smtp_sink():
    """A real SMTP server on loopback: *@tempfail.example → 451, *@bounce.example → 550."""
    with MailSink() as sink:
        yield sink


@pytest.fixture
def smtp_mailer(settings, smtp_sink):
    """Route Django's default mailer to the in-process sink over real SMTP."""
    settings.MAILERS = {
        "default": {
            "BACKEND": "messaging.engine.channels.smtp_backend.EmailBackend",
            "OPTIONS": {"host": smtp_sink.host, "port": smtp_sink.port, "timeout": 10},
        }
    }
    return smtp_sink


def test_database_url() -> str:
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    user = params.get("USER") or ""
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = params.get("HOST") or "127.0.0.1"
    return f"postgres://{auth}{host}:{params.get('PORT') or 5432}/{params['NAME']}"


def wait_until(predicate, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout}s waiting for {message}.")


class Consumer:
    """A real `manage.py run_huey` process on the test database, delivering over SMTP."""

    def __init__(self, email_url: str, workers: int = 2, **env):
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings_test",
            "DATABASE_URL": test_database_url(),
            "HUEY_IMMEDIATE": "0",
            "EMAIL_URL": email_url,
            "PYTHONUNBUFFERED": "1",
            **{k: str(v) for k, v in env.items()},
        }
        self.workers = workers
        self.process: subprocess.Popen | None = None
        (ROOT / "var").mkdir(exist_ok=True)
        self.log = (ROOT / "var" / "test-consumer.log").open("ab")

    def start(self) -> Consumer:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "run_huey",
                "--workers",
                str(self.workers),
                "--worker-type",
                "thread",
                "--no-periodic",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, as on power loss."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=15)

    def terminate(self, timeout: float = 30) -> float:
        """SIGTERM, the graceful stop systemd and Kubernetes send; waits for the process to exit
        and returns how long that took, in seconds."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


@pytest.fixture
def huey_queue(transactional_db):
    """The test process enqueues into the consumer's storage (SqliteHuey file or Redis)."""
    from huey.contrib.djhuey import HUEY

    HUEY.immediate = False
    HUEY.flush()
    yield HUEY
    HUEY.flush()
    HUEY.immediate = True


@pytest.fixture
def huey_consumer(huey_queue, smtp_sink):
    consumer = Consumer(smtp_sink.url).start()
    try:
        yield consumer
    finally:
        consumer.stop()


def grant(user, *codenames):
    """Give `user` these messaging permissions (codenames), on top of what they have."""
    from django.contrib.auth.models import Permission

    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="messaging", codename__in=codenames)
    )
    return user
