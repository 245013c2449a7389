"""System checks: settings that would break a guarantee refuse to start (run_huey, runserver)."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import getaddresses

from django.conf import settings
from django.core import checks, mail
from django.core.exceptions import ValidationError
from django.core.mail.handler import DEFAULT_MAILER_ALIAS
from django.core.validators import validate_email
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from messaging import conf
from messaging.engine import channels
from messaging.engine.rate_limits import WINDOWS
from messaging.feedback import webhook_security, webhooks


@checks.register()
def lease_covers_a_send(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A worker hands a receiver to the mail server only while its lease outlasts the longest
    one send can take; a lease shorter than two sends could never send anything."""
    lease = conf.lease_seconds()
    try:
        mail.mailers[DEFAULT_MAILER_ALIAS]
    except Exception as exc:  # a backend's own configuration error, e.g. anymail without its API key
        return [
            checks.Error(
                f"The email backend cannot start: {exc}",
                hint="EMAIL_URL=anymail:<esp> reads the provider's credentials from ANYMAIL_<ESP>_<NAME> "
                "variables, e.g. ANYMAIL_MAILGUN_API_KEY (see README, Configuration).",
                id="messaging.E005",
            )
        ]
    problems = []
    for message_type in channels.registered_types():
        needed = channels.get_channel(message_type).seconds_per_receiver()
        if lease < 2 * needed:
            problems.append(
                checks.Error(
                    f"MESSAGING_LEASE_SECONDS ({lease}) is too short for the {message_type!r} channel: one "
                    f"send may take up to {needed:.0f} s (twice the mail server timeout), and a lease "
                    f"must cover at least two.",
                    hint=f"Set MESSAGING_LEASE_SECONDS to {int(2 * needed) + 1} or more, or lower the mail "
                    f"server timeout (EMAIL_URL ...?timeout=N).",
                    id="messaging.E001",
                )
            )
    return problems + _every_few_minutes("MESSAGING_SWEEP_MINUTES", conf.sweep_minutes(), "messaging.E002")


def _every_few_minutes(name: str, minutes, check_id: str) -> list[checks.CheckMessage]:
    """A periodic task's interval: huey's crontab takes whole minutes of an hour (*/N)."""
    if isinstance(minutes, int) and 1 <= minutes <= 59:
        return []
    return [checks.Error(f"{name} must be between 1 and 59 (is {minutes!r}).", id=check_id)]


@checks.register()
def sending_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Connections and rate limits that cannot work refuse to start, naming the setting."""
    problems = []
    connections = conf.smtp_connections()
    if not _whole_at_least_one(connections):
        problems.append(
            checks.Error(
                f"MESSAGING_SMTP_CONNECTIONS must be a whole number of at least 1 (is {connections!r}).",
                id="messaging.E003",
            )
        )
    problems += [
        checks.Error(f"MESSAGING_RATE_LIMITS{where}: {problem}", id="messaging.E004")
        for where, problem in _rate_limit_problems(conf.rate_limits())
    ]
    problems += webhook_problems()
    bounce_address = conf.bounce_address()
    if bounce_address and (bounce_address.count("@") != 1 or "+" in bounce_address.partition("@")[0]):
        problems.append(
            checks.Error(
                f"MESSAGING_BOUNCE_ADDRESS must be a plain address without '+', like "
                f"bounces@bounces.example.edu (is {bounce_address!r}).",
                id="messaging.E006",
            )
        )
    return problems


def webhook_problems() -> list[checks.CheckMessage]:
    """Delivery webhooks that would accept a post from anyone refuse to start, in every settings
    module: they would let a script mark any student's address as bounced or complained."""
    mounted = conf.tracking_webhooks()
    if not mounted:
        return []
    problems = []
    known = webhooks.providers()
    if unknown := sorted(mounted - known):
        problems.append(
            checks.Error(
                f"MESSAGING_TRACKING_WEBHOOKS names providers without a tracking webhook: {unknown}.",
                hint=f"Use some of: {', '.join(sorted(known))}.",
                id="messaging.E009",
            )
        )
    if not webhook_security.webhook_secrets():
        problems.append(
            checks.Error(
                f"Delivery webhooks for {', '.join(sorted(mounted))} are on, but ANYMAIL_WEBHOOK_SECRET is "
                "not set (as user:password): anyone could post delivery events.",
                hint="Set ANYMAIL_WEBHOOK_SECRET=user:password and give the provider "
                "https://user:password@your.host/anymail/<esp>/tracking/ "
                "(or turn them off: MESSAGING_TRACKING_WEBHOOKS=none).",
                id="messaging.E009",
            )
        )
    for provider in sorted(mounted & webhook_security.SIGNING_KEYS.keys()):
        name = webhook_security.SIGNING_KEYS[provider]
        if not webhook_security.anymail_setting(name):
            problems.append(
                checks.Error(
                    f"The {provider} webhook is on, but ANYMAIL_{name} is not set: its signatures cannot "
                    "be verified.",
                    hint=f"Copy the webhook signing (verification) key from {provider}'s settings "
                    f"into ANYMAIL_{name}.",
                    id="messaging.E009",
                )
            )
    return problems


