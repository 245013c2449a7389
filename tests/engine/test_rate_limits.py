"""Sending limits (messaging/engine/rate_limits.py): the window rules with a controlled clock, on the
database store and, when REDIS_URL is set, on Redis; the daily quota making a real send wait and
resume by itself; and the system check that refuses settings that cannot work."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import time_machine
from django.core import checks
from django.utils import timezone

from messaging.engine import maintenance, rate_limits
from messaging.engine.rate_limits import DatabaseStore, Limiter, QuotaSpent, RedisStore, Rule, rules_for
from messaging.models import Message, MessageReceiver
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

        client.force_login(django_user_model.objects.create_superuser("boss", "boss@uni.example", "pw"))
        page = client.get(f"/messages/{message.pk}/").content.decode()
        assert 'id="quota-note"' in page and "3 per day" in page

    with time_machine.travel(resumes + timedelta(seconds=5), tick=True):
        maintenance.sweep()  # what the periodic sweeper (or the task queued for that time) does
    message.refresh_from_db()
    assert len(smtp_mailer.received) == 5
    assert message.status == Message.Status.SENT


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
