"""Sending limits per mailer (MESSAGING_RATE_LIMITS) that hold across every consumer and host.

A rule is a number of sends per window (second, minute, hour, day), for a mailer as a whole or
for each recipient domain. Before a send, a worker reserves a slot in every rule that applies;
the slot stays counted from then until one window after the send's result came back. So in any
window of that length, wherever the server counts a send between our reservation and its
answer, it sees at most `limit` sends: of any two sends it counts in one window, the later
reserved one found the earlier one still counted. (An in-flight slot whose worker died counts
until the longest a send may take, plus the window, has passed.)

The slots are shared state: Redis when MESSAGING_RATE_LIMIT_REDIS_URL is set (the project
sets it from REDIS_URL), else the database. Times are Unix times from each host's clock, which
must agree (NTP) for limits to hold across hosts (leases do not need it: they use the
database's clock). That guarantee rests on the store's atomic
reservation alone; what follows only saves the store work and the lanes time.

Within a process, one lane per mailer asks the store at a time (`_gate`), for as long as one
round trip takes. A lane told to wait for a full rule sleeps without the gate, holding that
rule's turn (`_turns`): lanes that need the same rule queue behind it without asking the store,
so one lane per rule polls while it is full, and lanes whose receivers need only other rules
(another recipient domain) keep getting slots meanwhile. A wait longer than LONGEST_SLEEP is
QuotaSpent: for a per-domain rule only the receivers to that domain wait (delivery defers them
until it frees); a mailer-wide rule makes the whole message wait.
"""

from __future__ import annotations

import abc
import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from django.db import connection, transaction
from django.utils.formats import date_format
from django.utils.timezone import localtime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from messaging import conf
from messaging.engine.outages import persistently

WINDOWS = {"per_second": 1, "per_minute": 60, "per_hour": 3600, "per_day": 86400}
WINDOW_NAMES = {
    "per_second": gettext_lazy("per second"),
    "per_minute": gettext_lazy("per minute"),
    "per_hour": gettext_lazy("per hour"),
    "per_day": gettext_lazy("per day"),
}
# A worker sleeps through a shorter wait; a longer one makes the message wait (QuotaSpent).
LONGEST_SLEEP = 30.0
# While slots are in flight nobody knows when they free up: look again this soon.
POLL_SECONDS = 0.02
# How often a lane that sleeps or queues for a slot checks whether it should stop instead.
STOP_CHECK_SECONDS = 0.25


@dataclass(frozen=True)
class Rule:
    key: str
    limit: int
    window: float
    label: str  # for people: "14 per second (mailer default)"
    domain: str = ""  # a per-domain rule's recipient domain; "" for the mailer as a whole

    def limits(self, address: str) -> bool:
        """Whether a send to `address` takes a slot in this rule (its mailer's, assumed)."""
        return not self.domain or domain_of(address) == self.domain


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _rule(mailer: str, name: str, limit: int, domain: str = "") -> Rule:
    values = {"limit": limit, "window": WINDOW_NAMES[name], "mailer": mailer, "domain": domain}
    if domain:
        label = _("%(limit)s %(window)s to %(domain)s (mailer %(mailer)s)") % values
    else:
        label = _("%(limit)s %(window)s (mailer %(mailer)s)") % values
    key = f"{mailer}@{domain}:{name}" if domain else f"{mailer}:{name}"
    return Rule(key, limit, WINDOWS[name], label, domain)


def rules_for(mailer: str, address: str) -> list[Rule]:
    config = conf.rate_limits().get(mailer) or {}
    rules = [_rule(mailer, name, limit) for name, limit in config.items() if name in WINDOWS]
    domain = domain_of(address)
    if domain:
        per_domain = config.get("per_domain") or {}
        rules += [_rule(mailer, name, limit, domain) for name, limit in per_domain.items() if name in WINDOWS]
    return rules


class QuotaSpent(Exception):
    """A limit is used up for longer than a worker should sleep: until `until`, for every send
    `rule` limits (`rule.domain`: only those to that domain)."""

    def __init__(self, until: datetime, rule: Rule):
        self.until, self.rule = until, rule
        super().__init__(
            _("The sending limit of %(rule)s is used up until %(time)s.")
            % {"rule": rule.label, "time": date_format(localtime(until), "DATETIME_FORMAT")}
        )


@dataclass
class Wait:
    seconds: float
    rule: Rule


class Slot:
    """A reserved send; release() once its result came back (or it was not sent)."""

    def __init__(self, store: Store | None = None, rules: list[Rule] | None = None, token: str = ""):
        self.store, self.rules, self.token = store, rules or [], token

    def release(self) -> None:
        if self.store is not None:
            store, self.store = self.store, None
            persistently(lambda: store.release(self.rules, self.token, time.time()), "Releasing a slot")


UNLIMITED = Slot()  # releasing it does nothing


