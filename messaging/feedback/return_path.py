"""VERP return paths: each receiver's email goes out from its own envelope sender, so a bounce
message names its receiver even when it quotes nothing of the original email. The address is
signed, so a forged bounce cannot point at a receiver of its choosing."""

from __future__ import annotations

from messaging import conf
from messaging.feedback import signatures

_SALT = "messaging.feedback.return_path"
_SIGNATURE_LENGTH = 10


def envelope_sender(receiver) -> str:
    """bounces+r<id>-<signature>@domain for a stored receiver, when MESSAGING_BOUNCE_ADDRESS is
    set; "" otherwise (the From address is the envelope sender)."""
    address = conf.bounce_address()
    if not address or receiver.pk is None:
        return ""
    local, _, domain = address.rpartition("@")
    return f"{local}+r{receiver.pk}-{signatures.sign(_SALT, str(receiver.pk), _SIGNATURE_LENGTH)}@{domain}"


def receiver_id_from_address(address: str) -> int | None:
    """The receiver a VERP address was made for, if it is one of ours with a valid signature."""
    configured = conf.bounce_address()
    if not configured:
        return None
    local, _, domain = address.strip().lower().rpartition("@")
    base_local, _, base_domain = configured.lower().rpartition("@")
    prefix = f"{base_local}+r"
    if domain != base_domain or not local.startswith(prefix):
        return None
    number, _, signature = local.removeprefix(prefix).partition("-")
    if not (number.isascii() and number.isdigit()) or len(number) > 18:
        return None
    if not signatures.verify(_SALT, str(int(number)), signature, _SIGNATURE_LENGTH):
        return None
    return int(number)
