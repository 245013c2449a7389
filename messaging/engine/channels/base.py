from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Mapping
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


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One email as the engine hands it to a channel: everything the channel sends, already
    decided (content, addresses, headers, attachments), so that sending needs no database and
    no knowledge of messages or receivers. The engine prepares it (messaging.engine.outgoing)
    once it has taken the receiver under a live lease.
    """

    # Whatever the engine maps the result back to (a MessageReceiver); the channel never reads it.
    ref: object
    address: str  # "" when the recipient has none: the channel answers a permanent failure
    subject: str
    plain: str
    html: str = ""  # "": no HTML alternative
    from_email: str = ""  # the From the recipient sees
    envelope_sender: str = ""  # where bounces go ("": the From address)
    reply_to: str = ""  # "": none
    # Final header values (Message-ID, List-Unsubscribe, ...), written as given.
    headers: Mapping[str, str] = field(default_factory=dict)
    # Ready MIME parts, shared by the emails of one message (messaging.compose.attachments).
    attachments: tuple = ()
    # Sent along to a provider that returns it in its webhooks (anymail's metadata).
    metadata: Mapping[str, str] = field(default_factory=dict)


class ChannelUnavailable(Exception):
    """The channel cannot deliver anything right now: the server is unreachable, refuses our
    login, fails TLS, or refuses our sender. Raise it only before anything of the receiver
    being attempted has left (after that, a lost answer is an uncertain result): it was not
    delivered, is not charged a failure nor flagged; the engine marks the message "delivery
    blocked" and retries later.
    """


class Channel(abc.ABC):
    message_type: str = ""
    # The MESSAGING_RATE_LIMITS entry that limits this channel ("": none).
    rate_limit_mailer: str = ""

    @abc.abstractmethod
    def deliver(self, items: Iterable[Outgoing]) -> Iterator[tuple[Outgoing, DeliveryResult]]:
        """Attempt each item once, yielding (item, result) as soon as the result is known.

        `items` is consumed lazily: take the next item only when about to send it (the engine
        checks its lease on each receiver as it is taken, and prepares the item then). Raises
        ChannelUnavailable when nothing can be delivered; the item taken last is then not charged.
        Sends what it is given and nothing else: it neither reads the database nor knows the
        engine (the engine records the results).
        """

    def seconds_per_receiver(self) -> float:
        """The longest `deliver` may spend on one item, from taking it to yielding its
        result. Leases must cover it (messaging.checks)."""
        return 60.0
