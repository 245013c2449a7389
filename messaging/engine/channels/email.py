"""The email channel: Django's configured mailer (MAILERS["default"]) is the transport."""

from __future__ import annotations

import smtplib
import ssl
import traceback
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from anymail.exceptions import AnymailAPIError, AnymailError, AnymailRecipientsRefused
from django.conf import settings
from django.core import mail
from django.core.exceptions import ImproperlyConfigured, ObjectDoesNotExist
from django.core.mail import make_msgid
from django.core.mail.handler import DEFAULT_MAILER_ALIAS
from django.utils import translation
from django.utils.html import escape
from django.utils.translation import gettext as _

from messaging import conf
from messaging.compose import attachments as message_attachments
from messaging.engine.channels.base import Channel, ChannelUnavailable, DeliveryResult
from messaging.engine.channels.fast_email import FastEmailMultiAlternatives, OneLineHeader
from messaging.engine.channels.mailer_pool import MailerPool, close_mailer
from messaging.feedback import return_path, signatures
from messaging.models import Message, MessageReceiver
from messaging.preferences import context_types, links

# anymail sends metadata with the email and providers return it in their webhooks.
RECEIVER_METADATA_KEY = "messaging_receiver"
# RFC 8058 §3.1: the one value the List-Unsubscribe-Post header (and the POST's body) may have.
ONE_CLICK = "List-Unsubscribe=One-Click"


def message_id_for(receiver) -> str:
    """A Message-ID stable per receiver, so a re-send is recognisable as the same email."""
    domain = conf.message_id_domain()
    if receiver.pk is None:  # a test send, not a stored receiver
        return make_msgid(domain=domain)
    return signatures.message_id(receiver.pk, receiver.message_id, domain)


def sender_of(receiver) -> tuple[str, str]:
    """(From, Reply-To) of a receiver's email: those chosen for its message, else
    DEFAULT_FROM_EMAIL and none (so engine messages such as sending reports keep the default)."""
    try:
        message = receiver.message
    except ObjectDoesNotExist:  # built without a message, or the message is gone
        return settings.DEFAULT_FROM_EMAIL, ""
    return message.from_address, message.reply_to


@dataclass(frozen=True)
class PreferenceNotice:
    """What lets a recipient change how they get an email of a type they may turn off: the
    one-click unsubscribe headers (RFC 8058) and a footer linking to their preference page
    (none for a digest, whose body has that link already)."""

    headers: dict[str, str]
    footer_plain: str = ""
    footer_html: str = ""

    def plain(self, body: str) -> str:
        return f"{body.rstrip()}\n\n-- \n{self.footer_plain}\n" if self.footer_plain else body

    def html(self, body: str) -> str:
        if not self.footer_html or not body:
            return body
        at = max(body.rfind("</body"), body.rfind("</BODY"))  # else after the end: still shown
        if at < 0:
            return body + self.footer_html
        return body[:at] + self.footer_html + "\n" + body[at:]


