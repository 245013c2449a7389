"""The email channel: Django's configured mailer (MAILERS["default"]) is the transport.

It sends the Outgoing items it is given (messaging.engine.outgoing prepares them) and reads no
database: only messaging.conf and this package are imported from the project.
"""

from __future__ import annotations

import smtplib
import ssl
import traceback
from collections.abc import Iterable, Iterator

import requests
import urllib3
from anymail.exceptions import AnymailAPIError, AnymailError, AnymailRecipientsRefused
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.handler import DEFAULT_MAILER_ALIAS
from django.utils.translation import gettext as _

from messaging.engine.channels.base import Channel, ChannelUnavailable, DeliveryResult, Outgoing
from messaging.engine.channels.fast_email import FastEmailMultiAlternatives
from messaging.engine.channels.mailer_pool import MailerPool, close_mailer


def build_email(outgoing: Outgoing, connection=None) -> FastEmailMultiAlternatives:
    """The email of an Outgoing item, as the mailer sends it."""
    # Building the MIME message is the largest cost of sending with Django 6.1's generic
    # builder; the fast one writes the same bytes (tests/engine/test_fast_email.py) in a tenth of the time.
    headers = dict(outgoing.headers)
    if outgoing.envelope_sender:
        headers["From"] = outgoing.from_email  # shown; bounces go to the envelope sender
    email = FastEmailMultiAlternatives(
        subject=outgoing.subject,
        body=outgoing.plain,
        from_email=outgoing.envelope_sender or outgoing.from_email,
        to=[outgoing.address],
        reply_to=[outgoing.reply_to] if outgoing.reply_to else None,
        headers=headers,
        connection=connection,
    )
    if outgoing.metadata:
        email.metadata = dict(outgoing.metadata)  # read by anymail backends only
    if outgoing.html:
        email.attach_alternative(outgoing.html, "text/html")
    # Ready MIME parts, shared by every receiver's email (messaging.compose.attachments).
    for part in outgoing.attachments:
        email.attach(part)
    return email


def provider_message_id(email) -> str:
    """The id an anymail backend's provider gave the email ("" for SMTP: our Message-ID is it)."""
    status = getattr(email, "anymail_status", None)
    message_id = getattr(status, "message_id", None)
    # A set when recipients got different ids; we send one recipient per email.
    return "" if message_id is None or isinstance(message_id, set) else str(message_id)


def classify_exception(exc: BaseException, address: str) -> DeliveryResult:
    """Temporary (4xx, timeouts, connection trouble) or permanent (5xx, bad address)."""
    tb = "".join(traceback.format_exception(exc))
    if isinstance(exc, AnymailError):
        return _provider_result(exc, tb)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()), (None, b""))
        return _smtp_result(code, text, tb)
    if isinstance(exc, smtplib.SMTPResponseException):
        return _smtp_result(exc.smtp_code, exc.smtp_error, tb)
    if isinstance(exc, ValueError):
        reason = _("Invalid email address %(address)r: %(error)s") % {"address": address, "error": exc}
        return DeliveryResult(delivered=False, permanent=True, reason=reason, traceback=tb)
    return DeliveryResult(
        delivered=False, permanent=False, reason=f"{type(exc).__name__}: {exc}", traceback=tb
    )


def _provider_result(exc: AnymailError, tb: str) -> DeliveryResult:
    """An ESP's API refused this email: the address (rejected, invalid, suppressed on their side)
    or the request is wrong for good; overload, outages and network trouble pass."""
    reason = " ".join(str(exc).split())[:1000]
    if isinstance(exc, AnymailRecipientsRefused):
        return DeliveryResult(delivered=False, permanent=True, reason=reason, traceback=tb)
    status = getattr(exc, "status_code", None)
    permanent = isinstance(exc, AnymailAPIError) and status is not None and 400 <= status < 500
    permanent = permanent and status not in (408, 409, 429)
    return DeliveryResult(delivered=False, permanent=permanent, code=status, reason=reason, traceback=tb)


def _smtp_result(code, text, tb: str) -> DeliveryResult:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    reason = f"{code} {text}".strip()
    return DeliveryResult(
        delivered=False, permanent=bool(code and code >= 500), code=code, reason=reason, traceback=tb
    )