class Limiter:
    def __init__(self, mailer: str, hold_seconds: float, store: Store | None = None):
        self.mailer, self.hold = mailer, hold_seconds
        self.store = store

    @classmethod
    def for_channel(cls, channel, hold_seconds: float) -> Limiter:
        """The limiter for a channel's mailer; one that never waits if it has no limits."""
        mailer = channel.rate_limit_mailer
        store = default_store() if mailer and conf.rate_limits().get(mailer) else None
        return cls(mailer, hold_seconds, store)

    def acquire(self, address: str, stop: Callable[[], bool]) -> Slot | None:
        """A slot for one send to `address`, sleeping through short waits; None if `stop()`
        became true meanwhile. Raises QuotaSpent when the wait is longer than LONGEST_SLEEP."""
        if stop():
            return None
        if self.store is None:
            return UNLIMITED
        turn = _Turn(stop)
        try:
            return self._reserve(rules_for(self.mailer, address), turn, stop)
        finally:
            turn.give_back()

    def _ask(self, rules: list[Rule]) -> tuple[str, float, Wait | None]:
        """One reservation under a fresh token (one asked again after a lost answer may leave
        an extra slot counted until it expires: fewer sends, never more)."""
        token, now = uuid.uuid4().hex, time.time()
        with _gate(self.mailer):  # the round trip only, never a sleep
            return token, now, self.store.reserve(rules, token, now, self.hold)

    def _reserve(self, rules: list[Rule], turn: _Turn, stop: Callable[[], bool]) -> Slot | None:
        # A lane already waits for one of these rules: queue behind it rather than ask too.
        busy = _waited_for(rules)
        if busy is not None and not turn.take(busy):
            return None
        while not stop():
            token, now, wait = persistently(lambda: self._ask(rules), "Reserving a sending slot")
            if wait is None:
                return Slot(self.store, rules, token)
            if wait.seconds > LONGEST_SLEEP:
                # Whole seconds: every lane told of the same spent rule names the same time.
                until = datetime.fromtimestamp(math.ceil(now + wait.seconds), tz=UTC)
                raise QuotaSpent(until, wait.rule)
            if not turn.take(wait.rule.key):
                return None
            # A little jitter, so that workers (processes, hosts) waiting for the same slot do
            # not all ask at once.
            if not _sleep(wait.seconds + random.uniform(0, POLL_SECONDS), stop):
                return None
        return None


_gates: dict[str, threading.Lock] = {}
_turns: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


def _gate(mailer: str) -> threading.Lock:
    """Held while a lane of this process asks the store for a slot of `mailer`'s rules."""
    with _locks_lock:
        return _gates.setdefault(mailer, threading.Lock())


def _turn_lock(rule_key: str) -> threading.Lock:
    """Held by the lane of this process that waits for a slot in a full rule."""
    with _locks_lock:
        return _turns.setdefault(rule_key, threading.Lock())


def _waited_for(rules: list[Rule]) -> str | None:
    """The key of a rule some lane of this process holds the turn of, if any."""
    with _locks_lock:
        return next((rule.key for rule in rules if (lock := _turns.get(rule.key)) and lock.locked()), None)


