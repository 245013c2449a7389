"""Shared by the tests that drive real `run_huey` consumers against an in-process SMTP sink."""

from __future__ import annotations

import collections
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis
from django.db import transaction

from messaging.compose import composing
from messaging.feedback import signatures
from messaging.models import Message, MessageReceiver
from messaging.operations.mailsink import MailSink, free_port

# The system check (messaging.checks) needs a lease of at least 2 x (2 x mail timeout): a lease
# of 4 s passes with a mail timeout of 1 s.
LEASE_SECONDS = 4
ENGINE_ENV = {
    "MESSAGING_LEASE_SECONDS": LEASE_SECONDS,
    "MESSAGING_RETRY_BASE_SECONDS": 1,
    # Enough helper tasks that every worker thread of every consumer joins a send.
    "MESSAGING_DELIVERY_HELPERS": 3,
    # Each worker sends over this many SMTP connections at once (so as many may be in flight).
    "MESSAGING_SMTP_CONNECTIONS": 2,
}
CONNECTIONS = ENGINE_ENV["MESSAGING_SMTP_CONNECTIONS"]


def email_url(sink: MailSink) -> str:
    return f"{sink.url}/?timeout=1"


def draft(django_user_model, receivers: int, prefix: str) -> Message:
    """A staff-composed draft to `receivers` new users named <prefix><n>."""
    django_user_model.objects.bulk_create(
        django_user_model(username=f"{prefix}{i}", email=f"{prefix}{i}@uni.example") for i in range(receivers)
    )
    return Message.objects.create(
        composed_content={"en": {"subject": f"{prefix} test", "body": "<p>Hi {{ recipient_name }}</p>"}},
        virtual_message_receivers={
            "chosen_user_ids": list(
                django_user_model.objects.filter(username__startswith=prefix).values_list("pk", flat=True)
            )
        },
    )


def queue_message(django_user_model, receivers: int, prefix: str) -> Message:
    message = draft(django_user_model, receivers, prefix)
    with transaction.atomic():
        assert composing.queue_send(message) == receivers
    return message


def message_ids(message: Message) -> dict[str, MessageReceiver]:
    return {
        signatures.message_id(r.pk, message.pk, "messaging.local"): r
        for r in MessageReceiver.objects.filter(message=message)
    }


def deliveries(sink: MailSink) -> collections.Counter:
    return collections.Counter(m.message["Message-ID"] for m in list(sink.received))


# ---------------------------------------------------------------------------------------------
# Services of a test's own (tests/engine/test_service_outages.py): a PostgreSQL server and a Redis
# server that the test starts, stops, crashes and starts again, with Django driven through
# subprocesses pointed at them (the pytest-django test database is another server).

ROOT = Path(__file__).resolve().parent.parent


def postgres_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else the newest /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.parent.name.isdigit()]
    for bin_dir in sorted(versions, key=lambda p: int(p.parent.name), reverse=True):
        if (bin_dir / "initdb").exists() and (bin_dir / "pg_ctl").exists():
            return bin_dir
    return None


