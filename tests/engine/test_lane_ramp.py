"""LaneRamp (messaging/engine/delivery.py): more lanes while they raise the delivery rate."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from messaging.engine import delivery
from messaging.engine.delivery import LaneRamp


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(delivery.time, "monotonic", clock)
    return clock


def ramp_up(clock: Clock, most: int, rate_for_lanes) -> tuple[list[int], SimpleNamespace]:
    """Run the ramp for ten intervals; each interval the lanes deliver rate_for_lanes(lanes)."""
    run = SimpleNamespace(attempts=0, lane_cap=1_000_000)
    ramp = LaneRamp(run, most)
    lanes, history = 1, []
    for _ in range(10):
        clock.now += LaneRamp.INTERVAL
        run.attempts += int(rate_for_lanes(min(lanes, run.lane_cap)) * LaneRamp.INTERVAL)
        lanes += ramp.lanes_to_add(lanes)
        history.append(lanes)
    return history, run


def test_a_slow_relay_gets_every_connection(clock):
    history, run = ramp_up(clock, 16, lambda lanes: 10 * lanes)  # 100 ms a message, per lane
    assert history[:5] == [2, 4, 8, 16, 16]
    assert run.lane_cap >= 16


def test_a_fast_relay_keeps_the_lanes_that_paid_and_retires_the_rest(clock):
    # CPU-bound: a second lane adds a little, more add nothing.
    history, run = ramp_up(clock, 16, lambda lanes: {1: 500, 2: 700}.get(lanes, 690))
    assert history[:3] == [2, 4, 4]
    assert run.lane_cap == 2


def test_no_gain_from_the_first_doubling_goes_back_to_one_lane(clock):
    history, run = ramp_up(clock, 16, lambda lanes: 500)
    assert history[:2] == [2, 2]
    assert run.lane_cap == 1