class _Turn:
    """The one rule a lane holds the turn of while it waits (at most one at a time, and the gate
    is never asked for while taking one, so lanes cannot deadlock)."""

    def __init__(self, stop: Callable[[], bool]):
        self.stop = stop
        self.key, self.lock = "", None

    def take(self, rule_key: str) -> bool:
        """Hold `rule_key`'s turn, queueing behind its holder; False if `stop()` came first."""
        if rule_key == self.key:
            return True
        self.give_back()
        lock = _turn_lock(rule_key)
        while not lock.acquire(timeout=STOP_CHECK_SECONDS):
            if self.stop():
                return False
        self.key, self.lock = rule_key, lock
        return True

    def give_back(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.key, self.lock = "", None


def _sleep(seconds: float, stop: Callable[[], bool]) -> bool:
    """Sleep, or less if `stop()` became true (then False)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop():
            return False
        time.sleep(min(left, STOP_CHECK_SECONDS))
    return True


class Store(abc.ABC):
    """Where the slots live, shared by every consumer. `now` is the caller's Unix time."""

    @abc.abstractmethod
    def reserve(self, rules: list[Rule], token: str, now: float, hold: float) -> Wait | None:
        """Take a slot in every rule, or none: then how long until one may be free."""

    @abc.abstractmethod
    def release(self, rules: list[Rule], token: str, now: float) -> None:
        """The send's result came: its slots count for one more window from now."""


def _wait(rule: Rule, now: float, earliest_done: float | None, in_flight: bool) -> Wait:
    # Full with nothing counted done yet (the slots that fill it are in flight, or their hold
    # ran out as this was read): ask again soon, never "wait forever".
    seconds = POLL_SECONDS if earliest_done is None else earliest_done - now
    if in_flight:
        seconds = min(seconds, POLL_SECONDS)
    return Wait(max(seconds, 0.001), rule)


class DatabaseStore(Store):
    """Slots as rows (RateLimitSlot). Writers are serialised per rule: PostgreSQL by an
    advisory lock on the rule's key, SQLite by its IMMEDIATE transactions."""

    def reserve(self, rules: list[Rule], token: str, now: float, hold: float) -> Wait | None:
        from messaging.models import RateLimitSlot

        with transaction.atomic():
            self._lock(rules)
            for rule in rules:
                counted = RateLimitSlot.objects.filter(key=rule.key, frees_at__gt=now)
                if counted.count() >= rule.limit:
                    earliest = counted.filter(in_flight=False).order_by("frees_at").first()
                    in_flight = counted.filter(in_flight=True).exists()
                    return _wait(rule, now, earliest and earliest.frees_at, in_flight)
            keys = [rule.key for rule in rules]
            RateLimitSlot.objects.filter(key__in=keys, frees_at__lte=now).delete()
            RateLimitSlot.objects.bulk_create(
                RateLimitSlot(key=rule.key, token=token, frees_at=now + hold + rule.window) for rule in rules
            )
        return None

    def release(self, rules: list[Rule], token: str, now: float) -> None:
        from messaging.models import RateLimitSlot

        with transaction.atomic():
            for rule in rules:
                RateLimitSlot.objects.filter(key=rule.key, token=token, in_flight=True).update(
                    frees_at=now + rule.window, in_flight=False
                )

    def _lock(self, rules: list[Rule]) -> None:
        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            for key in sorted(rule.key for rule in rules):  # one order: no deadlock
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"messaging-rate:{key}"])


# Per rule two sorted sets (token → the Unix time its slot frees): sends in flight, sends done.
# KEYS: in_flight_1, done_1, in_flight_2, done_2, ...  ARGV: now, token, hold, poll, then
# limit_i, window_i per rule. Returns nil when reserved, else "<seconds to wait> <rule index>".
_RESERVE = """
local now, token, hold, poll = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 1, #KEYS / 2 do
  local flying, done = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('ZREMRANGEBYSCORE', flying, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', done, '-inf', now)
  local in_flight = redis.call('ZCARD', flying)
  if in_flight + redis.call('ZCARD', done) >= tonumber(ARGV[3 + 2 * i]) then
    local wait = 1e12
    if in_flight > 0 then wait = poll end
    local first = redis.call('ZRANGE', done, 0, 0, 'WITHSCORES')
    if first[2] then wait = math.min(wait, tonumber(first[2]) - now) end
    return tostring(wait) .. ' ' .. i
  end
end
for i = 1, #KEYS / 2 do
  local window = tonumber(ARGV[4 + 2 * i])
  redis.call('ZADD', KEYS[2 * i - 1], now + hold + window, token)
  redis.call('EXPIRE', KEYS[2 * i - 1], math.ceil(hold + window) + 1)
end
return false
"""
_RELEASE = """
local now, token = tonumber(ARGV[1]), ARGV[2]
for i = 1, #KEYS / 2 do
  if redis.call('ZREM', KEYS[2 * i - 1], token) == 1 then
    local window = tonumber(ARGV[2 + i])
    redis.call('ZADD', KEYS[2 * i], now + window, token)
    redis.call('EXPIRE', KEYS[2 * i], math.ceil(window) + 1)
  end
end
return false
"""


class RedisStore(Store):
    """Slots in Redis sorted sets; each reservation is one Lua script, so it is atomic across
    every consumer and host."""

    prefix = "messaging:rate:"

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url)
        self._reserve = self.client.register_script(_RESERVE)
        self._release = self.client.register_script(_RELEASE)

    def _keys(self, rules: list[Rule]) -> list[str]:
        return [f"{self.prefix}{rule.key}:{part}" for rule in rules for part in ("flying", "done")]

    def reserve(self, rules: list[Rule], token: str, now: float, hold: float) -> Wait | None:
        limits = [value for rule in rules for value in (rule.limit, rule.window)]
        answer = self._reserve(keys=self._keys(rules), args=[now, token, hold, POLL_SECONDS, *limits])
        if answer is None:
            return None
        seconds, index = answer.decode().split()
        return Wait(max(float(seconds), 0.001), rules[int(index) - 1])

    def release(self, rules: list[Rule], token: str, now: float) -> None:
        self._release(keys=self._keys(rules), args=[now, token, *(rule.window for rule in rules)])


@lru_cache(maxsize=4)
def _redis_store(url: str) -> RedisStore:
    return RedisStore(url)


def default_store() -> Store:
    url = conf.rate_limit_redis_url()
    return _redis_store(url) if url else DatabaseStore()
