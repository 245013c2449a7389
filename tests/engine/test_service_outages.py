"""The services fail mid-send, for real: PostgreSQL stopped, PostgreSQL crashed, Redis emptied.

`make test-services` only (PostgreSQL + Redis, and initdb/pg_ctl/redis-server installed): each
test starts a PostgreSQL server of its own (initdb into a temporary directory, a free loopback
port, the server's defaults: fsync on) and a redis-server of its own (nothing on disk), queues a
message to RECEIVERS users there and lets a real consumer (`manage.py run_huey`, --no-periodic)
send it over SMTP to the in-process sink. A third of the way in, the service goes:

- `pg_ctl stop -m fast` (backends ended, a clean shutdown), started again;
- `pg_ctl stop -m immediate` (a crash: the next start replays the WAL, and what was committed
  without waiting for the WAL flush is gone), started again;
  each for 1 s with the default patience (the lanes wait for the database and carry on), and for
  3 s with lanes that give up after 1 s (their delivery tasks fail and huey runs them again;
  their claims are taken over, and what they had in flight comes back flagged);
- Redis killed and started again a second later, empty: every queued task and huey's schedule
  are gone; once with the broker used only as the queue, once with sending limits (whose slots
  live in the same Redis, so every send needs it).

The sweeper runs in a process of its own on the private database (tests.process_helpers.Sweeper),
and not at all for PROMPT_SECONDS after the service returns: sending must resume by itself
(retried tasks), not at the next sweep. Then it runs every SWEEP_INTERVAL until all is sent.

Each test: nothing lost (every receiver `sent`, every Message-ID at the sink), no receiver left
for staff to settle, every duplicate delivery flagged "delivery_uncertain", flags only on
receivers that were in flight (at most one per lane beyond the duplicates); and it prints the
figures, including the seconds from the service's return to the first new delivery and to the
last.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import pytest
from django.db import connection
from huey import RedisHuey

from messaging.feedback import signatures
from messaging.models import Message, MessageReceiver
from messaging.operations.mailsink import MailSink
from tests.conftest import Consumer
from tests.process_helpers import (
    ENGINE_ENV,
    PrivatePostgres,
    PrivateRedis,
    Sweeper,
    django_env,
    email_url,
    manage,
    postgres_bin_dir,
    postgres_user_prefix,
)

pytestmark = pytest.mark.services

RECEIVERS = 1_000
WORKERS = 2
CONNECTIONS = 4
LANES = WORKERS * CONNECTIONS  # receivers that can be in flight at once
DATA_DELAY = 0.1  # the sink's answer to DATA: the send takes 10-20 s on a 2-core machine
OUTAGE_AT = RECEIVERS * 3 // 10  # delivered when the service goes
DOWN_SECONDS = 1.0
# The sweeper stays out this long after the service returns; a send resumed only by the next
# sweep (once a minute in production) would show up here as nothing at all.
PROMPT_SECONDS = 20.0
SWEEP_INTERVAL = 4.0
FINISH_SECONDS = 60.0
TEMPLATE = "outage_template"
HUEY_NAME = "messaging-test"  # project.settings_test
_databases = itertools.count(1)


def _missing_services() -> str | None:
    if connection.vendor != "postgresql" or not os.environ.get("REDIS_URL"):
        return "needs PostgreSQL and Redis (make test-services: DATABASE_URL=postgres://..., REDIS_URL)"
    if postgres_bin_dir() is None:
        return "initdb and pg_ctl not found (on PATH or in /usr/lib/postgresql/<version>/bin)"
    if postgres_user_prefix() is None:
        return "running as root without a `postgres` user and runuser: initdb refuses root"
    if shutil.which("redis-server") is None:
        return "redis-server not found on PATH"
    return None


@pytest.fixture(scope="module")
def postgres_server():
    """One private server for the module, with a migrated template database each test copies."""
    reason = _missing_services()
    if reason:
        pytest.skip(reason)
    server = PrivatePostgres(postgres_bin_dir(), postgres_user_prefix())
    try:
        server.init().start()
        server.execute(f"CREATE DATABASE {TEMPLATE}")
        # No broker needed to migrate: a port nothing listens on fails loudly should that change.
        manage(django_env(server.url(TEMPLATE), "redis://127.0.0.1:9/0"), "migrate", "--noinput")
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def private_database(postgres_server) -> str:
    """A fresh, migrated database on the private server (started again if a test left it down)."""
    if not postgres_server.running():
        postgres_server.start()
    name = f"outage_{next(_databases)}"
    postgres_server.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    return name


@pytest.fixture
def private_redis():
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@dataclass
class Outcome:
    """What one send through an outage came to."""

    receivers: list[tuple[int, str, dict]]  # (pk, status, status_data), by pk
    message_status: str
    deliveries: collections.Counter  # Message-ID → times the sink took it
    expected: dict[str, int]  # Message-ID → receiver pk
    delivered_before: int
    returned_at: float  # Unix time the service answered again
    resumed_after: float | None  # seconds from then to the first new delivery
    finished_after: float | None  # ... to the last delivery, if all were sent
    sweeps: collections.Counter
    queued_at_outage: int = 0  # tasks waiting in the broker when the service went

    @property
    def duplicates(self) -> dict[str, int]:
        return {mid: n - 1 for mid, n in self.deliveries.items() if n > 1}

    @property
    def flagged(self) -> set[int]:
        return {pk for pk, _, data in self.receivers if "delivery_uncertain" in data}

    @property
    def duplicated(self) -> set[int]:
        return {self.expected[mid] for mid in self.duplicates if mid in self.expected}


def send_through_outage(
    server: PrivatePostgres,
    database: str,
    broker: PrivateRedis,
    sink: MailSink,
    outage: Callable[[], float],
    **consumer_env,
) -> Outcome:
    """Queue a message to RECEIVERS users on `database`, let a consumer send it, call `outage`
    (it takes a service down and back and returns the Unix time it answered again) once
    OUTAGE_AT are delivered, then wait for the rest: PROMPT_SECONDS without the sweeper, then
    sweeping every SWEEP_INTERVAL."""
    sink.handler.data_delay = DATA_DELAY
    env = django_env(server.url(database), broker.url)
    script = (
        "from django.contrib.auth import get_user_model\n"
        "from tests.process_helpers import queue_message\n"
        f"print(queue_message(get_user_model(), {RECEIVERS}, 'outage').pk)\n"
    )
    message_id = int(manage(env, "shell", "--no-imports", "-c", script).split()[-1])
    consumer = Consumer(
        email_url(sink),
        workers=WORKERS,
        **{**ENGINE_ENV, "MESSAGING_SMTP_CONNECTIONS": CONNECTIONS, **consumer_env},
        DATABASE_URL=server.url(database),
        REDIS_URL=broker.url,
    ).start()
    sweeper = None
    try:
        sweeper = Sweeper(env)
        _wait_for(lambda: len(sink.received) >= OUTAGE_AT, 60, "the consumer to deliver OUTAGE_AT")
        assert consumer.process.poll() is None, "the consumer exited before the outage"
        delivered_before = len(sink.received)
        assert delivered_before < RECEIVERS, "the send finished before the outage: nothing was tested"
        queued_at_outage = RedisHuey(HUEY_NAME, url=broker.url).pending_count()
        returned_at = outage()

        # The first delivery after the service's return is read from the sink afterwards; here
        # the send may finish by itself (no sweeps counted then).
        _wait_for(lambda: _all_sent(server, database, message_id), PROMPT_SECONDS, interval=0.5, raises=False)

        def finished() -> bool:
            if _all_sent(server, database, message_id):
                return True
            sweeper.sweep()
            return False

        _wait_for(finished, FINISH_SECONDS, interval=SWEEP_INTERVAL, raises=False)
    finally:
        consumer.stop()
        if sweeper is not None:
            sweeper.stop()

    receivers, message_status = _read(server, database, message_id)
    first_new = _first_delivery_since(sink, returned_at)
    last = max(mail.arrived_at for mail in sink.received)
    everything_sent = message_status == Message.Status.SENT and all(
        status == MessageReceiver.Status.SENT for _, status, _ in receivers
    )
    return Outcome(
        receivers=receivers,
        message_status=message_status,
        deliveries=collections.Counter(mail.message["Message-ID"] for mail in list(sink.received)),
        expected={signatures.message_id(pk, message_id, "messaging.local"): pk for pk, _, _ in receivers},
        delivered_before=delivered_before,
        returned_at=returned_at,
        resumed_after=None if first_new is None else first_new - returned_at,
        finished_after=last - returned_at if everything_sent else None,
        sweeps=sweeper.outcomes,
        queued_at_outage=queued_at_outage,
    )


def _first_delivery_since(sink: MailSink, since: float) -> float | None:
    return min((mail.arrived_at for mail in list(sink.received) if mail.arrived_at >= since), default=None)


def _wait_for(
    predicate: Callable[[], bool], timeout: float, message: str = "", interval: float = 0.05, raises=True
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    if raises:
        raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {message}.")
    return predicate()


def _all_sent(server: PrivatePostgres, database: str, message_id: int) -> bool:
    try:
        receivers, message_status = _read(server, database, message_id)
    except psycopg.OperationalError:  # the server is still coming back
        return False
    return message_status == Message.Status.SENT and all(
        status == MessageReceiver.Status.SENT for _, status, _ in receivers
    )


def _read(server: PrivatePostgres, database: str, message_id: int) -> tuple[list[tuple[int, str, dict]], str]:
    with server.connect(database) as conn:
        receivers = conn.execute(
            "SELECT id, status, status_data FROM messaging_messagereceiver WHERE message_id = %s ORDER BY id",
            [message_id],
        ).fetchall()
        (message_status,) = conn.execute(
            "SELECT status FROM messaging_message WHERE id = %s", [message_id]
        ).fetchone()
    return receivers, message_status


def report(name: str, outcome: Outcome, capsys) -> None:
    """Print the figures (CI's output keeps them, passed or not)."""

    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.1f}s"

    statuses = collections.Counter(status for _, status, _ in outcome.receivers)
    with capsys.disabled():
        print(
            f"\n{name}: receivers={len(outcome.receivers)} delivered={len(outcome.deliveries)} "
            f"duplicates={sum(outcome.duplicates.values())} flagged={len(outcome.flagged)} "
            f"unflagged_duplicates={len(outcome.duplicated - outcome.flagged)} "
            f"flagged_delivered_once={len(outcome.flagged - outcome.duplicated)} "
            f"delivered_before={outcome.delivered_before} queued_at_outage={outcome.queued_at_outage} "
            f"resumed_after={seconds(outcome.resumed_after)} "
            f"all_sent_after={seconds(outcome.finished_after)} "
            f"sweeps={dict(outcome.sweeps)} statuses={dict(statuses)} message={outcome.message_status}"
        )


