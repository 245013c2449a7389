"""Claimed receivers made into what a channel sends (channels.Outgoing).

A channel sends what it is given and reads no database, so everything an email needs beyond
the receiver's own row is decided here, as the engine takes each receiver under its lease:
its message's From, Reply-To and context type, its attachments' MIME parts, the Message-ID,
the VERP envelope sender and, for a type recipients may turn off, the one-click unsubscribe
headers and the preference footer. What receivers of one batch share is read once per batch
(one query per message, not per receiver): this runs once per email on the sending hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.core.mail import make_msgid
from django.utils import translation
from django.utils.html import escape
from django.utils.translation import gettext as _

from messaging import conf
from messaging.compose import attachments as message_attachments
from messaging.engine.channels import Channel, DeliveryResult, Outgoing
from messaging.engine.channels.fast_email import OneLineHeader
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


def outgoing_for(receiver, attachments: Sequence = (), notice: PreferenceNotice | None = None) -> Outgoing:
    """The receiver's email as the channel sends it, from what the receiver holds (its message
    loaded, for the sender); `notice` (PreferenceNotices.for_receiver) adds the unsubscribe
    headers and footer. Made at send time, so what is stored stays what the sender wrote."""
    headers = {"Message-ID": message_id_for(receiver)}
    if notice is not None:
        headers.update(notice.headers)
    from_email, reply_to = sender_of(receiver)
    plain, html = receiver.message_content_plain, receiver.message_content_html
    if notice is not None:
        plain, html = notice.plain(plain), notice.html(html)
    return Outgoing(
        ref=receiver,
        address=receiver.send_to,
        subject=receiver.subject,
        plain=plain,
        html=html,
        from_email=from_email,
        envelope_sender=return_path.envelope_sender(receiver),
        reply_to=reply_to,
        headers=headers,
        attachments=tuple(attachments),
        # Only a stored receiver can be found again from a provider's webhook.
        metadata={RECEIVER_METADATA_KEY: str(receiver.pk)} if receiver.pk is not None else {},
    )


class Unsendable(Exception):
    """A receiver that cannot be sent at all (a file of its message cannot be read): `result`
    is what to record for it, in place of handing it to the channel."""

    def __init__(self, result: DeliveryResult):
        super().__init__(result.reason)
        self.result = result


class OutgoingBuilder:
    """Builds the Outgoing of each receiver of one batch (a claim, or one receiver sent now),
    reading what they share once: each message's sender and context type, its attachments'
    MIME parts and the preference notices' settings. The engine claims receivers without their
    message, and reading it for each email would cost a query per receiver."""

    def __init__(self):
        self._messages: dict[int, Message | None] = {}
        self._attachments: dict[int, tuple | DeliveryResult] = {}
        self._notices = PreferenceNotices()

    def build(self, receiver) -> Outgoing:
        """The receiver's Outgoing; raises Unsendable when its message's attachments cannot be
        read. (A receiver without an address is still built: the channel answers for it.)"""
        self._load_message(receiver)
        parts = self._attachment_parts(receiver)
        if isinstance(parts, DeliveryResult):
            if receiver.send_to:
                raise Unsendable(parts)
            parts = ()
        return outgoing_for(receiver, parts, self._notices.for_receiver(receiver))

    def _load_message(self, receiver) -> None:
        """Give a receiver its message's From, Reply-To and context type (for the unsubscribe
        headers), read once per message per batch."""
        if receiver.message_id is None or MessageReceiver.message.is_cached(receiver):
            return
        if receiver.message_id not in self._messages:
            self._messages[receiver.message_id] = (
                Message.objects.only("from_email", "reply_to", "context_type")
                .filter(pk=receiver.message_id)
                .first()
            )
        if self._messages[receiver.message_id] is not None:
            receiver.message = self._messages[receiver.message_id]

    def _attachment_parts(self, receiver) -> tuple | DeliveryResult:
        """The MIME parts of the receiver's message's attachments, looked up once per message in
        a batch (the receivers of a batch share their message); a file that cannot be read
        fails each receiver of the message with the reason."""
        if receiver.message_id is None:
            return ()
        if receiver.message_id not in self._attachments:
            try:
                parts = tuple(message_attachments.email_parts(receiver.message_id))
            except message_attachments.AttachmentUnavailable as exc:
                parts = DeliveryResult(delivered=False, permanent=True, reason=str(exc))
            self._attachments[receiver.message_id] = parts
        return self._attachments[receiver.message_id]


def prepared(
    receivers: Iterable, unsendable: Callable[[MessageReceiver, DeliveryResult], None]
) -> Iterator[Outgoing]:
    """Each receiver's Outgoing, taken from `receivers` and built only when the channel asks for
    the next (so the engine's lease check as it takes a receiver comes right before its send).
    A receiver that cannot be sent goes to `unsendable` with its result instead."""
    builder = OutgoingBuilder()
    for receiver in receivers:
        try:
            item = builder.build(receiver)
        except Unsendable as exc:
            unsendable(receiver, exc.result)
            continue
        yield item


def deliver_now(channel: Channel, receiver) -> DeliveryResult:
    """One attempt at one receiver (a stored one, or a test send's unsaved one) on `channel`.
    Raises what the channel raises (ChannelUnavailable)."""
    try:
        item = OutgoingBuilder().build(receiver)
    except Unsendable as exc:
        return exc.result
    return next(iter(channel.deliver([item])))[1]
