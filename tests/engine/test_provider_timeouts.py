"""A provider's HTTP API (django-anymail) that fails after the request went out: the receiver is
flagged `delivery_uncertain` and sent again only after a pause, never retried at once (a second
copy the staff would not know of). A failure before the request went out (connection refused,
TLS handshake) is retried once on a fresh connection and then blocks the message, as with SMTP.

Each test runs a real HTTP server on loopback and points anymail's Mailgun backend at it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import socketserver
import threading
from datetime import timedelta
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

import pytest
from django.utils import timezone

from messaging.engine import delivery
from messaging.models import Message, MessageReceiver
from tests.engine_helpers import SEND_ARGS, LanguageSubject

pytestmark = pytest.mark.django_db

TIMEOUT = 0.5  # anymail's REQUESTS_TIMEOUT: how long each attempt waits for the provider
RECEIVER_FIELD = "v:messaging_receiver"  # anymail's Mailgun form field for our metadata


class ProviderHandler(BaseHTTPRequestHandler):
    """One connection to the stub provider; what it does depends on the server's `mode`."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a real provider's API

    def handle(self):
        with self.server.lock:
            self.server.connections += 1
        if self.server.mode == "silent":  # accept the connection and say nothing (TLS never starts)
            self.server.release.wait()
            return
        super().handle()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.requests.append(form_fields(self.headers.get("Content-Type", ""), body))
        if self.server.mode == "hang":  # took the whole request, never answers
            self.server.release.wait()
            self.close_connection = True
            return
        if self.server.mode == "drop":  # took the whole request, then the connection goes
            self.close_connection = True
            return
        answer = json.dumps({"id": f"<{len(self.server.requests)}@stub.mailgun>", "message": "Queued."})
        if self.server.mode == "garbled":  # took it and said 200, in words anymail cannot read
            answer = "<html>Queued, thank you</html>"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, format, *args):
        pass


class ProviderStub(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, mode: str):
        super().__init__(("127.0.0.1", 0), ProviderHandler)
        self.mode = mode
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.connections = 0
        self.requests: list[dict[str, str]] = []

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request, client_address):
        pass  # the client hung up on a stub that never answers: expected here

    def requests_per_receiver(self) -> collections.Counter:
        return collections.Counter(int(fields[RECEIVER_FIELD]) for fields in self.requests)