def attempt_seconds(mailer) -> float:
    """The time one attempt may take: the mailer's timeout (Django's EMAIL_TIMEOUT), which our
    SMTP backend applies to the whole attempt, not to each reply."""
    timeout = getattr(mailer, "timeout", None)
    return float(timeout) if isinstance(timeout, int | float) and timeout > 0 else 30.0


def is_server_problem(exc: BaseException) -> bool:
    """Failures that say nothing about the receiver and will hit every receiver alike."""
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return exc.smtp_code >= 500
    if isinstance(exc, AnymailAPIError) and getattr(exc, "status_code", None) in (401, 403):
        return True  # the provider refuses our API key: nothing will go out
    return isinstance(
        exc,
        smtplib.SMTPAuthenticationError
        | smtplib.SMTPNotSupportedError
        | smtplib.SMTPHeloError
        | ssl.SSLCertVerificationError
        | ImproperlyConfigured,  # e.g. an anymail backend without its API key
    )


def is_connection_problem(exc: BaseException) -> bool:
    """The connection failed (dropped, reset, timed out, 421 closing): no answer about this
    receiver was given. (smtplib reports a socket error while reading a reply as
    SMTPServerDisconnected.) For a provider's HTTP API only a failure before the request went
    out counts: after that the provider may have the email (provider_may_have_it)."""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, AnymailError):
        return is_provider_transport_failure(exc) and provider_request_not_sent(exc)
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


# requests raises these before a connection is up: an unusable URL, or connecting timed out.
_FAILED_BEFORE_SENDING = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.ConnectTimeout,
)


def is_provider_transport_failure(exc: BaseException) -> bool:
    """An anymail backend's HTTP call failed without an HTTP answer (no status code): anymail
    raises a class that is both AnymailRequestsAPIError and requests' own exception."""
    return (
        isinstance(exc, AnymailError)
        and isinstance(exc, requests.RequestException)
        and getattr(exc, "status_code", None) is None
    )


def provider_request_not_sent(exc: BaseException) -> bool:
    """The HTTP request certainly never reached the provider: the URL was unusable, or the
    failure came while connecting (refused, unresolvable name, connect timeout) or in the TLS
    handshake, both of which end before the first byte of the request is written. Anything
    else (a read timeout, a connection aborted or reset, a broken chunked answer, a failure we
    do not know) may have come after the provider took the request."""
    if isinstance(exc, _FAILED_BEFORE_SENDING):
        return True
    return any(
        isinstance(cause, urllib3.exceptions.ConnectTimeoutError) or _raised_in_tls_handshake(cause)
        for cause in _causes(exc)
    )


def provider_may_have_it(exc: BaseException) -> bool:
    """The provider's API call failed after the request may have reached it: no answer came
    (timed out or dropped after the request was written), or it answered 2xx in a form anymail
    could not read. Retrying at once could deliver twice; the receiver is uncertain."""
    if not isinstance(exc, AnymailError):
        return False
    if is_provider_transport_failure(exc):
        return not provider_request_not_sent(exc)
    status = getattr(exc, "status_code", None)
    return status is not None and 200 <= status < 300


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """exc and everything it wraps: chained exceptions, urllib3's MaxRetryError.reason and
    ProxyError.original_error, and requests' exceptions, which carry urllib3's in args."""
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),
            getattr(current, "original_error", None),
            *current.args,
        ]
        pending += [item for item in wrapped if isinstance(item, BaseException)]


def _raised_in_tls_handshake(exc: BaseException) -> bool:
    """Whether exc came out of ssl's handshake (refused certificate, wrong protocol, a server
    silent until the timeout). urllib3 reports a handshake timeout as a ReadTimeoutError, so
    the frame is what tells it apart from a timeout waiting for the answer."""
    return any(
        frame.f_code.co_name == "do_handshake" for frame, _line in traceback.walk_tb(exc.__traceback__)
    )


