"""messaging.feedback.mailboxes on real Maildirs and mbox files, and on a real IMAP server (pymap,
in-memory backend) run as a subprocess on loopback."""

from __future__ import annotations

import email
import imaplib
import itertools
import mailbox
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from messaging.feedback import mailboxes
from messaging.feedback.mailboxes import MailboxError, describe, open_mailbox
from messaging.operations.mailsink import free_port
from tests.conftest import wait_until

USER = "bounces@example.org"
# Every character that must be percent-encoded in a URL's user info.
PASSWORD = "s3cret:/?#[]@%! pw"
_folders = itertools.count(1)


def bounce(n: int) -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.example.org\r\nTo: {USER}\r\nSubject: Bounce {n}\r\n"
        f"Message-ID: <bounce-{n}@mx.example.org>\r\n\r\nDelivery to user{n}@example.org failed.\r\n"
    ).encode()


def subjects(box: mailboxes.Mailbox) -> list[str]:
    return [email.message_from_bytes(raw)["Subject"] for _, raw in box.messages()]


def open_error(url: str) -> str:
    with pytest.raises(MailboxError) as raised, open_mailbox(url):
        pass
    return str(raised.value)


def read_and_remove(url: str, remove: set[str]) -> list[str]:
    """Reads every message, twice to see the keys are stable, and removes those with the given subjects."""
    with open_mailbox(url) as box:
        first = list(box.messages())
        assert list(box.messages()) == first
        for key, raw in first:
            if email.message_from_bytes(raw)["Subject"] in remove:
                box.remove(key)
        return [email.message_from_bytes(raw)["Subject"] for _, raw in first]


# Maildir and mbox


def make_maildir(path: Path, messages: list[bytes]) -> str:
    box = mailbox.Maildir(path)
    for n, raw in enumerate(messages):
        message = mailbox.MaildirMessage(raw)
        message.set_subdir("cur" if n % 2 else "new")  # a mail reader may have seen some
        box.add(message)
    return f"maildir://{path}"


def make_mbox(path: Path, messages: list[bytes]) -> str:
    box = mailbox.mbox(path)
    for raw in messages:
        box.add(raw)
    box.close()
    return f"mbox://{path}"


@pytest.mark.parametrize("make", [make_maildir, make_mbox])
def test_local_mailbox_reads_oldest_first_removes_and_keeps_the_rest(tmp_path, make):
    url = make(tmp_path / "bounces", [bounce(n) for n in range(1, 5)])
    expected = [f"Bounce {n}" for n in range(1, 5)]
    assert read_and_remove(url, {"Bounce 1", "Bounce 3"}) == expected
    assert read_and_remove(url, set()) == ["Bounce 2", "Bounce 4"]


def test_maildir_order_is_the_delivery_time_in_the_names(tmp_path):
    """Names start with the delivery time; "10.…" sorts before "9.…" as text."""
    url = make_maildir(tmp_path / "Maildir", [])
    for name, n in [("10.M20P7Q3.mx:2,S", 3), ("9.M999P7Q1.mx", 1), ("10.M5P7Q2.mx", 2)]:
        (tmp_path / "Maildir" / ("cur" if ":" in name else "new") / name).write_bytes(bounce(n))
    with open_mailbox(url) as box:
        assert subjects(box) == ["Bounce 1", "Bounce 2", "Bounce 3"]


def test_mbox_is_locked_while_open(tmp_path):
    url = make_mbox(tmp_path / "mbox", [bounce(1)])
    with open_mailbox(url):
        assert (tmp_path / "mbox.lock").exists()
        with pytest.raises(MailboxError, match="is locked by another program"), open_mailbox(url):
            pass
    assert not (tmp_path / "mbox.lock").exists()


def test_an_error_in_the_callers_block_is_not_wrapped_and_removals_are_kept(tmp_path):
    url = make_mbox(tmp_path / "mbox", [bounce(1), bounce(2)])
    with pytest.raises(KeyError, match="caller"), open_mailbox(url) as box:
        box.remove(next(box.messages())[0])
        raise KeyError("caller")
    with open_mailbox(url) as box:
        assert subjects(box) == ["Bounce 2"]


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("maildir:///nonexistent/Maildir", "The maildir /nonexistent/Maildir does not exist."),
        ("mbox:///nonexistent/mbox", "The mbox file /nonexistent/mbox does not exist."),
        ("mbox://relative/mbox", "A mbox URL needs an absolute path: mbox:///abs/path."),
        ("maildir:///", "Cannot open the maildir /: [Errno 2] No such file or directory: '/cur'."),
        (
            "pop3://u:p@mail.example.org",
            "Unknown bounce mailbox URL scheme 'pop3'; use maildir://, mbox://, imap:// or imaps://.",
        ),
        ("imap://u:p@mail.example.org:x/", "The port in the mailbox URL imap://u:***@mail.example.org:x/"),
        ("imap://mail.example.org/", "needs a user, a password and a host"),
        ("imap://u:p@mail.example.org/?starttls=yes", "has an unknown option; imap:// takes ?starttls=1."),
        ("imap://u:p@mail.example.org/?startls=1", "has an unknown option"),
    ],
)
def test_bad_urls_and_missing_mailboxes(url, error):
    assert error in open_error(url)