class PreferenceNotices:
    """Each receiver's PreferenceNotice, with what it needs read once per delivery run: which
    types are enforced (one query), each message's type (loaded with its sender) and the
    footer's words per language. Signing the links is the only work done per receiver."""

    def __init__(self):
        self._enforced: dict[str, bool] | None = None
        self._types: dict[int, tuple[str, ...]] = {}
        self._footers: dict[str, tuple[str, str]] = {}
        self._links: links.PreferenceLinks | None = None

    def for_receiver(self, receiver) -> PreferenceNotice | None:
        if receiver.pk is None or receiver.user_id is None:  # a test send, or nobody's
            return None
        try:
            message = receiver.message
        except ObjectDoesNotExist:
            return None
        digest = message.context_type == Message.ContextType.DIGEST
        types = self._digest_types(receiver) if digest else self._message_types(message)
        if not types:
            return None
        if self._links is None:
            self._links = links.PreferenceLinks()
        # Two tokens, each good for its own page only: the header's unsubscribes, the footer's manages.
        unsubscribe = self._links.one_click_url(receiver.user_id, types)
        headers = {
            "List-Unsubscribe": OneLineHeader("List-Unsubscribe", f"<{unsubscribe}>"),
            "List-Unsubscribe-Post": ONE_CLICK,
        }
        if digest:
            return PreferenceNotice(headers)
        plain, html = self._footer(receiver.language)
        url = self._links.preferences_url(receiver.user_id)
        return PreferenceNotice(headers, plain.format(url=url), html.format(url=escape(url)))

    def _optional(self, context_type: str) -> bool:
        if self._enforced is None:
            self._enforced = {config.key: config.enforced for config in context_types.all_configs()}
        return not self._enforced.get(context_type, True)  # an unregistered type is enforced

    def _message_types(self, message) -> tuple[str, ...]:
        if message.pk not in self._types:
            optional = self._optional(message.context_type)
            self._types[message.pk] = (message.context_type,) if optional else ()
        return self._types[message.pk]

    def _digest_types(self, receiver) -> tuple[str, ...]:
        listed = (receiver.metadata or {}).get("context_types") or []
        return tuple(t for t in dict.fromkeys(listed) if isinstance(t, str) and self._optional(t))

    def _footer(self, language: str) -> tuple[str, str]:
        """The footer in `language` with "{url}" for the link (braces in translations doubled)."""
        if language not in self._footers:
            with translation.override(language or settings.LANGUAGE_CODE):
                why = _("You get this email because you are registered as a recipient of these messages.")
                change = _("Change how you get these messages (immediately, in a digest or not at all):")
                link = _("Your email settings")
            why, change, link = (text.replace("{", "{{").replace("}", "}}") for text in (why, change, link))
            plain = f"{why}\n{change} {{url}}"
            html = (
                '<hr><p style="font-size:small;color:#555">'
                f'{escape(why)}<br>{escape(change)} <a href="{{url}}">{escape(link)}</a></p>'
            )
            self._footers[language] = (plain, html)
        return self._footers[language]


