"""Sending limits (messaging/engine/rate_limits.py): the window rules with a controlled clock, on the
database store and, when REDIS_URL is set, on Redis; the daily quota making a real send wait and
resume by itself; and the system check that refuses settings that cannot work."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from datetime import UTC, timedelta

import pytest
import time_machine
from django.core import checks
from django.db import connections
from django.db.models import F
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from messaging import conf
from messaging.engine import delivery, maintenance, rate_limits
from messaging.engine.rate_limits import (
    DatabaseStore,
    Limiter,
    QuotaSpent,
    RedisStore,
    Rule,
    Store,
    rules_for,
)
from messaging.models import Message, MessageReceiver, RateLimitSlot
from tests.engine_helpers import SEND_ARGS, LanguageSubject

pytestmark = pytest.mark.django_db(transaction=True)

T0 = 1_800_000_000.0  # a fixed Unix time: each store gets `now` from the caller
HOLD = 10.0  # the longest one send may take


def store_params():
    params = [pytest.param("database", id="database")]
    if os.environ.get("REDIS_URL"):
        params.append(pytest.param("redis", id="redis"))
    return params


@pytest.fixture(params=store_params())
def store(request):
    # Redis starts empty for each test (conftest.empty_rate_limits).
    return DatabaseStore() if request.param == "database" else RedisStore(os.environ["REDIS_URL"])


def per_second(limit: int) -> list[Rule]:
    return [Rule("default:per_second", limit, 1, f"{limit} per second")]


def reserve(store, rules, token: str, at: float):
    return store.reserve(rules, token, T0 + at, HOLD)


def test_a_full_rule_with_no_result_counted_yet_is_asked_again_soon_not_never():
    # The slots that fill it are in flight, or their hold ran out as it was read: no end is
    # known (this was an infinite wait, and an OverflowError in the lane that slept on it).
    rule = per_second(1)[0]
    for in_flight in (False, True):
        assert rate_limits._wait(rule, T0, None, in_flight).seconds == rate_limits.POLL_SECONDS
    assert rate_limits._wait(rule, T0, T0 + 0.25, False).seconds == pytest.approx(0.25)


def test_a_window_admits_its_limit_then_waits_for_the_first_result(store):
    rules = per_second(3)
    assert [reserve(store, rules, f"t{i}", 0.0) for i in range(3)] == [None, None, None]
    wait = reserve(store, rules, "t3", 0.01)
    # All three are in flight: nobody knows when they free up, so look again soon.
    assert wait is not None and wait.seconds <= rate_limits.POLL_SECONDS
    for token in ("t0", "t1", "t2"):
        store.release(rules, token, T0 + 0.1)
    wait = reserve(store, rules, "t3", 0.2)
    # Freed one window after their results came (0.1 + 1), not after they were reserved.
    assert wait is not None and wait.seconds == pytest.approx(0.9, abs=1e-6)
    assert wait.rule == rules[0]
    assert reserve(store, rules, "t3", 1.0999) is not None
    assert reserve(store, rules, "t3", 1.1001) is None


def test_a_send_whose_worker_died_counts_until_its_longest_send_and_a_window_passed(store):
    rules = per_second(1)
    assert reserve(store, rules, "dead", 0.0) is None  # never released
    assert reserve(store, rules, "next", HOLD + 0.5) is not None
    assert reserve(store, rules, "next", HOLD + 1.001) is None


def test_every_rule_or_none_is_taken(store):
    tight = Rule("default:per_minute", 1, 60, "1 per minute")
    loose = Rule("default:per_second", 5, 1, "5 per second")
    assert reserve(store, [loose, tight], "a", 0.0) is None
    wait = reserve(store, [loose, tight], "b", 0.0)
    assert wait is not None and wait.rule == tight
    # The refused reservation took no slot in the loose rule: four more fit there.
    assert [reserve(store, [loose], f"c{i}", 0.0) for i in range(4)] == [None] * 4
    assert reserve(store, [loose], "c5", 0.0) is not None


def test_domains_are_limited_each_on_their_own(settings, store):
    settings.MESSAGING_RATE_LIMITS = {"default": {"per_second": 100, "per_domain": {"per_minute": 1}}}
    to_uio = rules_for("default", "ann@UIO.no")
    assert [rule.key for rule in to_uio] == ["default:per_second", "default@uio.no:per_minute"]
    assert reserve(store, to_uio, "a", 0.0) is None
    assert reserve(store, rules_for("default", "bob@uio.no"), "b", 0.0) is not None
    assert reserve(store, rules_for("default", "cid@ntnu.no"), "c", 0.0) is None


def test_a_long_wait_is_a_spent_quota_with_the_time_it_ends(settings):
    settings.MESSAGING_RATE_LIMITS = {"default": {"per_day": 2}}
    limiter = Limiter("default", HOLD, DatabaseStore())
    with time_machine.travel(T0, tick=False):
        for _ in range(2):
            limiter.acquire("a@uni.example", stop=lambda: False).release()
        with pytest.raises(QuotaSpent) as spent:
            limiter.acquire("a@uni.example", stop=lambda: False)
    assert spent.value.until.timestamp() == pytest.approx(T0 + 86400, abs=1)
    assert "2 per day (mailer default)" in str(spent.value)


def test_a_limiter_without_limits_never_touches_a_store(settings):
    settings.MESSAGING_RATE_LIMITS = {}

    class Email:
        rate_limit_mailer = "default"

    limiter = Limiter.for_channel(Email(), HOLD)
    assert limiter.store is None
    assert limiter.acquire("a@uni.example", stop=lambda: False) is not None
    assert limiter.acquire("a@uni.example", stop=lambda: True) is None


def test_the_daily_quota_makes_a_send_wait_and_it_resumes_by_itself(
    settings, smtp_mailer, django_user_model, client
):
    settings.MESSAGING_RATE_LIMITS = {"default": {"per_day": 3}}
    settings.MESSAGING_SMTP_CONNECTIONS = 2
    users = [django_user_model.objects.create(username=f"q{i}", email=f"q{i}@uni.example") for i in range(5)]
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    start = timezone.now()
    with time_machine.travel(start, tick=True):
        message.prepare_and_send(LanguageSubject(), **SEND_ARGS)
        message.refresh_from_db()
        assert len(smtp_mailer.received) == 3
        assert message.status == Message.Status.BLOCKED
        blocked = message.status_data["blocked"]
        assert blocked["quota"] is True
        assert "3 per day" in blocked["reason"]
        resumes = timezone.datetime.fromisoformat(blocked["next_attempt"])
        assert start + timedelta(days=1) <= resumes <= start + timedelta(days=1, minutes=2)
        not_sent = MessageReceiver.objects.filter(message=message, status=MessageReceiver.Status.NOT_SENT)
        assert not_sent.count() == 2 and not not_sent.exclude(sending_failed_count=0).exists()
        # The mailer's own limit holds the whole message; no receiver is set aside on its own.
        assert not not_sent.filter(lease_expires_datetime__isnull=False).exists()

        client.force_login(django_user_model.objects.create_superuser("boss", "boss@uni.example", "pw"))
        page = client.get(f"/messages/{message.pk}/").content.decode()
        assert 'id="quota-note"' in page and "3 per day" in page

    with time_machine.travel(resumes + timedelta(seconds=5), tick=True):
        maintenance.sweep()  # what the periodic sweeper (or the task queued for that time) does
    message.refresh_from_db()
    assert len(smtp_mailer.received) == 5
    assert message.status == Message.Status.SENT


# A recipient domain's spent quota ---------------------------------------------------------------

LIMITED, OTHER = "uio.example", "ntnu.example"
# In id order: the limited domain's quota (3 a minute) runs out at its fourth receiver, which
# shares its claims (3 receivers each here) with mail to the other domain.
DOMAIN_ORDER = [LIMITED] * 3 + [LIMITED, OTHER, OTHER] + [LIMITED, OTHER, LIMITED]


def deliveries_scheduled(message: Message) -> list:
    return [
        task
        for task in HUEY.scheduled()
        if task.name.endswith("deliver_message") and tuple(task.args) == (message.pk,)
    ]


def let_time_pass(seconds: float) -> None:
    """What `seconds` passing does to what is stored: every slot counted against the limits
    frees that much sooner, every lease ends that much sooner. (Leases are compared on the
    database's clock, which a test cannot move.)"""
    RateLimitSlot.objects.update(frees_at=F("frees_at") - seconds)
    if url := conf.rate_limit_redis_url():
        client = rate_limits._redis_store(url).client
        for key in client.scan_iter(f"{RedisStore.prefix}*"):
            client.zadd(
                key, {member: score - seconds for member, score in client.zrange(key, 0, -1, withscores=True)}
            )
    MessageReceiver.objects.exclude(lease_expires_datetime=None).update(
        lease_expires_datetime=F("lease_expires_datetime") - timedelta(seconds=seconds)
    )


def test_a_spent_domain_quota_defers_only_its_receivers_and_they_go_out_when_it_frees(
    settings, smtp_mailer, django_user_model, client, monkeypatch
):
    settings.MESSAGING_RATE_LIMITS = {"default": {"per_second": 100, "per_domain": {"per_minute": 3}}}
    settings.MESSAGING_SMTP_CONNECTIONS = 2
    monkeypatch.setattr(delivery, "LANE_CLAIM_SIZE", 3)  # the deferred receivers span two claims
    HUEY.flush()
    users = [
        django_user_model.objects.create(username=f"dom{i}", email=f"dom{i}@{domain}")
        for i, domain in enumerate(DOMAIN_ORDER)
    ]
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    receivers = MessageReceiver.objects.filter(message=message)
    waiting = receivers.filter(send_to__in=[u.email for u in users[3:] if u.email.endswith(LIMITED)])
    start = timezone.now()
    message.prepare_and_send(LanguageSubject(), **SEND_ARGS)

    message.refresh_from_db()
    sent_to = sorted(rcpt for mail in smtp_mailer.received for rcpt in mail.rcpt_tos)
    # Everything to the other domain went out at once, and the limited one's quota's worth.
    assert sent_to == sorted(u.email for u in users if u.email.endswith(OTHER) or u in users[:3])
    assert message.status == Message.Status.SENDING
    assert "blocked" not in message.status_data
    # The rest wait, unowned and unclaimable until the minute is over: not sent, not charged,
    # not flagged, not in flight.
    assert waiting.count() == 3
    resumes = {r.lease_expires_datetime for r in waiting}
    assert len(resumes) == 1  # the lanes were told the same time for each of their claims
    (resumes,) = resumes
    assert start + timedelta(seconds=59) <= resumes <= start + timedelta(seconds=62)
    for receiver in waiting:
        assert receiver.status == MessageReceiver.Status.NOT_SENT
        assert (receiver.claimed_by, receiver.in_flight_since) == ("", None)
        assert (receiver.sending_success_count, receiver.sending_failed_count) == (0, 0)
        assert "delivery_uncertain" not in receiver.status_data
    # One delivery is queued for when they are due; the sweeper leaves them alone till then.
    (task,) = deliveries_scheduled(message)
    assert task.eta == (resumes + timedelta(seconds=1)).astimezone(UTC).replace(tzinfo=None)
    assert not HUEY.ready_to_run(task)
    assert message.pk not in maintenance.messages_needing_delivery()
    client.force_login(django_user_model.objects.create_superuser("boss", "boss@uni.example", "pw"))
    page = client.get(f"/messages/{message.pk}/").content.decode()
    assert 'id="quota-note"' not in page  # the message is not shown as held up

    let_time_pass(62)
    assert message.pk in maintenance.messages_needing_delivery()  # the safety net
    HUEY.execute(task, timestamp=task.eta)  # what the consumer does when the task is due
    message.refresh_from_db()
    assert len(smtp_mailer.received) == len(users)
    assert message.status == Message.Status.SENT
    assert all(r.sending_success_count == 1 and r.sending_failed_count == 0 for r in receivers)


def test_receivers_waiting_for_their_domain_are_found_by_the_sweeper_should_the_task_be_lost(
    settings, smtp_mailer, django_user_model
):
    settings.MESSAGING_RATE_LIMITS = {"default": {"per_domain": {"per_hour": 1}}}
    users = [
        django_user_model.objects.create(username=f"sw{i}", email=f"sw{i}@{domain}")
        for i, domain in enumerate([LIMITED, LIMITED, OTHER])
    ]
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    message.prepare_and_send(LanguageSubject(), **SEND_ARGS)
    assert len(smtp_mailer.received) == 2
    HUEY.flush()  # the queued delivery is lost (the broker restarted empty)
    maintenance.sweep()  # nothing is due: the sweeper starts no delivery that would wait again
    assert len(smtp_mailer.received) == 2

    let_time_pass(3601)
    maintenance.sweep()
    message.refresh_from_db()
    assert len(smtp_mailer.received) == 3
    assert message.status == Message.Status.SENT


def counting(store) -> tuple[Store, list[str]]:
    """`store`, noting the thread of each round trip to it."""
    asked: list[str] = []

    class CountingStore(type(store)):
        def reserve(self, rules, token, now, hold):
            asked.append(threading.current_thread().name)
            return super().reserve(rules, token, now, hold)

    if isinstance(store, RedisStore):
        return CountingStore(os.environ["REDIS_URL"]), asked
    return CountingStore(), asked


def wait_for(predicate) -> None:
    deadline = time.monotonic() + 30
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_lane_waiting_for_one_domain_does_not_hold_up_another(settings, store):
    """One lane waits for a per-second slot for its domain (another send there is still in
    flight); meanwhile a second lane of the same process and mailer keeps getting slots for
    other domains. (Before, the waiting lane held the mailer's gate while it slept, and the
    other lane waited with it.)"""
    settings.MESSAGING_RATE_LIMITS = {"default": {"per_second": 100, "per_domain": {"per_second": 1}}}
    store, asked = counting(store)
    order: list[str] = []
    first = Limiter("default", HOLD, store).acquire(f"a@{LIMITED}", stop=lambda: False)
    # Released once the other lane has its slots, or after a while should it never get them
    # (then the test fails on the order, instead of hanging).
    fallback = threading.Timer(10, first.release)

    def waiting_lane():
        try:
            Limiter("default", HOLD, store).acquire(f"b@{LIMITED}", stop=lambda: False).release()
            order.append("waiting lane got its slot")
        finally:
            connections.close_all()

    def other_lane():
        try:
            for domain in ("ntnu.example", "uib.example", "uit.example"):
                Limiter("default", HOLD, store).acquire(f"c@{domain}", stop=lambda: False).release()
            order.append("other lane got 3 slots")
            first.release()
        finally:
            connections.close_all()

    waiter = threading.Thread(target=waiting_lane, name="waiting")
    waiter.start()
    wait_for(lambda: asked.count("waiting") >= 2)  # it was refused, and is waiting
    other = threading.Thread(target=other_lane)
    fallback.start()
    other.start()
    other.join(60)
    waiter.join(60)
    fallback.cancel()
    assert order == ["other lane got 3 slots", "waiting lane got its slot"]


def test_lanes_needing_a_full_rule_queue_behind_the_one_waiting_for_it(settings, store):
    """While a rule is full, one lane per process polls the store for it; the others that need
    it queue behind that lane instead of polling too. All get their slot in the end."""
    settings.MESSAGING_RATE_LIMITS = {"default": {"per_second": 1}}
    store, asked = counting(store)
    held = Limiter("default", HOLD, store).acquire("a@uni.example", stop=lambda: False)
    got = []

    def lane():
        try:
            slot = Limiter("default", HOLD, store).acquire("b@uni.example", stop=lambda: False)
            got.append(threading.current_thread().name)
            slot.release()
        finally:
            connections.close_all()

    lanes = [threading.Thread(target=lane, name=f"lane{n}") for n in range(4)]
    for thread in lanes:
        thread.start()
    wait_for(lambda: max(Counter(asked).values()) >= 2)  # one of them is polling
    time.sleep(0.5)  # it polls every POLL_SECONDS meanwhile, while the slot is in flight
    polls = Counter(asked)
    held.release()
    for thread in lanes:
        thread.join(60)
    assert sorted(got) == [f"lane{n}" for n in range(4)]
    print(f"store round trips per lane while one slot was in flight: {sorted(polls.values())}")
    # One lane polled; each of the others asked at most once (before it saw the turn taken).
    (_poller, most), *others = polls.most_common()
    assert most > 1
    assert all(count <= 1 for _name, count in others)


def test_deferring_gives_back_only_what_the_worker_owns(make_user):
    from messaging.engine import transitions

    message = Message.objects.create(status=Message.Status.SENDING)
    mine, theirs = (
        MessageReceiver.objects.create(message=message, user=make_user(), send_to=f"x{i}@{LIMITED}")
        for i in range(2)
    )
    until = timezone.now() + timedelta(minutes=1)
    MessageReceiver.objects.filter(pk=mine.pk).update(claimed_by="me", in_flight_since=timezone.now())
    MessageReceiver.objects.filter(pk=theirs.pk).update(claimed_by="them")
    assert transitions.defer([mine.pk, theirs.pk], "me", until) == 1
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.claimed_by, mine.lease_expires_datetime, mine.in_flight_since) == ("", until, None)
    assert mine.status == MessageReceiver.Status.NOT_SENT
    assert theirs.claimed_by == "them"
    assert not MessageReceiver.objects.filter(pk=mine.pk).claimable().exists()
    let_time_pass(61)
    assert MessageReceiver.objects.filter(pk=mine.pk).claimable().exists()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MESSAGING_SMTP_CONNECTIONS", 0, "MESSAGING_SMTP_CONNECTIONS must be a whole number of at least 1"),
        ("MESSAGING_SMTP_CONNECTIONS", "8", "MESSAGING_SMTP_CONNECTIONS must be a whole number"),
        (
            "MESSAGING_RATE_LIMITS",
            {"default": {"per_second": -1}},
            "MESSAGING_RATE_LIMITS['default']['per_second']",
        ),
        ("MESSAGING_RATE_LIMITS", {"default": {"per_second": 1.5}}, "at least 1 (is 1.5)"),
        (
            "MESSAGING_RATE_LIMITS",
            {"ses": {"per_second": 14}},
            "MESSAGING_RATE_LIMITS['ses']: unknown mailer 'ses'",
        ),
        ("MESSAGING_RATE_LIMITS", {"default": {"per_week": 5}}, "['per_week']: unknown window"),
        (
            "MESSAGING_RATE_LIMITS",
            {"default": {"per_domain": {"per_minute": 0}}},
            "['per_domain']['per_minute']",
        ),
        ("MESSAGING_RATE_LIMITS", {"default": 14}, "MESSAGING_RATE_LIMITS['default']: must be a dict"),
        ("MESSAGING_RATE_LIMITS", [14], "MESSAGING_RATE_LIMITS: must be a dict"),
    ],
)
def test_settings_that_cannot_work_fail_the_system_check_naming_the_setting(settings, name, value, expected):
    setattr(settings, name, value)
    errors = [e for e in checks.run_checks() if e.id in ("messaging.E003", "messaging.E004")]
    assert len(errors) == 1
    assert expected in errors[0].msg