@contextlib.contextmanager
def provider(mode: str):
    stub = ProviderStub(mode)
    thread = threading.Thread(target=stub.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        stub.release.set()
        stub.shutdown()
        stub.server_close()


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a posted form (multipart or urlencoded), as anymail sends them."""
    if content_type.startswith("multipart/"):
        parsed = BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        return {
            part.get_param("name", header="content-disposition"): part.get_payload(decode=True).decode()
            for part in parsed.get_payload()
        }
    return {key: values[0] for key, values in parse_qs(body.decode()).items()}


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mailgun_at(settings, url: str) -> None:
    settings.MAILERS = {
        "default": {
            "BACKEND": "anymail.backends.mailgun.EmailBackend",
            "OPTIONS": {"api_key": "k", "api_url": url, "timeout": TIMEOUT},
        }
    }


def send_to(users) -> Message:
    message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
    message.prepare_and_send(LanguageSubject(), **SEND_ARGS)
    message.refresh_from_db()
    return message


def print_counts(capsys, case: str, stub: ProviderStub | None, receivers) -> None:
    with capsys.disabled():  # the counts belong in CI's output, passed or not
        requests = stub.requests_per_receiver() if stub else collections.Counter()
        print(
            f"\nprovider {case}: receivers={len(receivers)} "
            f"connections={stub.connections if stub else 0} requests={sum(requests.values())} "
            f"most_requests_per_receiver={max(requests.values(), default=0)} "
            f"uncertain={sum('delivery_uncertain' in r.status_data for r in receivers)} "
            f"sent={sum(r.status == MessageReceiver.Status.SENT for r in receivers)}"
        )


@pytest.mark.parametrize("mode", ["hang", "drop", "garbled"])
def test_a_provider_that_took_the_request_and_did_not_answer_leaves_each_receiver_uncertain(
    make_user, settings, capsys, mode
):
    """hang: reads the request and never answers (the read times out); drop: reads it and closes
    the connection; garbled: answers 200 with a body that is not the API's JSON. Each way the
    provider may have the email: one request per receiver, none charged, each flagged and
    claimable only after its pause; sent again then, with the flag."""
    users = [make_user() for _ in range(3)]
    with provider(mode) as stub:
        mailgun_at(settings, f"http://127.0.0.1:{stub.port}/v3")
        message = send_to(users)
        receivers = list(message.receivers.order_by("id"))
        print_counts(capsys, mode, stub, receivers)

        assert stub.requests_per_receiver() == {r.pk: 1 for r in receivers}, "retried at once"
        now = timezone.now()
        for receiver in receivers:
            assert receiver.status == MessageReceiver.Status.NOT_SENT
            assert (receiver.sending_success_count, receiver.sending_failed_count) == (0, 0)
            flag = receiver.status_data["delivery_uncertain"]
            assert flag["reason"].startswith("The email provider may have accepted the message")
            assert flag["times"] == 1
            assert receiver.claimed_by == ""
            assert receiver.lease_expires_datetime > now
        message.refresh_from_db()
        assert message.status == Message.Status.SENDING  # not sent, not failed: waiting for the pause
        assert not message.receivers.claimable().exists()
        delivery.deliver_message(message.pk)  # a worker that comes by during the pause sends nothing
        assert len(stub.requests) == 3

        # The pause is over (its end moved into the past rather than waited for) and the
        # provider answers again: each receiver is sent once more, still flagged.
        message.receivers.update(lease_expires_datetime=timezone.now() - timedelta(seconds=1))
        assert message.receivers.claimable().count() == 3
        stub.mode = "answer"
        delivery.deliver_message(message.pk)

    receivers = list(message.receivers.order_by("id"))
    print_counts(capsys, f"{mode} then answering", stub, receivers)
    assert stub.requests_per_receiver() == {r.pk: 2 for r in receivers}
    for receiver in receivers:
        assert receiver.status == MessageReceiver.Status.SENT
        assert receiver.sending_failed_count == 0
        assert "delivery_uncertain" in receiver.status_data  # the second copy is flagged
        assert receiver.provider_message_id.endswith("@stub.mailgun>")
    message.refresh_from_db()
    assert message.status == Message.Status.SENT


def test_a_refused_connection_blocks_the_message_uncharged_and_unflagged(make_user, settings, capsys):
    """Refused before anything was written: retried once at once (nothing to count on a closed
    port; the TLS test below counts the two connections), then the message is blocked."""
    users = [make_user() for _ in range(2)]
    mailgun_at(settings, f"http://127.0.0.1:{closed_port()}/v3")
    message = send_to(users)
    receivers = list(message.receivers.order_by("id"))
    print_counts(capsys, "refusing connections", None, receivers)

    assert message.status == Message.Status.BLOCKED
    assert "NewConnectionError" in message.status_data["blocked"]["reason"]
    for receiver in receivers:
        assert receiver.status == MessageReceiver.Status.NOT_SENT
        assert receiver.sending_failed_count == 0
        assert "delivery_uncertain" not in receiver.status_data
        assert receiver.claimed_by == ""


def test_a_tls_handshake_that_never_completes_is_retried_then_blocks_unflagged(make_user, settings, capsys):
    """The provider's port accepts the connection and never starts TLS: the request was never
    written (urllib3 calls this a read timeout too), so it is retried once on a fresh
    connection, then the message is blocked; nobody is flagged."""
    users = [make_user() for _ in range(2)]
    with provider("silent") as stub:
        mailgun_at(settings, f"https://127.0.0.1:{stub.port}/v3")
        message = send_to(users)
        receivers = list(message.receivers.order_by("id"))
        print_counts(capsys, "silent in the TLS handshake", stub, receivers)

        assert stub.connections == 2  # the attempt and one retry on a fresh connection
        assert stub.requests == []
    assert message.status == Message.Status.BLOCKED
    for receiver in receivers:
        assert receiver.status == MessageReceiver.Status.NOT_SENT
        assert receiver.sending_failed_count == 0
        assert "delivery_uncertain" not in receiver.status_data


def test_a_provider_that_answers_gets_one_request_per_receiver(make_user, settings, capsys):
    users = [make_user() for _ in range(3)]
    with provider("answer") as stub:
        mailgun_at(settings, f"http://127.0.0.1:{stub.port}/v3")
        message = send_to(users)
    receivers = list(message.receivers.order_by("id"))
    print_counts(capsys, "answering", stub, receivers)

    assert message.status == Message.Status.SENT
    assert stub.requests_per_receiver() == {r.pk: 1 for r in receivers}
    for receiver in receivers:
        assert receiver.status == MessageReceiver.Status.SENT
        assert receiver.provider_message_id.endswith("@stub.mailgun>")
        assert "delivery_uncertain" not in receiver.status_data