def assert_nothing_lost_and_duplicates_flagged(outcome: Outcome, service: str) -> None:
    statuses = collections.Counter(status for _, status, _ in outcome.receivers)
    assert len(outcome.receivers) == RECEIVERS
    missing = set(outcome.expected) - set(outcome.deliveries)
    assert not missing, f"{len(missing)} receivers never reached the mail server"
    assert statuses == {MessageReceiver.Status.SENT: RECEIVERS}, (
        f"receivers left unfinished: {dict(statuses)}"
    )
    assert outcome.message_status == Message.Status.SENT
    unflagged = outcome.duplicated - outcome.flagged
    assert not unflagged, (
        f"{len(unflagged)} receivers were delivered twice without the delivery_uncertain flag"
    )
    # Precise flags: beyond the receivers actually delivered twice, only those a lane had in
    # flight when the service went (at most one per lane) may carry the flag.
    flagged_once = outcome.flagged - outcome.duplicated
    assert len(flagged_once) <= LANES, (
        f"{len(flagged_once)} receivers delivered once are flagged uncertain "
        f"(at most {LANES} lanes were in flight)"
    )
    # Last: the speed of recovery, once correctness is known.
    resumed = outcome.resumed_after
    assert resumed is not None and resumed <= PROMPT_SECONDS, (
        f"sending did not resume within {PROMPT_SECONDS:.0f} s of {service}'s return without the "
        f"sweeper (first delivery after {resumed if resumed is None else round(resumed, 1)} s)"
    )


