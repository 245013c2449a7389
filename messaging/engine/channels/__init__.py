"""Delivery channels, one per message type ("email" today), behind a small registry.

A channel gets what it sends, prepared by the engine (an Outgoing: rendered content, address,
headers, attachments), and answers with a DeliveryResult: delivered, failed (temporary or
permanent, and why) or uncertain. It knows nothing of statuses, retries or the database, and
imports nothing of the engine (tests/engine/test_channel_boundary.py).
"""

from messaging.engine.channels.base import Channel, ChannelUnavailable, DeliveryResult, Outgoing

_registry: dict[str, Channel] = {}


def register(channel: Channel) -> Channel:
    _registry[channel.message_type] = channel
    return channel


def unregister(message_type: str) -> None:
    _registry.pop(message_type, None)


def get_channel(message_type: str) -> Channel:
    try:
        return _registry[message_type]
    except KeyError:
        raise LookupError(f"No channel is registered for message type {message_type!r}.") from None


def registered_types() -> list[str]:
    return list(_registry)


__all__ = [
    "Channel",
    "ChannelUnavailable",
    "DeliveryResult",
    "Outgoing",
    "get_channel",
    "register",
    "registered_types",
    "unregister",
]
