"""Whether the huey consumer running this code has been asked to stop.

`manage.py run_huey` (messaging/management/commands/run_huey.py) makes SIGTERM huey's graceful
signal and hands the consumer's stop flag to `watch`; delivery checks `requested()` before each
receiver, so a stopping worker finishes the receiver in flight, releases the rest of its claim
for another consumer at once, and lets the process exit. Outside a consumer it is never set.
"""

from __future__ import annotations

from typing import Protocol


class _Flag(Protocol):
    def is_set(self) -> bool: ...


_stop_flag: _Flag | None = None


def watch(flag: _Flag | None) -> None:
    global _stop_flag
    _stop_flag = flag


def requested() -> bool:
    return _stop_flag is not None and _stop_flag.is_set()