@dataclass(frozen=True)
class Patience:
    """How long the consumer's lanes wait for the database before their delivery task fails,
    and so which line of defence a PostgreSQL outage of `down_seconds` meets."""

    name: str
    down_seconds: float
    env: dict


PATIENCE = [
    # The defaults: a lane waits up to MESSAGING_DATABASE_OUTAGE_SECONDS (60 s) and carries on.
    Patience("ridden_out", DOWN_SECONDS, {}),
    # Lanes give up after 1 s: the delivery tasks fail, huey runs them again 2 s later (until the
    # server is back), and the claims of the lanes that gave up are taken over once their lease
    # runs out, receivers marked in flight flagged.
    Patience(
        "tasks_retried", 3.0, {"MESSAGING_DATABASE_OUTAGE_SECONDS": 1, "MESSAGING_TASK_RETRY_SECONDS": 2}
    ),
]


def _postgres_outage(server: PrivatePostgres, mode: str, patience: Patience) -> Callable[[], float]:
    def outage() -> float:
        server.stop(mode)
        time.sleep(patience.down_seconds)
        return server.start()

    return outage


@pytest.mark.parametrize("patience", PATIENCE, ids=lambda p: p.name)
def test_postgres_restart_mid_send(
    patience, postgres_server, private_database, private_redis, smtp_sink, capsys
):
    """`pg_ctl stop -m fast`: every connection is cut, committed work is kept."""
    outage = _postgres_outage(postgres_server, "fast", patience)
    outcome = send_through_outage(
        postgres_server, private_database, private_redis, smtp_sink, outage, **patience.env
    )
    report(f"postgresql stop -m fast, {patience.down_seconds:.0f}s down, {patience.name}", outcome, capsys)
    assert_nothing_lost_and_duplicates_flagged(outcome, "PostgreSQL")


