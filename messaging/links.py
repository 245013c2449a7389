"""Signed links in recipients' emails: their preference page and one-click unsubscribe (for
the context types the email is about), and reading one digest item in full. No login needed:
the signature (SECRET_KEY, a salt per kind of link) says which user or receiver it is for, and
it expires after MESSAGING_PREFERENCE_LINK_MAX_AGE_DAYS.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.core import signing
from django.urls import reverse

from messaging import conf

PREFERENCES_SALT = "messaging.links.preferences"
READ_SALT = "messaging.links.read"


class LinkInvalid(Exception):
    """Tampered with, cut short, or not one of ours."""


class LinkExpired(LinkInvalid):
    pass


@dataclass(frozen=True)
class PreferenceLink:
    user_id: int
    context_types: tuple[str, ...]  # what its email was about: one-click turns these off


def _max_age() -> timedelta:
    return timedelta(days=conf.preference_link_max_age_days())


def _load(token: str, salt: str):
    try:
        return signing.TimestampSigner(salt=salt).unsign_object(token, max_age=_max_age())
    except signing.SignatureExpired as exc:
        raise LinkExpired(str(exc)) from exc
    except (signing.BadSignature, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise LinkInvalid(str(exc)) from exc


def preference_token(user_id: int, context_types: list[str] | tuple[str, ...]) -> str:
    # Not compressed: the payload is a few dozen bytes, which zlib does not shorten.
    return signing.TimestampSigner(salt=PREFERENCES_SALT).sign_object(
        {"u": user_id, "t": list(context_types)}
    )


def read_preference_token(token: str) -> PreferenceLink:
    data = _load(token, PREFERENCES_SALT)
    if not isinstance(data, dict) or type(data.get("u")) is not int or not isinstance(data.get("t"), list):
        raise LinkInvalid("Not a preference link.")
    return PreferenceLink(data["u"], tuple(str(t) for t in data["t"]))


def read_token(receiver_id: int) -> str:
    return signing.TimestampSigner(salt=READ_SALT).sign_object({"r": receiver_id})


def read_receiver_id(token: str) -> int:
    data = _load(token, READ_SALT)
    if not isinstance(data, dict) or type(data.get("r")) is not int:
        raise LinkInvalid("Not a link to a message.")
    return data["r"]


def absolute(path: str) -> str:
    return conf.site_url() + path


def preferences_url(token: str) -> str:
    return absolute(reverse("preferences:manage_signed", args=[token]))


def one_click_url(token: str) -> str:
    return absolute(reverse("preferences:one_click", args=[token]))


class PreferenceLinks:
    """preference_token, one_click_url and preferences_url for many users in a row (the email
    channel, for each receiver it sends): the signer and the shape of each URL are made once,
    so only the signature is computed per user."""

    _PLACEHOLDER = "token-placeholder"

    def __init__(self):
        self._signer = signing.TimestampSigner(salt=PREFERENCES_SALT)
        self._one_click = self._shape("preferences:one_click")
        self._manage = self._shape("preferences:manage_signed")

    def _shape(self, name: str) -> tuple[str, str]:
        # A token is URL-safe base64 and ":", which reverse() leaves as they are.
        prefix, _placeholder, suffix = absolute(reverse(name, args=[self._PLACEHOLDER])).rpartition(
            f"/{self._PLACEHOLDER}/"
        )
        return f"{prefix}/", f"/{suffix}"

    def token(self, user_id: int, context_types: list[str] | tuple[str, ...]) -> str:
        return self._signer.sign_object({"u": user_id, "t": list(context_types)})

    def one_click_url(self, token: str) -> str:
        return f"{self._one_click[0]}{token}{self._one_click[1]}"

    def preferences_url(self, token: str) -> str:
        return f"{self._manage[0]}{token}{self._manage[1]}"


def read_url(receiver_id: int) -> str:
    return absolute(reverse("preferences:read", args=[read_token(receiver_id)]))