def _rate_limit_problems(limits) -> list[tuple[str, str]]:
    if not isinstance(limits, dict):
        return [("", f"must be a dict of mailer name to limits (is {limits!r}).")]
    problems = []
    for mailer, rules in limits.items():
        where = f"[{mailer!r}]"
        if mailer not in mail.mailers and mailer != DEFAULT_MAILER_ALIAS:
            problems.append(
                (where, f"unknown mailer {mailer!r}; MAILERS has {', '.join(mail.mailers) or 'none'}.")
            )
        if not isinstance(rules, dict):
            problems.append((where, f"must be a dict such as {{'per_second': 14}} (is {rules!r})."))
            continue
        per_domain = rules.get("per_domain", {})
        if not isinstance(per_domain, dict):
            problems.append((f"{where}['per_domain']", "must be a dict such as {'per_minute': 100}."))
            per_domain = {}
        problems += _window_problems(where, {k: v for k, v in rules.items() if k != "per_domain"})
        problems += _window_problems(f"{where}['per_domain']", per_domain)
    return problems


def _window_problems(scope: str, entries: dict) -> list[tuple[str, str]]:
    problems = []
    for name, limit in entries.items():
        if name not in WINDOWS:
            problems.append((f"{scope}[{name!r}]", f"unknown window; use {', '.join(WINDOWS)}."))
        elif not _whole_at_least_one(limit):
            problems.append((f"{scope}[{name!r}]", f"must be a whole number of at least 1 (is {limit!r})."))
    return problems