def describe_server_problem(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return _("The mail server refused our login: %(error)s") % {"error": _smtp_text(exc)}
    if isinstance(exc, ssl.SSLError):
        return _("TLS with the mail server failed: %(error)s") % {"error": exc}
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return _("The mail server refused our sender address: %(error)s") % {"error": _smtp_text(exc)}
    if isinstance(exc, smtplib.SMTPResponseException):
        return _("The mail server refused the session: %(error)s") % {"error": _smtp_text(exc)}
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return _("The mail server does not support what the settings ask for: %(error)s") % {"error": exc}
    if isinstance(exc, AnymailAPIError | ImproperlyConfigured):
        return _("The email provider refuses our requests: %(error)s") % {"error": " ".join(str(exc).split())}
    return _("Cannot connect to the mail server: %(error)s") % {"error": f"{type(exc).__name__}: {exc}"}


def _smtp_text(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
    return f"{exc.smtp_code} {text}".strip()


class EmailChannel(Channel):
    message_type = "email"
    rate_limit_mailer = DEFAULT_MAILER_ALIAS

    def __init__(self):
        self.pool = MailerPool(DEFAULT_MAILER_ALIAS)

    def seconds_per_receiver(self) -> float:
        # One attempt, and one more on a fresh connection if the first one's connection dropped.
        return 2 * attempt_seconds(mail.mailers.default)

    def deliver(self, items: Iterable[Outgoing]) -> Iterator[tuple[Outgoing, DeliveryResult]]:
        with self.pool.mailer() as mailer:
            for item in items:
                yield item, self._deliver_one(mailer, item)

    def _deliver_one(self, mailer, item: Outgoing) -> DeliveryResult:
        if not item.address:
            return DeliveryResult(delivered=False, permanent=True, reason=_("The user has no email address."))
        try:
            email = build_email(item, mailer)
        except ValueError as exc:  # a header that cannot be written (e.g. a line break)
            return classify_exception(exc, item.address)
        for retry in (False, True):
            _begin_attempt(mailer)
            _open(mailer)
            try:
                sent = mailer.send_messages([email])
            except Exception as exc:  # every failure is a result or ChannelUnavailable, never a crash
                outcome = self._after_failure(mailer, exc, item.address, retry)
                if outcome is None:
                    continue
                return outcome
            if not sent:
                return DeliveryResult(delivered=False, reason=_("The mail backend did not send it."))
            return DeliveryResult.ok(provider_message_id=provider_message_id(email))
        raise AssertionError("unreachable")  # the retry's failure always returns or raises

    def _after_failure(self, mailer, exc, address: str, retried: bool) -> DeliveryResult | None:
        """The result for a failed send, or None to reconnect and try once more."""
        if is_server_problem(exc):
            close_mailer(mailer)
            raise ChannelUnavailable(describe_server_problem(exc)) from exc
        connection_lost = is_connection_problem(exc)
        if connection_lost and getattr(mailer, "payload_sent", False):
            close_mailer(mailer)
            reason = _("Connection lost after the message was sent, before the server answered: %(error)s")
            return _uncertain(reason, exc)
        if provider_may_have_it(exc):
            # Not retried at once: if the provider took the first request, a second would be
            # a second copy, unflagged. The engine flags the receiver and sends it again later.
            close_mailer(mailer)
            reason = _(
                "The email provider may have accepted the message but gave no answer we could read: %(error)s"
            )
            return _uncertain(reason, exc)
        if connection_lost:
            close_mailer(mailer)
            if not retried:
                return None
            # A fresh connection failed too: the server is the problem, not this receiver.
            raise ChannelUnavailable(describe_server_problem(exc)) from exc
        return classify_exception(exc, address)


def _uncertain(reason: str, exc: BaseException) -> DeliveryResult:
    """The message may have reached the server or provider: not charged, flagged, resent later."""
    error = " ".join(f"{type(exc).__name__}: {exc}".split())
    return DeliveryResult(
        delivered=False,
        uncertain=True,
        reason=reason % {"error": error},
        traceback="".join(traceback.format_exception(exc)),
    )


def _begin_attempt(mailer) -> None:
    begin = getattr(mailer, "begin_attempt", None)
    if begin is not None:
        begin(attempt_seconds(mailer))


def _open(mailer) -> None:
    """Open (or keep) the connection; a server that cannot be reached, or refuses our login or
    TLS, makes the whole channel unavailable rather than failing the receiver."""
    try:
        mailer.open()
        smtp = getattr(mailer, "connection", None)
        if hasattr(smtp, "ehlo_or_helo_if_needed"):
            smtp.ehlo_or_helo_if_needed()  # a server that drops us at EHLO is down, not the receiver's fault
    except Exception as exc:  # smtplib, ssl and socket errors share no base class but OSError
        close_mailer(mailer)
        raise ChannelUnavailable(describe_server_problem(exc)) from exc
