"""Leases are written and compared on the database's clock, so worker hosts whose clocks are
wrong still agree on who owns a receiver. A host's wrong clock is played by time_machine, which
moves Python's clock and not the database's (SQLite's C library and the PostgreSQL server read
their own)."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from messaging.engine import transitions
from messaging.models import MessageReceiver
from tests.engine.test_state_machine import sending_message

pytestmark = pytest.mark.django_db

SKEW = timedelta(hours=1)


@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["host-clock-ahead", "host-clock-behind"])
def test_a_host_with_a_wrong_clock_neither_steals_a_live_claim_nor_loses_its_own(make_user, skew):
    message = sending_message([make_user() for _ in range(3)])
    claim = transitions.claim_batch(message.pk, "host-a")
    assert claim is not None and len(claim.receivers) == 3

    with time_machine.travel(timezone.now() + skew, tick=True):
        # Host B, whose clock is an hour off, sees host A's claim as live: nothing to claim.
        assert transitions.claim_batch(message.pk, "host-b") is None
        # Host A's own clock being off does not cost it its lease either.
        assert transitions.mark_in_flight(claim.receivers[0], "host-a", 5) == message.status
        assert transitions.renew_leases(claim, claim.ids[1:]) == set(claim.ids[1:])
        assert MessageReceiver.objects.leased().count() == 3


def test_a_lease_that_ran_out_on_the_database_clock_is_free_whatever_the_host_says(make_user):
    message = sending_message([make_user() for _ in range(2)])
    claim = transitions.claim_batch(message.pk, "dead-host")
    # The lease ran out by the database's clock (written the way claims write it).
    MessageReceiver.objects.filter(claimed_by="dead-host").update(
        lease_expires_datetime=transitions.ownership.lease_from_now(-1)
    )
    # A host whose clock is an hour behind would think the lease live; the database decides.
    with time_machine.travel(timezone.now() - SKEW, tick=True):
        taken = transitions.claim_batch(message.pk, "host-b")
        assert taken is not None and taken.ids == claim.ids
        # The dead host's worker comes back: its mark finds the receivers are not its own.
        assert transitions.mark_in_flight(claim.receivers[0], "dead-host", 5) == ""


def test_a_mark_needs_the_lease_to_outlast_one_send_on_the_database_clock(make_user):
    message = sending_message([make_user()])
    claim = transitions.claim_batch(message.pk, "host-a")
    receiver = claim.receivers[0]
    MessageReceiver.objects.filter(pk=receiver.pk).update(
        lease_expires_datetime=transitions.ownership.lease_from_now(3)
    )
    assert transitions.mark_in_flight(receiver, "host-a", 10) == ""  # 3 s left, a send takes 10
    assert transitions.mark_in_flight(receiver, "host-a", 1) == message.status
    assert MessageReceiver.objects.get(pk=receiver.pk).in_flight_since is not None