def postgres_user_prefix() -> list[str] | None:
    """The command prefix that runs initdb and pg_ctl as a user PostgreSQL accepts (it refuses
    root): nothing for any other user, `runuser -u postgres --` for root; None if impossible."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    return ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else None


class ServiceCommandFailed(RuntimeError):
    pass


def _run(command: list[str], timeout: float = 120, **options) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **options)
    if done.returncode:
        output = f"{done.stdout}{done.stderr}"
        raise ServiceCommandFailed(f"{' '.join(command)} exited {done.returncode}:\n{output}")
    return done.stdout


class PrivatePostgres:
    """A PostgreSQL server in a temporary directory on a free loopback port, with the server's
    defaults (fsync on, synchronous_commit on unless a session relaxes it). A test stops it
    (`stop("fast")`), crashes it (`stop("immediate")`: the next start replays the WAL) and
    starts it again on the same port. Trust authentication, as user `postgres`."""

    def __init__(self, bin_dir: Path, prefix: list[str]):
        self.bin_dir, self.prefix = bin_dir, prefix
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="private-postgres-"))
        self.data = self.root / "data"
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def _tool(self, name: str, *args: str, timeout: float = 120) -> str:
        return _run([*self.prefix, str(self.bin_dir / name), *args], timeout=timeout)

    def init(self) -> PrivatePostgres:
        # --no-sync: initdb does not fsync the files it writes (the operating system does not
        # crash in these tests); the server it makes runs with fsync on.
        options = ["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        self._tool("initdb", "-D", str(self.data), *options)
        return self

    def start(self) -> float:
        """Start and wait until it takes connections (after any crash recovery); returns the
        Unix time it did."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "log")
        self._tool("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", log, "-o", options)
        return time.time()

    def stop(self, mode: str = "fast") -> None:
        """fast: backends are ended, a shutdown checkpoint is written. immediate: every process
        quits at once, like a crash; unwritten WAL is lost and the next start recovers."""
        self._tool("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data))

    def running(self) -> bool:
        done = subprocess.run(
            [*self.prefix, str(self.bin_dir / "pg_ctl"), "status", "-D", str(self.data)], capture_output=True
        )
        return done.returncode == 0

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=database,
            autocommit=True,
            connect_timeout=5,
        )

    def execute(self, sql: str, database: str = "postgres") -> None:
        with self.connect(database) as conn:
            conn.execute(sql)

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def cleanup(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server on a free loopback port that keeps nothing on disk: killed and started
    again, it comes back empty."""

    def __init__(self):
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="private-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=5)

    def start(self) -> float:
        """Start and wait until it answers; returns the Unix time it did."""
        # --save "" and --appendonly no: nothing on disk, so a restart comes back empty.
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.root)]
        with (self.root / "log").open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), *options], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return time.time()
            except redis.ConnectionError:
                time.sleep(0.05)
        raise ServiceCommandFailed(f"redis-server on port {self.port} did not answer within 15 s")

    def kill(self) -> None:
        """SIGKILL: whatever it held (queued tasks, huey's schedule) is gone."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=15)

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def django_env(database_url: str, redis_url: str, **env) -> dict[str, str]:
    """The environment of a Django process (consumer, manage.py command) on these services."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings_test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "HUEY_IMMEDIATE": "0",  # queue tasks for the consumer, never run them in the caller
        "PYTHONUNBUFFERED": "1",
        **{key: str(value) for key, value in env.items()},
    }


def manage(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    """Run `manage.py <args>` with `env`; its stdout. Raises with its output if it fails."""
    return _run([sys.executable, "manage.py", *args], timeout=timeout, cwd=ROOT, env=env)


SWEEP_LOOP = """
import sys
from django.db import connections
from messaging.engine import maintenance
for _ in sys.stdin:
    try:
        maintenance.sweep()
        outcome = "swept"
    except Exception as exc:
        outcome = "failed: " + type(exc).__name__
    finally:
        connections.close_all()  # a server restarted meanwhile: the next sweep connects afresh
    print(outcome, flush=True)
"""


class Sweeper:
    """The sweeper (messaging.engine.maintenance.sweep) in a process of its own, for a test
    whose consumers use another database than pytest's: one sweep per `sweep()`, as the
    periodic task runs it (consumers started with --no-periodic never do)."""

    def __init__(self, env: dict[str, str]):
        (ROOT / "var").mkdir(exist_ok=True)
        self.log = (ROOT / "var" / "test-sweeper.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", SWEEP_LOOP],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.outcomes: collections.Counter = collections.Counter()

    def sweep(self, timeout: float = 30) -> str:
        """One sweep: "swept", or "failed: <error>" (the database may be down)."""
        self.process.stdin.write("sweep\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        outcome = self.process.stdout.readline().strip() if ready else "failed: no answer"
        self.outcomes[outcome or "failed: exited"] += 1
        return outcome

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.log.close()