def test_good_limits_pass_the_system_check(settings):
    settings.MESSAGING_RATE_LIMITS = {
        "default": {"per_second": 14, "per_day": 50000, "per_domain": {"per_minute": 100}}
    }
    settings.MESSAGING_SMTP_CONNECTIONS = 8
    assert not [e for e in checks.run_checks() if e.id.startswith("messaging.")]


def test_a_quota_wait_is_not_reported_to_the_sender_as_a_blocked_server():
    from messaging.operations import reporting

    quota = {"blocked": {"quota": True, "attempts": 0, "reason": "The sending limit …"}}
    server = {"blocked": {"attempts": 1, "reason": "535 Authentication failed"}}
    assert reporting.event_for(Message.Status.SENDING, Message.Status.BLOCKED, quota) is None
    assert reporting.event_for(Message.Status.SENDING, Message.Status.BLOCKED, server) == reporting.BLOCKED


def test_a_direct_send_keeps_to_the_limits_and_is_not_charged_when_they_are_spent(
    settings, smtp_mailer, django_user_model
):
    users = [django_user_model.objects.create(username=f"d{i}", email=f"d{i}@uni.example") for i in range(2)]
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    message.prepare_and_send(LanguageSubject(), **SEND_ARGS)  # no limit yet: both sent
    settings.MESSAGING_RATE_LIMITS = {"default": {"per_hour": 1}}
    first, second = MessageReceiver.objects.filter(message=message).order_by("pk")

    assert first.send().delivered  # receiver.send(), the public API
    result = second.send()
    second.refresh_from_db()
    assert not result.delivered and "1 per hour" in result.reason
    assert (second.sending_success_count, second.sending_failed_count, second.claimed_by) == (1, 0, "")
    assert len(smtp_mailer.received) == 3
