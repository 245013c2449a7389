"""Raw messages (bounce reports) from a mailbox named by a URL.

Standard library only and free of Django, so the management command and the periodic task share it
and it can be tested on its own. URLs:

    maildir:///abs/path                       new/ and cur/ of an existing Maildir
    mbox:///abs/path                          an existing mbox file, locked while open
    imap://user:password@host[:port]/FOLDER   port 143; ?starttls=1 upgrades to TLS before the login
    imaps://user:password@host[:port]/FOLDER  port 993, TLS from the start

User, password and folder are percent-decoded; the folder defaults to INBOX. Certificates are
verified against the system's trusted authorities (SSL_CERT_FILE adds others).
"""

from __future__ import annotations

import imaplib
import mailbox
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol
from urllib.parse import SplitResult, unquote, urlsplit

TIMEOUT_SECONDS = 30
# OSError covers refused and timed-out connections, unknown hosts and every ssl.SSLError.
_IMAP_ERRORS = (imaplib.IMAP4.error, OSError, UnicodeError)


class MailboxError(Exception):
    """The mailbox cannot be read: a bad URL, an unreachable server, a refused login, a missing
    folder. str() is a clear English sentence for an operator, never containing the password."""


class Mailbox(Protocol):
    def messages(self) -> Iterator[tuple[str, bytes]]:
        """(key, raw RFC 5322 bytes) of every message there now, oldest first; messages arriving
        meanwhile may be left for next time."""
        ...

    def remove(self, key: str) -> None:
        """Delete a message the caller has recorded (on IMAP: flag it, expunged at close)."""
        ...


@contextmanager
def open_mailbox(url: str) -> Iterator[Mailbox]:
    parts = urlsplit(url)
    if parts.scheme in ("maildir", "mbox"):
        opened = _open_local(parts)
    elif parts.scheme in ("imap", "imaps"):
        opened = _open_imap(url, parts)
    else:
        raise MailboxError(
            f"Unknown bounce mailbox URL scheme {parts.scheme!r}; use maildir://, mbox://, imap:// or imaps://."
        )
    with opened as box:
        yield box


def describe(url: str) -> str:
    """The URL with any password replaced by "***", for logs and the UI."""
    # Greedy up to the last "@", so an unencoded "@" or "/" in a password is hidden too.
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/?#@]*):.*@", r"\1:***@", url, flags=re.IGNORECASE)


@contextmanager
def _closing(close: Callable[[], None]) -> Iterator[None]:
    """Close also when the caller's block failed (its removals were recorded), without hiding its
    error behind one from closing."""
    try:
        yield
    except BaseException:
        with suppress(MailboxError):
            close()
        raise
    close()


class _LocalMailbox:
    def __init__(self, box: mailbox.Mailbox, native_key: Callable[[str], Any], name: str) -> None:
        self._box, self._native_key, self._name = box, native_key, name

    def messages(self) -> Iterator[tuple[str, bytes]]:
        with self._errors():
            keys = sorted(self._box.keys(), key=_delivery_order)
        for key in keys:
            with self._errors():
                try:
                    raw = self._box.get_bytes(key)
                except (KeyError, FileNotFoundError):
                    continue  # another reader took it meanwhile
            yield str(key), raw

    def remove(self, key: str) -> None:
        with self._errors(), suppress(KeyError, FileNotFoundError):
            self._box.remove(self._native_key(key))

    def close(self) -> None:
        with self._errors():
            self._box.close()  # an mbox is flushed, then unlocked

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (mailbox.Error, OSError) as exc:
            raise MailboxError(f"Cannot read the {self._name}: {exc}.") from exc


