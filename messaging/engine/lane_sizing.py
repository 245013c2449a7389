"""How many lanes (concurrent SMTP sessions, each a thread) one delivery worker sends over.

Chosen from what the relay shows, not from comparing delivery rates over short windows (CPU
noise from other processes on the host flipped that comparison: the same send settled anywhere
from 4 to 32 sessions from run to run). A lane spends each send either working (this process's
CPU: rendering the email, the client side of the database round trips; lanes take turns on one
interpreter lock) or waiting (for the relay's answers, for the database): while one lane waits,
another can work. So the lanes that keep the work going without queuing for the lock number
about wait / work + 1 for one send, measured from the first lane's own CPU time (time.thread_time)
while it runs alone:

- a relay 100 ms away with 2.5 ms of work per email: 41 lanes wanted (capped at
  MESSAGING_SMTP_CONNECTIONS); a relay on the same host answering at once: 1 or 2.

After that the process's CPU use decides, every INTERVAL: while this process uses less than
IDLE of one CPU, its lanes wait more than they work, and lanes are added in proportion (at most
doubling per interval); lanes are never retired for being slow (a busy neighbour makes us idle,
not the lanes useless). A relay that refuses another session (421 "too many connections") while
other lanes are delivering caps the lanes at those working: the lane that was refused gives its
receivers back, not sent and not charged.

The count a send settled on, and a cap the relay showed, are remembered for the relay (per
message type's channel, in this process) for MEMORY_SECONDS, so the next send starts there at
once: a 300-receiver send does not spend its first second measuring.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

INTERVAL = 1.0  # seconds between two decisions from the process's CPU use
MEASURE_POLL = 0.05  # seconds between two looks at lane 0's measurement
MEASURED_SENDS = 2  # results lane 0 measures alone (after its first: connecting is not a send)
MEASURE_SECONDS = 1.0  # ...or for at most this long
IDLE = 0.6  # of one CPU: below this, the lanes mostly wait
BUSY = 0.85  # of one CPU: what added lanes aim for
MEMORY_SECONDS = 600.0


@dataclass
class Remembered:
    lanes: int
    cap: int | None
    at: float


_remembered: dict[str, Remembered] = {}
_remembered_lock = threading.Lock()


def remembered(key: str) -> Remembered | None:
    with _remembered_lock:
        found = _remembered.get(key)
        if found is None or time.monotonic() - found.at > MEMORY_SECONDS:
            return None
        return found


def remember(key: str, lanes: int, cap: int | None) -> None:
    with _remembered_lock:
        _remembered[key] = Remembered(lanes, cap, time.monotonic())


def forget_all() -> None:
    """Tests: every send measures afresh."""
    with _remembered_lock:
        _remembered.clear()


@dataclass
class LaneSizer:
    """The lane count of one delivery, for `_run_lanes`: `wanted()` after each INTERVAL.
    Lanes report each result from their own thread (`observe`) and a refused session
    (`refused`)."""

    key: str
    most: int
    lanes: int = 1
    cap: int | None = None  # sessions the relay accepted, when it refused one more
    measuring: bool = True
    wall: float = 0.0
    cpu: float = 0.0
    sends: int = 0
    started: float = 0.0
    process_cpu: float = 0.0
    checked: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stamps: threading.local = field(default_factory=threading.local)

    @classmethod
    def start(cls, key: str, most: int) -> LaneSizer:
        now = time.monotonic()
        sizer = cls(key, most, started=now, checked=now, process_cpu=time.process_time())
        known = remembered(key)
        if known is not None:
            sizer.cap = known.cap
            sizer.lanes = max(1, min(known.lanes, sizer.limit()))
            sizer.measuring = False
        return sizer

    def limit(self) -> int:
        return max(1, min(self.most, self.cap or self.most))

    def observe(self) -> None:
        """A lane recorded a result: while measuring, lane 0's time between two results, and
        the part of it its thread computed."""
        now, cpu = time.monotonic(), time.thread_time()
        last = getattr(self.stamps, "last", None)
        self.stamps.last = (now, cpu)
        if last is None or not self.measuring:
            return
        with self.lock:
            self.wall += now - last[0]
            self.cpu += cpu - last[1]
            self.sends += 1

    def refused(self, working: int) -> None:
        """The relay refused one more session while `working` other lanes deliver."""
        with self.lock:
            self.cap = max(1, working)
            self.lanes = min(self.lanes, self.cap)
        remember(self.key, self.lanes, self.cap)

    def next_look(self) -> float:
        """Seconds until `wanted` may decide something new."""
        return MEASURE_POLL if self.measuring else INTERVAL

    def wanted(self) -> int:
        """The lanes this delivery should run now (never fewer than it runs)."""
        with self.lock:
            now = time.monotonic()
            if self.measuring:
                if self.sends < MEASURED_SENDS and now - self.started < MEASURE_SECONDS:
                    return self.lanes
                self.measuring = False
                self.lanes = self._from_measurement()
            elif now - self.checked >= INTERVAL:
                self.lanes = self._from_cpu_use(now)
            else:
                return self.lanes
            self.checked, self.process_cpu = now, time.process_time()
            remember(self.key, self.lanes, self.cap)
            return self.lanes

    def _from_measurement(self) -> int:
        if self.sends == 0:  # not one send in a second: the relay is slow, lanes are cheap
            return min(self.limit(), max(self.lanes, 2) * 2)
        work = max(self.cpu, 1e-4 * self.sends)
        return min(self.limit(), max(1, math.ceil(self.wall / work)))

    def _from_cpu_use(self, now: float) -> int:
        used = (time.process_time() - self.process_cpu) / max(now - self.checked, 1e-3)
        if used >= IDLE or self.lanes >= self.limit():
            return min(self.lanes, self.limit())
        grown = math.ceil(self.lanes * BUSY / max(used, BUSY / 2))
        return min(self.limit(), max(self.lanes, grown))