@pytest.mark.parametrize("patience", PATIENCE, ids=lambda p: p.name)
def test_postgres_crash_mid_send(
    patience, postgres_server, private_database, private_redis, smtp_sink, capsys
):
    """`pg_ctl stop -m immediate`: a crash. Recovery replays the WAL; a commit that did not
    wait for its WAL flush (synchronous_commit off) is lost, and whatever mail it recorded must
    come back flagged, never re-sent unflagged."""
    outage = _postgres_outage(postgres_server, "immediate", patience)
    outcome = send_through_outage(
        postgres_server, private_database, private_redis, smtp_sink, outage, **patience.env
    )
    report(
        f"postgresql stop -m immediate, {patience.down_seconds:.0f}s down, {patience.name}", outcome, capsys
    )
    assert_nothing_lost_and_duplicates_flagged(outcome, "PostgreSQL")


# With sending limits, every send takes its slot from Redis (the limits' store is the broker's
# URL when REDIS_URL is set): the broker's loss reaches the lanes themselves. The limit is far
# above the send's rate, so it never slows it.
BROKER_USES = {
    "queue_only": {},
    "rate_limited": {"MESSAGING_RATE_LIMITS": json.dumps({"default": {"per_second": 1000}})},
}


@pytest.mark.parametrize("uses", BROKER_USES)
def test_broker_restarted_empty_mid_send(
    uses, postgres_server, private_database, private_redis, smtp_sink, capsys
):
    """Redis killed and started again with nothing in it: queued and scheduled tasks are gone,
    and so are the sending limits' slots."""

    def outage() -> float:
        private_redis.kill()
        time.sleep(DOWN_SECONDS)
        return private_redis.start()

    outcome = send_through_outage(
        postgres_server, private_database, private_redis, smtp_sink, outage, **BROKER_USES[uses]
    )
    report(f"redis restarted empty, {DOWN_SECONDS:.0f}s down, {uses}", outcome, capsys)
    assert_nothing_lost_and_duplicates_flagged(outcome, "Redis")
