"""Digest assemblers divide the work and never hold a write lock while they render.

Before: `assemble_due` locked the due held receivers of the first 500 users and rendered their
digests inside one transaction. A second assembler picked the same first 500 users and found them
locked (PostgreSQL: nothing to do, so it stopped; SQLite: it waited for the first one's write
lock, as did every other writer). Now an assembler claims its users in one short transaction
(PostgreSQL: skipping users another is claiming; SQLite: one claim after another), renders
outside any transaction and writes in small committed steps.

Each test runs on SQLite and on PostgreSQL (DATABASE_URL), with threads that have their own
database connections.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict

import pytest
from django.db import DatabaseError, connection

from messaging.engine import maintenance
from messaging.models import Message, MessageReceiver
from messaging.preferences import digests
from tests.engine_helpers import short_lock_timeout
from tests.preferences.test_digest_processes import after_every_due_time, daily_users, hold_items

pytestmark = pytest.mark.django_db(transaction=True)

HELD = MessageReceiver.Status.HELD


def digest_receivers() -> list[MessageReceiver]:
    return list(MessageReceiver.objects.filter(message__context_type=Message.ContextType.DIGEST))


def held_items() -> list[MessageReceiver]:
    return list(MessageReceiver.objects.filter(message__context_type=Message.ContextType.COMMENT))


def assert_one_digest_per_user_with_every_item_once(users) -> None:
    digests_of = Counter(r.user_id for r in digest_receivers())
    assert digests_of == Counter({u.pk: 1 for u in users}), "a user got no digest, or two"
    by_pk = {r.pk: r for r in digest_receivers()}
    for item in held_items():
        digest = by_pk.get(item.digest_id)
        assert digest is not None, "an item was left out"
        assert digest.user_id == item.user_id
        assert item.subject in digest.message_content_plain  # rendered, not an empty claim
    for digest in by_pk.values():
        items = [i for i in held_items() if i.digest_id == digest.pk]
        assert digest.subject.startswith(f"Your daily digest: {len(items)} message")


def run_assemblers(count: int, now, before_render=None) -> tuple[list[list[Message]], list[BaseException]]:
    """`count` assemblers at once (threads, their own connections), each running send_due."""
    made: list[list[Message]] = [[] for _ in range(count)]
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def assemble(index: int) -> None:
        try:
            start.wait(timeout=30)
            made[index] = digests.send_due(now)
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=assemble, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return made, errors


def test_two_assemblers_divide_the_users_and_each_user_gets_one_digest(
    huey_queue, django_user_model, monkeypatch, capsys
):
    """Each assembler, having claimed its first users, waits until the other has claimed some
    too: before, the second could not claim anything while the first held its users."""
    monkeypatch.setattr(digests, "USERS_PER_DIGEST_MESSAGE", 4)
    users = daily_users(django_user_model, 24, "divide")
    hold_items(users, 2)
    both_claimed = threading.Barrier(2)
    waited: set[int] = set()
    render = digests.rendered_receivers

    def render_once_both_claimed(message):
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            both_claimed.wait(timeout=30)
        return render(message)

    monkeypatch.setattr(digests, "rendered_receivers", render_once_both_claimed)
    made, errors = run_assemblers(2, after_every_due_time())

    with capsys.disabled():
        print(
            f"\ndigest assemblers ({connection.vendor}): users=24 per_digest=4 "
            f"digests_per_assembler={[len(m) for m in made]} "
            f"users_per_assembler={[sum(d.receivers.count() for d in m) for m in made]}"
        )
    assert not errors, errors
    assert all(made), "an assembler made no digest: they competed instead of dividing the users"
    assert not {d.pk for d in made[0]} & {d.pk for d in made[1]}
    assert_one_digest_per_user_with_every_item_once(users)
    made_ids = {d.pk for m in made for d in m}
    assert {r.message_id for r in digest_receivers()} == made_ids
    assert set(Message.objects.filter(pk__in=made_ids).values_list("status", flat=True)) == {
        Message.Status.SENDING
    }


def test_four_assemblers_at_once_make_one_digest_per_user(huey_queue, django_user_model, monkeypatch):
    monkeypatch.setattr(digests, "USERS_PER_DIGEST_MESSAGE", 3)
    users = daily_users(django_user_model, 40, "four")
    hold_items(users, 3)
    made, errors = run_assemblers(4, after_every_due_time())
    assert not errors, errors
    assert_one_digest_per_user_with_every_item_once(users)
    assert sum(len(m) for m in made) == len({r.message_id for r in digest_receivers()})


# --- No writer waits while digests render -------------------------------------------------------------

WRITER_LOCK_TIMEOUT = 1.0
SLOW_USERS = 60
SLOW_RENDER = 0.05  # seconds per user's digest: 3 s in all, three writer timeouts


def test_another_writer_never_waits_while_digests_render(huey_queue, django_user_model, monkeypatch, capsys):
    users = daily_users(django_user_model, SLOW_USERS, "slowdigest")
    hold_items(users, 1)
    receiver = digests.DigestComposer.receiver

    def slow_receiver(self, *args, **kwargs):
        time.sleep(SLOW_RENDER)
        return receiver(self, *args, **kwargs)

    monkeypatch.setattr(digests.DigestComposer, "receiver", slow_receiver)
    draft = Message.objects.create(virtual_message_receivers={"user_ids": [users[0].pk]})
    assert SLOW_USERS * SLOW_RENDER > 2 * WRITER_LOCK_TIMEOUT  # longer than the timeout, by construction
    stop, waits, failures, mid_assembly = threading.Event(), [], [], []

    def write() -> None:
        try:
            short_lock_timeout(WRITER_LOCK_TIMEOUT)
            while not stop.is_set():
                started = time.monotonic()
                try:
                    Message.objects.filter(pk=draft.pk).update(metadata={"saved": len(waits)})
                    # A held item of the digest being assembled (a delivery outcome arriving, say).
                    MessageReceiver.objects.filter(user=users[0]).update(outcome_detail=f"w{len(waits)}")
                except DatabaseError as exc:
                    failures.append(str(exc))
                waits.append(time.monotonic() - started)
                if Message.objects.filter(
                    context_type=Message.ContextType.DIGEST, status=Message.Status.PREPARING
                ).exists():
                    mid_assembly.append(True)
                time.sleep(0.02)
        finally:
            connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    started = time.monotonic()
    try:
        made = digests.send_due(after_every_due_time())
    finally:
        stop.set()
        writer.join(30)
    with capsys.disabled():
        print(
            f"\ndigest assembly ({connection.vendor}): users={SLOW_USERS} "
            f"assembly={time.monotonic() - started:.1f}s writer_timeout={WRITER_LOCK_TIMEOUT}s "
            f"writes={len(waits)} failed={len(failures)} longest_wait={max(waits, default=0) * 1000:.0f}ms"
        )
    assert failures == [], failures[:3]
    assert mid_assembly, "the writer never wrote while a digest was being assembled"
    assert len(made) == 1
    assert_one_digest_per_user_with_every_item_once(users)


# --- An assembler that dies ----------------------------------------------------------------------------


class Crash(BaseException):
    """Not an Exception: nothing catches it, as nothing catches a SIGKILL."""


def age_lease(message: Message) -> None:
    data = Message.objects.get(pk=message.pk).status_data
    Message.objects.filter(pk=message.pk).update(
        status_data={**data, "preparing_until": "2000-01-01T00:00:00+00:00"}
    )


def test_an_assembler_that_dies_mid_render_loses_nothing_and_sends_nothing_twice(
    huey_queue, django_user_model, monkeypatch
):
    users = daily_users(django_user_model, 6, "digestdeath")
    hold_items(users, 2)
    now = after_every_due_time()
    render = digests.rendered_receivers

    def die(message):
        raise Crash

    monkeypatch.setattr(digests, "rendered_receivers", die)
    with pytest.raises(Crash):
        digests.send_due(now)
    (dead,) = Message.objects.filter(context_type=Message.ContextType.DIGEST)
    assert dead.status == Message.Status.PREPARING  # claimed, never sendable
    assert all(item.digest_id is not None for item in held_items())  # nobody else takes them

    monkeypatch.setattr(digests, "rendered_receivers", render)
    assert digests.send_due(now) == []  # its claim holds while its lease runs
    maintenance.sweep()  # the lease has not run out: left alone
    assert Message.objects.filter(pk=dead.pk).exists()

    age_lease(dead)
    assert maintenance.recover_dead_preparation(dead.pk) is None
    assert not Message.objects.filter(pk=dead.pk).exists()  # discarded, unsent
    assert all(item.digest_id is None and item.status == HELD for item in held_items())
    assert len(digests.send_due(now)) == 1
    assert_one_digest_per_user_with_every_item_once(users)


def test_an_assembler_that_raises_gives_its_users_back_at_once(huey_queue, django_user_model, monkeypatch):
    users = daily_users(django_user_model, 5, "digestraise")
    hold_items(users, 1)
    now = after_every_due_time()
    render = digests.rendered_receivers

    def broken(message):
        raise RuntimeError("the digest template is broken")

    monkeypatch.setattr(digests, "rendered_receivers", broken)
    with pytest.raises(RuntimeError, match="template is broken"):
        digests.send_due(now)
    assert not Message.objects.filter(context_type=Message.ContextType.DIGEST).exists()
    assert all(item.digest_id is None and item.status == HELD for item in held_items())

    monkeypatch.setattr(digests, "rendered_receivers", render)
    assert len(digests.send_due(now)) == 1
    assert_one_digest_per_user_with_every_item_once(users)


def test_a_claim_taken_over_while_its_assembler_stalled_writes_nothing_more(
    huey_queue, django_user_model, monkeypatch
):
    users = daily_users(django_user_model, 4, "digeststall")
    hold_items(users, 1)
    now = after_every_due_time()
    claim = digests.claim_due_users(now)
    assert claim is not None
    age_lease(claim.message)
    assert maintenance.recover_dead_preparation(claim.message.pk) is None  # discarded
    assert digests.compose_claimed(claim) is None  # the stalled assembler wakes up: stops
    assert not Message.objects.filter(pk=claim.message.pk).exists()
    assert len(digests.send_due(now)) == 1
    assert_one_digest_per_user_with_every_item_once(users)
    per_user = defaultdict(int)
    for receiver in digest_receivers():
        per_user[receiver.user_id] += 1
    assert set(per_user.values()) == {1}