def _whole_at_least_one(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@checks.register()
def allowed_senders(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A sender staff may choose must read as one address, or every email from it is broken."""
    senders = conf.get("MESSAGING_ALLOWED_SENDERS")
    if not isinstance(senders, list | tuple):
        return [
            checks.Error(
                f"MESSAGING_ALLOWED_SENDERS must be a list of senders (is {senders!r}).", id="messaging.E007"
            )
        ]
    return [
        checks.Error(
            f"MESSAGING_ALLOWED_SENDERS has {sender!r}, which is not one address.",
            hint='Write "Name <address>" or an address; quote a name holding a comma: '
            '"Exams, Science" <exams@example.edu>.',
            id="messaging.E007",
        )
        for sender in senders
        if not _one_address(sender)
    ]


def _one_address(sender) -> bool:
    if not isinstance(sender, str) or "\n" in sender or "\r" in sender:
        return False
    addresses = getaddresses([sender])
    if len(addresses) != 1:
        return False
    try:
        validate_email(addresses[0][1])
    except ValidationError:
        return False
    return True


@checks.register()
def digest_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Digest times that cannot be scheduled refuse to start, naming the setting."""
    problems = []
    try:
        hour, minute = conf.digest_time()
        valid_time = 0 <= hour <= 23 and 0 <= minute <= 59
    except (AttributeError, ValueError):
        valid_time = False
    if not valid_time:
        problems.append(
            checks.Error(
                "MESSAGING_DIGEST_TIME must be a local time as HH:MM "
                f"(is {conf.get('MESSAGING_DIGEST_TIME')!r}).",
                id="messaging.E008",
            )
        )
    if conf.digest_weekday() not in range(7):
        problems.append(
            checks.Error(
                f"MESSAGING_DIGEST_WEEKDAY must be 0 (Monday) to 6 (Sunday) (is {conf.digest_weekday()!r}).",
                id="messaging.E008",
            )
        )
    return problems + _every_few_minutes(
        "MESSAGING_DIGEST_POLL_MINUTES", conf.digest_poll_minutes(), "messaging.E008"
    )


@checks.register()
def connection_budget_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The settings that bound and describe the database connections must be counts."""
    counts = (
        ("MESSAGING_DB_CONNECTIONS_PER_WORKER", conf.db_connections_per_worker(), 1),
        ("MESSAGING_WORKER_HOSTS", conf.worker_hosts(), 1),
        ("MESSAGING_WEB_DB_CONNECTIONS", conf.web_db_connections(), 0),
    )
    return [
        checks.Error(
            f"{name} must be a whole number of at least {least} (is {value!r}).", id="messaging.E010"
        )
        for name, value, least in counts
        if not _whole_at_least(value, least)
    ]


def _whole_at_least(value, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


@dataclass(frozen=True)
class ConnectionBudget:
    """The database connections the deployment may hold at once: every worker on every host
    delivering (a large send keeps them all busy), each consumer's heartbeat, and the rest."""

    hosts: int
    workers: int
    lanes: int
    web: int

    @classmethod
    def from_settings(cls) -> ConnectionBudget | None:
        """None while a setting is invalid (connection_budget_settings and E003 say which)."""
        counts = (
            conf.worker_hosts(),
            huey_workers(),
            conf.smtp_connections(),
            conf.db_connections_per_worker(),
        )
        if not all(_whole_at_least(count, 1) for count in counts):
            return None
        if not _whole_at_least(conf.web_db_connections(), 0):
            return None
        return cls(conf.worker_hosts(), huey_workers(), conf.delivery_lanes(), conf.web_db_connections())

    @property
    def per_worker(self) -> int:
        # One per lane besides the worker's own (messaging.engine.delivery); a single lane
        # runs on the worker's own connection.
        return self.lanes + 1 if self.lanes > 1 else 1

    @property
    def total(self) -> int:
        # + 1 per host: the consumer's heartbeat thread (messaging.operations.heartbeats).
        return self.hosts * (self.workers * self.per_worker + 1) + self.web

    def formula(self) -> str:
        per_worker = f"({self.lanes} lanes + 1)" if self.lanes > 1 else "1 (one lane)"
        return (
            f"{self.hosts} worker hosts x ({self.workers} huey workers x {per_worker} + 1 heartbeat) "
            f"+ {self.web} web = {self.total}"
        )

    def largest_fitting_per_worker(self, available: int) -> int:
        """The largest MESSAGING_DB_CONNECTIONS_PER_WORKER within `available` (0: none fits)."""
        return max(0, (available - self.web - self.hosts) // (self.hosts * self.workers))


def huey_workers() -> int:
    """Workers per consumer, as settings.HUEY gives them (huey's default is one)."""
    huey = getattr(settings, "HUEY", None)
    consumer = huey.get("consumer", {}) if isinstance(huey, dict) else {}
    return consumer.get("workers", 1)


@checks.register(checks.Tags.database)
def database_connection_budget(app_configs=None, databases=None, **kwargs) -> list[checks.CheckMessage]:
    """Warn when the deployment may open more connections than PostgreSQL accepts: a worker
    that cannot connect fails its delivery task mid-send, and so may the web site. A database
    check, as it reads the server's live max_connections: Django runs it at `migrate` and with
    `manage.py check --database default`, never at commands that need no database."""
    if DEFAULT_DB_ALIAS not in (databases or ()):
        return []
    budget = ConnectionBudget.from_settings()
    if budget is None:
        return []
    return connection_budget_problems(connections[DEFAULT_DB_ALIAS], budget)


def connection_budget_problems(database, budget: ConnectionBudget) -> list[checks.CheckMessage]:
    if database.vendor != "postgresql":
        return []  # SQLite has no connection limit
    try:
        max_connections, reserved = postgresql_connection_limits(database)
    except DatabaseError as exc:
        # Said, not raised: `check --database` must report the rest, and an unreachable
        # database is not a reason to call the budget fine either.
        return [
            checks.Warning(
                f"Could not read PostgreSQL's max_connections to check the database connections "
                f"workers may open: {' '.join(str(exc).split())}",
                hint="Run `manage.py check --database default` again once the database is reachable.",
                id="messaging.W002",
            )
        ]
    available = max_connections - reserved
    if budget.total <= available:
        return []
    fitting = budget.largest_fitting_per_worker(available)
    advice = (
        f"Set MESSAGING_DB_CONNECTIONS_PER_WORKER to {fitting} or less (now "
        f"{conf.db_connections_per_worker()}: the worker's own connection and one per lane)"
        if fitting >= 1
        else "Not even one connection per worker fits: run fewer huey workers (HUEY_WORKERS)"
    )
    return [
        checks.Warning(
            f"Workers may open more database connections than PostgreSQL accepts: {budget.formula()}, "
            f"but it accepts {available} (max_connections {max_connections} - {reserved} reserved).",
            hint=f"{advice}, or raise max_connections on the server. MESSAGING_WORKER_HOSTS and "
            "MESSAGING_WEB_DB_CONNECTIONS describe the deployment (see README, Running at scale).",
            id="messaging.W001",
        )
    ]


def postgresql_connection_limits(database) -> tuple[int, int]:
    """(max_connections, connections reserved for superusers and, from PostgreSQL 16, for
    pg_use_reserved_connections), read from the running server."""
    with database.cursor() as cursor:
        cursor.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('max_connections', 'superuser_reserved_connections', 'reserved_connections')"
        )
        limits = {name: int(setting) for name, setting in cursor.fetchall()}
    reserved = limits.get("superuser_reserved_connections", 0) + limits.get("reserved_connections", 0)
    return limits["max_connections"], reserved
