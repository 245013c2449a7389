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

    @classmethod
    def ok(cls) -> DeliveryResult:
        return cls(delivered=True)


class ChannelUnavailable(Exception):
    """The channel cannot deliver anything right now (e.g. the SMTP server is down).

    No receiver was attempted, so none is charged a failure; the engine retries later.
    """


class Channel(abc.ABC):
    message_type: str = ""

    @abc.abstractmethod
    def deliver(self, receivers: Iterable) -> Iterator[tuple[object, DeliveryResult]]:
        """Attempt each receiver once, yielding (receiver, result) as soon as it is known.

        Raises ChannelUnavailable before yielding anything if nothing can be delivered.
        """
