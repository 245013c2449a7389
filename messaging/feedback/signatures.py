"""What we sign so that a report coming back can name its receiver, and nothing else can: the
per-receiver Message-ID (bounces quote it) and the VERP return path (feedback/return_path.py).

Signed with SECRET_KEY; the keys in SECRET_KEY_FALLBACKS still verify, so rotating the key keeps
the Message-IDs and return paths of mail already sent matching their bounces."""

from __future__ import annotations

import re

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

_MESSAGE_ID_SALT = "messaging.feedback.message_id"
_MESSAGE_ID_SIGNATURE_LENGTH = 16  # hex: 64 bits, and every guess costs the forger an email
_MESSAGE_ID = re.compile(r"^<receiver-(\d{1,18})\.message-(\d{1,18})\.([0-9a-f]{16})@([^<>@\s]{1,255})>$")


def sign(salt: str, value: str, length: int) -> str:
    return salted_hmac(salt, value, algorithm="sha256").hexdigest()[:length]


def verify(salt: str, value: str, signature: str, length: int) -> bool:
    """True if the signature was made with SECRET_KEY or one of SECRET_KEY_FALLBACKS."""
    if len(signature) != length:
        return False
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return any(
        constant_time_compare(
            signature, salted_hmac(salt, value, secret=key, algorithm="sha256").hexdigest()[:length]
        )
        for key in keys
    )


def message_id(receiver_id: int, message_id: int, domain: str) -> str:
    """<receiver-<id>.message-<id>.<signature>@domain>: stable per receiver, so a re-send is
    recognisable as the same email; the signature covers the numbers and the domain."""
    value = f"{receiver_id}.{message_id}@{domain}"
    signature = sign(_MESSAGE_ID_SALT, value, _MESSAGE_ID_SIGNATURE_LENGTH)
    return f"<receiver-{receiver_id}.message-{message_id}.{signature}@{domain}>"


def receiver_id_from_message_id(text: str) -> int | None:
    """The receiver a Message-ID of ours was written for; None for anything we did not sign
    (another number, another domain, a made-up or cut signature, an unsigned older form)."""
    match = _MESSAGE_ID.match(text.strip())
    if match is None:
        return None
    receiver_id, message_number, signature, domain = match.groups()
    value = f"{int(receiver_id)}.{int(message_number)}@{domain}"
    if not verify(_MESSAGE_ID_SALT, value, signature, _MESSAGE_ID_SIGNATURE_LENGTH):
        return None
    return int(receiver_id)