def _delivery_order(key: object) -> list[int | str]:
    """Maildir names start with the delivery time ("<seconds>.M<microseconds>P<pid>..."), so
    numbers compared as numbers give the delivery order; mbox keys are already file positions."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"([0-9]+)", str(key)))]


@contextmanager
def _open_local(parts: SplitResult) -> Iterator[Mailbox]:
    path = unquote(parts.path)
    name = f"maildir {path}" if parts.scheme == "maildir" else f"mbox file {path}"
    if parts.netloc or not path.startswith("/"):
        raise MailboxError(f"A {parts.scheme} URL needs an absolute path: {parts.scheme}:///abs/path.")
    try:
        if parts.scheme == "maildir":
            maildir = mailbox.Maildir(path, factory=None, create=False)
            maildir.keys()  # a directory without new/ and cur/ fails here rather than mid-read
            box = _LocalMailbox(maildir, str, name)
        else:
            box = _LocalMailbox(_locked_mbox(path), int, name)
    except mailbox.NoSuchMailboxError:
        raise MailboxError(f"The {name} does not exist.") from None
    except mailbox.ExternalClashError:
        raise MailboxError(f"The {name} is locked by another program; try again later.") from None
    except (mailbox.Error, OSError) as exc:
        raise MailboxError(f"Cannot open the {name}: {exc}.") from exc
    with _closing(box.close):
        yield box


def _locked_mbox(path: str) -> mailbox.mbox:
    box = mailbox.mbox(path, factory=None, create=False)
    try:
        box.lock()
    except BaseException:
        box.close()
        raise
    return box


class _ImapMailbox:
    def __init__(self, client: imaplib.IMAP4, where: str) -> None:
        self._client, self._where = client, where

    def messages(self) -> Iterator[tuple[str, bytes]]:
        # Flagged messages were removed by a run that could not expunge them.
        found = self._run("UID SEARCH", self._client.uid, "SEARCH", "UNDELETED")
        for uid in sorted((found[0] or b"").split(), key=int):
            data = self._run("UID FETCH", self._client.uid, "FETCH", uid, "(BODY.PEEK[])")
            raw = next((part[1] for part in data if isinstance(part, tuple)), None)
            if raw is not None:  # None: expunged by another client since the search
                yield uid.decode(), raw

    def remove(self, key: str) -> None:
        self._run("UID STORE", self._client.uid, "STORE", key, "+FLAGS", r"(\Deleted)")

    def close(self) -> None:
        try:
            self._run("EXPUNGE", self._client.expunge)
        finally:
            _logout(self._client)

    def _run(self, what: str, command: Callable[..., tuple[str, list]], *args: Any) -> list:
        with _imap_errors(f"IMAP {what} failed on {self._where}"):
            return _ok(*command(*args))


@contextmanager
def _open_imap(url: str, parts: SplitResult) -> Iterator[Mailbox]:
    box = _ImapMailbox(*_imap_connect(url, parts))
    with _closing(box.close):
        yield box


def _imap_connect(url: str, parts: SplitResult) -> tuple[imaplib.IMAP4, str]:
    """A client logged in and in the folder, and where that is for messages."""
    try:
        port = parts.port or (993 if parts.scheme == "imaps" else 143)
    except ValueError:
        raise MailboxError(f"The port in the mailbox URL {describe(url)} is not a valid port.") from None
    if not parts.hostname or parts.username is None or parts.password is None:
        raise MailboxError(f"The mailbox URL {describe(url)} needs a user, a password and a host.")
    user, password, host = unquote(parts.username), unquote(parts.password), parts.hostname
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    starttls = _starttls(url, parts)
    context = ssl.create_default_context()
    with _imap_errors(f"Cannot connect to the IMAP server {host}:{port}"):
        if parts.scheme == "imaps":
            client = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=TIMEOUT_SECONDS)
        else:
            client = imaplib.IMAP4(host, port, timeout=TIMEOUT_SECONDS)
    try:
        if starttls:
            with _imap_errors(f"STARTTLS failed with the IMAP server {host}:{port}"):
                client.starttls(ssl_context=context)
        with _imap_errors(f"The IMAP server {host}:{port} refused the login of {user!r}", password):
            client.login(user, password)
        with _imap_errors(f"Cannot open the IMAP folder {folder!r} on {host}:{port}"):
            _ok(*client.select(_quoted(folder)))
    except MailboxError:
        _logout(client)
        raise
    return client, f"{host}:{port} in the folder {folder!r}"


def _starttls(url: str, parts: SplitResult) -> bool:
    """A mistyped option must not silently send the password in clear text."""
    if parts.query not in ("", "starttls=0", "starttls=1") or (parts.scheme == "imaps" and parts.query):
        raise MailboxError(
            f"The mailbox URL {describe(url)} has an unknown option; imap:// takes ?starttls=1."
        )
    return parts.query == "starttls=1"


def _logout(client: imaplib.IMAP4) -> None:
    try:
        client.logout()
    except _IMAP_ERRORS:
        with suppress(OSError):
            client.shutdown()  # logout() leaves the socket open when the server is gone


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ok(typ: str, data: list) -> list:
    if typ != "OK":
        raise imaplib.IMAP4.error(data[-1] if data else typ)
    return data


@contextmanager
def _imap_errors(what: str, secret: str = "") -> Iterator[None]:
    try:
        yield
    except _IMAP_ERRORS as exc:
        said = exc.args[0] if exc.args else None  # imaplib passes on the server's words as bytes
        detail = said.decode(errors="replace") if isinstance(said, bytes) else str(exc)
        if secret:
            detail = detail.replace(secret, "***")
        # No chained cause: an encoding error keeps the whole LOGIN line, password included.
        raise MailboxError(f"{what}: {detail.rstrip('.') or type(exc).__name__}.") from None
