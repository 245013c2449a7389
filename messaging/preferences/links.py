"""Signed links in recipients' emails. Each does one thing for one person:

- manage: the user's preference page (the footer of an email, the digest's settings link);
- one-click: RFC 8058 unsubscribe from the types the email was about (List-Unsubscribe);
- read: one digest item in full, a receiver of that user only.

No login needed: the signature (SECRET_KEY, or one of SECRET_KEY_FALLBACKS while a key is
rotated) says which purpose and which user. Each purpose has its own salt and names itself in
the payload, so a token is refused wherever else it is used. A link expires after
MESSAGING_PREFERENCE_LINK_MAX_AGE_DAYS, and is revoked when it was signed at or before its user's
MessagingProfile.links_revoked_at (check_not_revoked; the views load the user anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core import signing
from django.urls import reverse

from messaging import conf

MANAGE = "manage"
ONE_CLICK = "one-click"
READ = "read"
SALTS = {purpose: f"messaging.preferences.links.{purpose}" for purpose in (MANAGE, ONE_CLICK, READ)}


class LinkInvalid(Exception):
    """Tampered with, cut short, made for another purpose, or not one of ours."""


class LinkExpired(LinkInvalid):
    pass


class LinkRevoked(LinkInvalid):
    """Signed at or before staff revoked every link of its user."""

    def __init__(self, user):
        super().__init__(f"The links of user {user.pk} were revoked.")
        self.user = user  # the page saying so is in their language


@dataclass(frozen=True)
class Link:
    user_id: int
    issued_at: datetime  # the signature's timestamp: whole seconds, UTC


@dataclass(frozen=True)
class OneClickLink(Link):
    context_types: tuple[str, ...]  # what its email was about: one-click turns these off


@dataclass(frozen=True)
class ReadLink(Link):
    receiver_id: int


# Payloads --------------------------------------------------------------------------------------


def _manage_payload(user_id: int) -> dict:
    return {"p": MANAGE, "u": user_id}


def _one_click_payload(user_id: int, context_types: list[str] | tuple[str, ...]) -> dict:
    return {"p": ONE_CLICK, "u": user_id, "t": list(context_types)}


def _read_payload(user_id: int, receiver_id: int) -> dict:
    return {"p": READ, "u": user_id, "r": receiver_id}


def _signer(purpose: str) -> signing.TimestampSigner:
    # Reads SECRET_KEY and SECRET_KEY_FALLBACKS when made: a new one per check follows rotation.
    return signing.TimestampSigner(salt=SALTS[purpose])


# Making tokens ---------------------------------------------------------------------------------
# Not compressed: the payloads are a few dozen bytes, which zlib does not shorten.


def manage_token(user_id: int) -> str:
    return _signer(MANAGE).sign_object(_manage_payload(user_id))


def one_click_token(user_id: int, context_types: list[str] | tuple[str, ...]) -> str:
    return _signer(ONE_CLICK).sign_object(_one_click_payload(user_id, context_types))


def read_token(user_id: int, receiver_id: int) -> str:
    return _signer(READ).sign_object(_read_payload(user_id, receiver_id))


# Reading tokens --------------------------------------------------------------------------------


def _max_age() -> timedelta:
    return timedelta(days=conf.preference_link_max_age_days())


def _load(token: str, purpose: str) -> tuple[dict, datetime]:
    """The payload of a valid, unexpired token of `purpose`, and when it was signed."""
    signer = _signer(purpose)
    try:
        data = signer.unsign_object(token, max_age=_max_age())
    except signing.SignatureExpired as exc:
        raise LinkExpired(str(exc)) from exc
    except (signing.BadSignature, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise LinkInvalid(str(exc)) from exc
    if not isinstance(data, dict) or data.get("p") != purpose or type(data.get("u")) is not int:
        raise LinkInvalid(f"Not a {purpose} link.")
    # The signature covers the timestamp, so after unsigning it is ours to trust.
    stamp = token.rsplit(signer.sep, 2)[1]
    return data, datetime.fromtimestamp(signing.b62_decode(stamp), tz=UTC)


def load_manage(token: str) -> Link:
    data, issued_at = _load(token, MANAGE)
    return Link(data["u"], issued_at)


def load_one_click(token: str) -> OneClickLink:
    data, issued_at = _load(token, ONE_CLICK)
    if not isinstance(data.get("t"), list):
        raise LinkInvalid("Not a one-click link.")
    return OneClickLink(data["u"], issued_at, tuple(str(t) for t in data["t"]))


def load_read(token: str) -> ReadLink:
    data, issued_at = _load(token, READ)
    if type(data.get("r")) is not int:
        raise LinkInvalid("Not a link to a message.")
    return ReadLink(data["u"], issued_at, data["r"])


def check_not_revoked(link: Link, user) -> None:
    """Raise LinkRevoked if `link` was signed at or before `user`'s links were revoked. `user`
    is the one the link names, loaded with its messaging_profile (no profile: never revoked)."""
    if link.user_id != user.pk:
        raise LinkInvalid("Made for another user.")
    profile = getattr(user, "messaging_profile", None)
    revoked_at = profile.links_revoked_at if profile else None
    # Whole seconds against a precise moment: a link signed in the second of the revocation,
    # before or after it, is revoked too (the safe side).
    if revoked_at is not None and link.issued_at <= revoked_at:
        raise LinkRevoked(user)


# URLs ------------------------------------------------------------------------------------------


def absolute(path: str) -> str:
    return conf.site_url() + path


def preferences_url(user_id: int) -> str:
    return PreferenceLinks().preferences_url(user_id)


def one_click_url(user_id: int, context_types: list[str] | tuple[str, ...]) -> str:
    return PreferenceLinks().one_click_url(user_id, context_types)


def read_url(user_id: int, receiver_id: int) -> str:
    return absolute(reverse("preferences:read", args=[read_token(user_id, receiver_id)]))


class PreferenceLinks:
    """one_click_url and preferences_url for many users in a row (the email channel, for each
    receiver it sends): the signers and the shape of each URL are made once, so only the
    signatures are computed per user."""

    _PLACEHOLDER = "token-placeholder"

    def __init__(self):
        self._one_click_signer = _signer(ONE_CLICK)
        self._manage_signer = _signer(MANAGE)
        self._one_click = self._shape("preferences:one_click")
        self._manage = self._shape("preferences:manage_signed")

    def _shape(self, name: str) -> tuple[str, str]:
        # A token is URL-safe base64 and ":", which reverse() leaves as they are.
        prefix, _placeholder, suffix = absolute(reverse(name, args=[self._PLACEHOLDER])).rpartition(
            f"/{self._PLACEHOLDER}/"
        )
        return f"{prefix}/", f"/{suffix}"

    def one_click_url(self, user_id: int, context_types: list[str] | tuple[str, ...]) -> str:
        token = self._one_click_signer.sign_object(_one_click_payload(user_id, context_types))
        return f"{self._one_click[0]}{token}{self._one_click[1]}"

    def preferences_url(self, user_id: int) -> str:
        token = self._manage_signer.sign_object(_manage_payload(user_id))
        return f"{self._manage[0]}{token}{self._manage[1]}"
