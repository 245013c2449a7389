from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    permanent: bool = False
    code: int | None = None
    reason: str = ""
    traceback: str = ""
    details: dict = field(default_factory=dict)
    # The connection died after the message was handed over and before the server answered.
    uncertain: bool = False

    @classmethod
    def ok(cls, **details) -> DeliveryResult:
        return cls(delivered=True, details=details)


class ChannelUnavailable(Exception):
    """The channel cannot deliver anything right now: the server is unreachable, refuses our
    login, fails TLS, or refuses our sender. The receiver being attempted was not delivered and
    is not charged a failure; the engine marks the message "delivery blocked" and retries later.
    """


class Channel(abc.ABC):
    message_type: str = ""
    # The MESSAGING_RATE_LIMITS entry that limits this channel ("": none).
    rate_limit_mailer: str = ""

    @abc.abstractmethod
    def deliver(self, receivers: Iterable) -> Iterator[tuple[object, DeliveryResult]]:
        """Attempt each receiver once, yielding (receiver, result) as soon as it is known.

        `receivers` is consumed lazily: take the next receiver only when about to send it (the
        engine checks its lease on each one as it is taken). Raises ChannelUnavailable when
        nothing can be delivered; the receiver taken last is then not charged.
        """

    def seconds_per_receiver(self) -> float:
        """The longest `deliver` may spend on one receiver, from taking it to yielding its
        result. Leases must cover it (messaging.checks)."""
        return 60.0