def build_email(
    receiver, connection=None, attachments: Sequence = (), notice: PreferenceNotice | None = None
) -> FastEmailMultiAlternatives:
    """The receiver's email; `notice` (PreferenceNotices.for_receiver) adds the unsubscribe
    headers and footer. Built at send time, so what is stored stays what the sender wrote."""
    # Building the MIME message is the largest cost of sending with Django 6.1's generic
    # builder; the fast one writes the same bytes (tests/engine/test_fast_email.py) in a tenth of the time.
    headers = {"Message-ID": message_id_for(receiver)}
    if notice is not None:
        headers.update(notice.headers)
    from_email, reply_to = sender_of(receiver)
    envelope_sender = return_path.envelope_sender(receiver)
    if envelope_sender:
        headers["From"] = from_email  # shown; bounces go to the envelope sender
    plain, html = receiver.message_content_plain, receiver.message_content_html
    if notice is not None:
        plain, html = notice.plain(plain), notice.html(html)
    email = FastEmailMultiAlternatives(
        subject=receiver.subject,
        body=plain,
        from_email=envelope_sender or from_email,
        to=[receiver.send_to],
        reply_to=[reply_to] if reply_to else None,
        headers=headers,
        connection=connection,
    )
    if receiver.pk is not None:
        email.metadata = {RECEIVER_METADATA_KEY: str(receiver.pk)}  # read by anymail backends only
    if html:
        email.attach_alternative(html, "text/html")
    # Ready MIME parts, shared by every receiver's email (messaging.compose.attachments).
    for part in attachments:
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
    SMTPServerDisconnected.)"""
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, AnymailError):  # its HTTP errors are OSErrors too (requests' IOError)
        return isinstance(exc, OSError) and getattr(exc, "status_code", None) is None
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


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

    def deliver(self, receivers: Iterable) -> Iterator[tuple[object, DeliveryResult]]:
        senders: dict[int, Message | None] = {}
        attachments: dict[int, list | DeliveryResult] = {}
        notices = PreferenceNotices()
        with self.pool.mailer() as mailer:
            for receiver in receivers:
                _load_sender(receiver, senders)
                parts = _attachment_parts(receiver, attachments)
                yield receiver, self._deliver_one(mailer, receiver, parts, notices)

    def _deliver_one(
        self,
        mailer,
        receiver,
        attachments: Sequence | DeliveryResult = (),
        notices: PreferenceNotices | None = None,
    ) -> DeliveryResult:
        if not receiver.send_to:
            return DeliveryResult(delivered=False, permanent=True, reason=_("The user has no email address."))
        if isinstance(attachments, DeliveryResult):
            return attachments  # a file of the message cannot be read
        try:
            notice = (notices or PreferenceNotices()).for_receiver(receiver)
            email = build_email(receiver, mailer, attachments, notice)
        except ValueError as exc:  # a header that cannot be written (e.g. a line break)
            return classify_exception(exc, receiver.send_to)
        for retry in (False, True):
            _begin_attempt(mailer)
            _open(mailer)
            try:
                sent = mailer.send_messages([email])
            except Exception as exc:  # every failure is a result or ChannelUnavailable, never a crash
                outcome = self._after_failure(mailer, exc, receiver, retry)
                if outcome is None:
                    continue
                return outcome
            if not sent:
                return DeliveryResult(delivered=False, reason=_("The mail backend did not send it."))
            return DeliveryResult.ok(provider_message_id=provider_message_id(email))
        raise AssertionError("unreachable")  # the retry's failure always returns or raises

    def _after_failure(self, mailer, exc, receiver, retried: bool) -> DeliveryResult | None:
        """The result for a failed send, or None to reconnect and try once more."""
        if is_server_problem(exc):
            close_mailer(mailer)
            raise ChannelUnavailable(describe_server_problem(exc)) from exc
        connection_lost = is_connection_problem(exc)
        if connection_lost and getattr(mailer, "payload_sent", False):
            close_mailer(mailer)
            return DeliveryResult(
                delivered=False,
                uncertain=True,
                reason=_("Connection lost after the message was sent, before the server answered: %(error)s")
                % {"error": f"{type(exc).__name__}: {exc}"},
                traceback="".join(traceback.format_exception(exc)),
            )
        if connection_lost:
            close_mailer(mailer)
            if not retried:
                return None
            # A fresh connection failed too: the server is the problem, not this receiver.
            raise ChannelUnavailable(describe_server_problem(exc)) from exc
        return classify_exception(exc, receiver.send_to)


def _load_sender(receiver, loaded: dict[int, Message | None]) -> None:
    """Give a receiver its message's From, Reply-To and context type (for the unsubscribe
    headers), read once per message per batch: the engine claims receivers without their
    message, and reading it for each email would cost a query per receiver."""
    if receiver.message_id is None or MessageReceiver.message.is_cached(receiver):
        return
    if receiver.message_id not in loaded:
        loaded[receiver.message_id] = (
            Message.objects.only("from_email", "reply_to", "context_type")
            .filter(pk=receiver.message_id)
            .first()
        )
    if loaded[receiver.message_id] is not None:
        receiver.message = loaded[receiver.message_id]


def _attachment_parts(receiver, loaded: dict[int, list | DeliveryResult]) -> list | DeliveryResult:
    """The MIME parts of the receiver's message's attachments, looked up once per message in a
    batch (the receivers of a batch share their message); a file that cannot be read fails each
    receiver of the message with the reason."""
    if receiver.message_id is None:
        return []
    if receiver.message_id not in loaded:
        try:
            loaded[receiver.message_id] = message_attachments.email_parts(receiver.message_id)
        except message_attachments.AttachmentUnavailable as exc:
            loaded[receiver.message_id] = DeliveryResult(delivered=False, permanent=True, reason=str(exc))
    return loaded[receiver.message_id]


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