@pytest.mark.parametrize(
    ("url", "described"),
    [
        (
            "imaps://bounce%40x.org:p%40ss@mail.x.org:993/INBOX",
            "imaps://bounce%40x.org:***@mail.x.org:993/INBOX",
        ),
        ("imap://u:unencoded@and/slash@mail.x.org/Bounces", "imap://u:***@mail.x.org/Bounces"),
        ("imap://u@mail.x.org/INBOX?starttls=1", "imap://u@mail.x.org/INBOX?starttls=1"),
        ("maildir:///var/mail/bounces", "maildir:///var/mail/bounces"),
    ],
)
def test_describe_hides_the_password(url, described):
    assert describe(url) == described


# IMAP

PYMAP = [sys.executable, "-c", "import sys; from pymap.main import main; sys.exit(main())"]
USER_OPTIONS = ["--demo-user", USER, "--demo-password", PASSWORD]
# A self-signed certificate for the address the tests connect to.
CERTIFICATE = "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test -addext subjectAltName=IP:127.0.0.1"


class ImapServer:
    """pymap with its in-memory backend and one user, as a subprocess on loopback."""

    def __init__(self, log: Path, *options: str) -> None:
        self.port = free_port()
        self.log = log
        self.process = subprocess.Popen(
            [*PYMAP, "--host", "127.0.0.1", "--port", str(self.port), *options, "dict", *USER_OPTIONS],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self._listening, timeout=30, interval=0.05, message="pymap to listen")

    def _listening(self) -> bool:
        assert self.process.poll() is None, f"pymap exited: {self.log.read_text()}"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def url(self, folder: str = "", password: str = PASSWORD, scheme: str = "imap", query: str = "") -> str:
        userinfo = f"{quote(USER, safe='')}:{quote(password, safe='')}"
        return f"{scheme}://{userinfo}@127.0.0.1:{self.port}/{quote(folder)}{query}"

    def client(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def new_folder(self, messages: list[bytes]) -> str:
        """A folder of its own for each test, since the server lives for the whole module."""
        folder = f"Bounces {next(_folders)}"
        with self.client() as client:
            assert client.create(f'"{folder}"')[0] == "OK"
            for raw in messages:
                assert client.append(f'"{folder}"', None, None, raw)[0] == "OK"
        return folder

    def count(self, folder: str) -> int:
        with self.client() as client:
            return int(client.select(f'"{folder}"', readonly=True)[1][0])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def imap(tmp_path_factory) -> Iterator[ImapServer]:
    server = ImapServer(tmp_path_factory.mktemp("pymap") / "pymap.log", "--no-tls")
    yield server
    server.stop()


def test_imap_reads_oldest_first_removes_and_expunges_at_close(imap):
    folder = imap.new_folder([bounce(n) for n in range(1, 5)])
    url = imap.url(folder)
    with open_mailbox(url) as box:
        assert [raw for _, raw in box.messages()] == [bounce(n) for n in range(1, 5)]
    assert read_and_remove(url, {"Bounce 1", "Bounce 3"}) == [f"Bounce {n}" for n in range(1, 5)]
    assert imap.count(folder) == 2
    assert read_and_remove(url, set()) == ["Bounce 2", "Bounce 4"]


def test_imap_folder_defaults_to_inbox(imap):
    with imap.client() as client:
        client.append("INBOX", None, None, bounce(1))
    with open_mailbox(imap.url()) as box:
        assert subjects(box) == ["Bounce 1"]


def test_imap_wrong_password_is_refused_without_showing_it(imap):
    error = open_error(imap.url("INBOX", password="wrong-pw"))
    assert error.startswith(f"The IMAP server 127.0.0.1:{imap.port} refused the login of '{USER}':")
    assert "wrong-pw" not in error and PASSWORD not in error


def test_imap_missing_folder(imap):
    assert open_error(imap.url("Nowhere")).startswith("Cannot open the IMAP folder 'Nowhere' on 127.0.0.1:")


def test_imap_unreachable_server():
    port = free_port()
    error = open_error(f"imap://u:p@127.0.0.1:{port}/INBOX")
    assert error == f"Cannot connect to the IMAP server 127.0.0.1:{port}: [Errno 111] Connection refused."


def test_imap_silent_server_times_out(monkeypatch):
    monkeypatch.setattr(mailboxes, "TIMEOUT_SECONDS", 0.5)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        error = open_error(f"imap://u:p@127.0.0.1:{port}/")
    assert error == f"Cannot connect to the IMAP server 127.0.0.1:{port}: timed out."


def test_imaps_to_a_plain_text_server_is_an_ssl_error(imap):
    error = open_error(imap.url("INBOX", scheme="imaps"))
    assert error.startswith(f"Cannot connect to the IMAP server 127.0.0.1:{imap.port}: [SSL")


@pytest.fixture(scope="module")
def tls_imap(tmp_path_factory) -> Iterator[tuple[ImapServer, Path]]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", *CERTIFICATE.split(), "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
    )
    server = ImapServer(where / "pymap.log", "--cert", str(cert), "--key", str(key))
    yield server, cert
    server.stop()


def test_imap_starttls_with_a_trusted_certificate(tls_imap, monkeypatch):
    server, cert = tls_imap
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    folder = server.new_folder([bounce(1)])
    with open_mailbox(server.url(folder, query="?starttls=1")) as box:
        assert subjects(box) == ["Bounce 1"]


def test_imap_starttls_refuses_an_untrusted_certificate(tls_imap):
    server, _ = tls_imap
    error = open_error(server.url("INBOX", query="?starttls=1"))
    assert error.startswith(f"STARTTLS failed with the IMAP server 127.0.0.1:{server.port}:")
    assert "certificate verify failed" in error
