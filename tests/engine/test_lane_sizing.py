"""How many lanes a delivery sends over (messaging/engine/lane_sizing.py): from the first lane's
measured wait/work, then from the process's CPU use; a relay's refusal of one more session caps
them; what a send settled on is remembered for the next. The unit tests drive the sizer with a
controlled clock; the last test delivers over real SMTP to a sink that refuses a fourth session."""

from __future__ import annotations

import collections

import pytest

from messaging.engine import delivery, lane_sizing
from messaging.engine.lane_sizing import LaneSizer
from messaging.models import Message, MessageReceiver
from tests.engine.test_state_machine import sending_message


class Clocks:
    """time.monotonic, time.thread_time and time.process_time as the sizer sees them."""

    def __init__(self):
        self.wall = self.thread = self.process = 0.0

    def send(self, wall: float, work: float) -> None:
        """One lane's send: `wall` seconds, `work` of them on this thread's CPU."""
        self.wall += wall
        self.thread += work
        self.process += work


@pytest.fixture
def clocks(monkeypatch):
    clocks = Clocks()
    monkeypatch.setattr(lane_sizing.time, "monotonic", lambda: clocks.wall)
    monkeypatch.setattr(lane_sizing.time, "thread_time", lambda: clocks.thread)
    monkeypatch.setattr(lane_sizing.time, "process_time", lambda: clocks.process)
    return clocks


def measured(clocks: Clocks, most: int, wall: float, work: float) -> LaneSizer:
    """A sizer after lane 0 connected and sent MEASURED_SENDS emails of `wall` / `work`."""
    sizer = LaneSizer.start("email", most)
    sizer.observe()  # the first result: connecting is not part of a send
    for _ in range(lane_sizing.MEASURED_SENDS):
        clocks.send(wall, work)
        sizer.observe()
    return sizer


@pytest.mark.parametrize(
    ("wall", "work", "most", "lanes"),
    [
        (0.100, 0.0025, 16, 16),  # 100 ms away: as many sessions as allowed
        (0.100, 0.0025, 64, 40),  # ... and no more than keep the work going
        (0.020, 0.0025, 16, 8),  # 20 ms away: wait / work + 1 = 8
        (0.003, 0.0025, 16, 2),  # a fast local relay with a database server to wait for
        (0.0025, 0.0025, 16, 1),  # all work, nothing to overlap
    ],
)
def test_lanes_come_from_how_long_a_send_waits_against_how_long_it_works(clocks, wall, work, most, lanes):
    sizer = measured(clocks, most, wall, work)
    assert sizer.lanes == 1 and sizer.measuring  # not decided before the measurement
    assert sizer.wanted() == lanes
    assert not sizer.measuring


def test_a_busy_neighbour_does_not_change_a_slow_relays_lanes(clocks):
    """The issue's noise: another process taking the CPU made a rate comparison halve the lanes.
    Here it only lengthens the wall time of lane 0's sends (it waits for the CPU), so the count
    can only rise; against a slow relay it is the cap whatever the neighbour does."""
    quiet = measured(clocks, 16, 0.100, 0.0025).wanted()
    lane_sizing.forget_all()
    busy = measured(clocks, 16, 0.100 + 0.050, 0.0025).wanted()
    assert quiet == busy == 16


def test_lanes_that_mostly_wait_are_added_in_proportion_and_never_retired(clocks):
    sizer = measured(clocks, 16, 0.003, 0.0025)
    assert sizer.wanted() == 2
    clocks.wall += lane_sizing.INTERVAL
    clocks.process += 0.2 * lane_sizing.INTERVAL  # the process used a fifth of a CPU
    assert sizer.wanted() == 4  # at most doubled per interval
    clocks.wall += lane_sizing.INTERVAL
    clocks.process += 0.95 * lane_sizing.INTERVAL  # busy now: keep what there is
    assert sizer.wanted() == 4
    clocks.wall += lane_sizing.INTERVAL / 2
    clocks.process += 0.0
    assert sizer.wanted() == 4  # not yet an interval since the last decision


def test_a_send_starts_where_the_last_one_to_the_same_relay_settled(clocks):
    first = measured(clocks, 16, 0.100, 0.0025)
    assert first.wanted() == 16
    second = LaneSizer.start("email", 16)
    assert second.lanes == 16 and not second.measuring  # no second spent measuring again
    assert LaneSizer.start("sms", 16).lanes == 1  # another relay is measured on its own
    clocks.wall += lane_sizing.MEMORY_SECONDS + 1
    assert LaneSizer.start("email", 16).measuring  # an old count is measured afresh


def test_a_refused_session_caps_the_lanes_at_those_working_and_is_remembered(clocks):
    sizer = measured(clocks, 16, 0.100, 0.0025)
    assert sizer.wanted() == 16
    sizer.refused(working=5)
    assert sizer.wanted() == 5
    clocks.wall += lane_sizing.INTERVAL
    assert sizer.wanted() == 5  # idle CPU does not grow them past what the relay accepts
    assert LaneSizer.start("email", 16).lanes == 5


def test_no_send_within_the_measuring_second_doubles_the_lanes(clocks):
    sizer = LaneSizer.start("email", 16)
    sizer.observe()
    clocks.wall += lane_sizing.MEASURE_SECONDS
    assert sizer.wanted() == 4


# --- Real SMTP: a relay that accepts three sessions ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_relay_that_refuses_more_sessions_gets_every_receiver_once_over_those_it_accepts(
    settings, smtp_mailer, django_user_model
):
    handler = smtp_mailer.handler
    handler.data_delay = 0.05
    accepted = 3
    original_ehlo = handler.handle_EHLO

    async def ehlo(server, session, envelope, hostname, responses):
        if handler.sessions >= accepted:
            return ["421 Too many connections from your host"]
        return await original_ehlo(server, session, envelope, hostname, responses)

    async def helo(server, session, envelope, hostname):
        return "421 Too many connections from your host"

    handler.handle_EHLO, handler.handle_HELO = ehlo, helo
    settings.MESSAGING_SMTP_CONNECTIONS = 8
    users = [
        django_user_model.objects.create(username=f"lane{i}", email=f"lane{i}@example.org") for i in range(90)
    ]
    message = sending_message(users)

    assert delivery.deliver_message(message.pk)

    arrived = collections.Counter(m.message["Message-ID"] for m in smtp_mailer.received)
    assert len(arrived) == 90 and set(arrived.values()) == {1}
    assert set(MessageReceiver.objects.filter(message=message).values_list("status", flat=True)) == {"sent"}
    assert not MessageReceiver.objects.filter(message=message, sending_failed_count__gt=0).exists()
    message.refresh_from_db()
    assert message.status == Message.Status.SENT  # not "delivery blocked": the relay was up
    assert handler.sessions == accepted and handler.most_in_flight <= accepted
    assert lane_sizing.remembered("email").cap == accepted
