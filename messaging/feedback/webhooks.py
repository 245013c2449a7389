"""Providers' delivery webhooks, through django-anymail: its views check the webhook secret
and signatures and normalise each provider's events; the `tracking` signal hands them to us.

A provider's URL exists only when it is configured (conf.tracking_webhooks), and a post reaches
anymail only once webhook_security let it through: no secret, a wrong one, a missing signing key
or an old signature get 401 and change nothing.

Each email we send carries the receiver's id in anymail's metadata, and the provider's message
id is stored on the receiver, so an event finds its receiver by either (or by our signed
Message-ID, which some providers echo). An event about another address than the receiver's is
kept for staff, never applied."""

from __future__ import annotations

import functools
import json
import logging

from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.signals import AnymailTrackingEvent, tracking
from anymail.urls import urlpatterns as anymail_urlpatterns
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.db import DatabaseError
from django.dispatch import receiver
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.urls import URLPattern
from django.utils import timezone

from messaging import conf
from messaging.engine.outgoing import RECEIVER_METADATA_KEY
from messaging.feedback import reports as feedback
from messaging.feedback import webhook_security
from messaging.feedback.signatures import receiver_id_from_message_id
from messaging.models import MessageReceiver

logger = logging.getLogger(__name__)
_SUFFIX = "_tracking_webhook"


def providers() -> set[str]:
    """Every provider anymail has a tracking webhook for, by its anymail name ("mailgun", ...)."""
    return {
        pattern.name.removesuffix(_SUFFIX)
        for pattern in anymail_urlpatterns
        if pattern.name and pattern.name.endswith(_SUFFIX)
    }


def tracking_urlpatterns() -> list[URLPattern]:
    """anymail's tracking webhook URLs (not its inbound ones: we receive no mail that way), each
    guarded: 404 unless configured, 401 unless authenticated, and no body makes a 500."""
    return [
        URLPattern(
            pattern.pattern,
            _guarded(pattern.callback, pattern.name.removesuffix(_SUFFIX)),
            pattern.default_args,
            pattern.name,
        )
        for pattern in anymail_urlpatterns
        if pattern.name and pattern.name.endswith(_SUFFIX)
    ]


def _guarded(view, provider: str):
    @functools.wraps(view)
    def guarded(request, *args, **kwargs):
        if provider not in conf.tracking_webhooks():
            raise Http404("No such webhook.")  # read per request, so a setting change needs no restart
        refusal = webhook_security.refusal(request, provider)
        if refusal:
            return _unauthorized(request, refusal)
        try:
            return view(request, *args, **kwargs)
        except AnymailWebhookValidationFailure as exc:  # anymail's own check of auth or signature
            return _unauthorized(request, str(exc))
        except ImproperlyConfigured as exc:  # e.g. a signing key anymail cannot use
            logger.error("Webhook %s cannot verify posts: %s", request.path, exc)
            return _unauthorized(request, "the webhook cannot check posts here")
        except (SuspiciousOperation, DatabaseError):
            raise  # our database down: 500, and the provider retries
        except Exception as exc:  # anymail parses provider JSON with KeyError/ValueError/TypeError
            logger.warning("Malformed %s webhook post: %s: %s", request.path, type(exc).__name__, exc)
            return HttpResponseBadRequest("Malformed webhook post.")

    return guarded


def _unauthorized(request, reason: str) -> HttpResponse:
    logger.warning("Refused a post to %s: %s.", request.path, reason)
    response = HttpResponse("Not authorised.", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Basic realm="delivery webhooks"'
    return response


@receiver(tracking, dispatch_uid="messaging.feedback.webhooks.record_tracking_event")
def record_tracking_event(sender, event: AnymailTrackingEvent, esp_name: str, **kwargs) -> None:
    found = find_receiver(event)
    if found is None:
        # Another application's mail on the same provider account, or a receiver deleted
        # since: acknowledged (a retry would not help), not stored.
        logger.info(
            "%s %s event for an unknown email (%s); ignored.", esp_name, event.event_type, event.message_id
        )
        return
    report = _as_feedback(event, esp_name)
    if not feedback.is_about(report, found):
        feedback.keep_unmatched(
            provider=esp_name,
            sender=report.recipient,
            subject=report.event_type,
            reason=feedback.not_about_reason(report, found),
            raw=json.dumps(_payload(event.esp_event), default=str).encode(),
        )
        return
    feedback.record(report, found)


def find_receiver(event: AnymailTrackingEvent) -> MessageReceiver | None:
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    receiver_id = _as_id(metadata.get(RECEIVER_METADATA_KEY))
    receivers = MessageReceiver.objects.only("id", "send_to", "message_id")
    if receiver_id is not None:
        return receivers.filter(pk=receiver_id).first()
    message_id = str(event.message_id or "").replace("\0", "")[:255]
    if not message_id:
        return None
    own = receiver_id_from_message_id(message_id)
    if own is not None:
        return receivers.filter(pk=own).first()
    return receivers.filter(provider_message_id=message_id).first()


def _as_id(value) -> int | None:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 2**63 else None


def _as_feedback(event: AnymailTrackingEvent, esp_name: str) -> feedback.Feedback:
    return feedback.Feedback(
        provider=esp_name,
        event_type=event.event_type,
        occurred=event.timestamp or timezone.now(),
        event_id=str(event.event_id or ""),
        recipient=str(event.recipient or ""),
        reject_reason=str(event.reject_reason or ""),
        description=str(event.description or ""),
        mta_response=str(event.mta_response or ""),
        permanent=bounce_is_permanent(event, esp_name),
        payload=_payload(event.esp_event),
    )


# What a provider's own event says about a bounce, where anymail's normalised one does not keep
# it: anymail reports Postmark's SoftBounce, Brevo's soft_bounce and SendGrid's "blocked" bounces
# as "bounced" like hard ones. None: judge from the server's reply (feedback.Feedback).
_PERMANENCE = {
    "Postmark": lambda raw, event: (
        raw.get("Type") in ("HardBounce", "BadEmailAddress") if raw.get("Type") else None
    ),
    "Brevo": lambda raw, event: {"hard_bounce": True, "soft_bounce": False}.get(str(raw.get("event"))),
    "SendGrid": lambda raw, event: raw.get("type") != "blocked" if raw.get("type") else None,
    "Amazon SES": lambda raw, event: {"Permanent": True, "Transient": False, "Undetermined": False}.get(
        str(event.description or "").partition(":")[0]
    ),
}

_PERMANENCE["SendinBlue"] = _PERMANENCE["Brevo"]  # Brevo's former name and webhook URL


def bounce_is_permanent(event: AnymailTrackingEvent, esp_name: str) -> bool | None:
    judge = _PERMANENCE.get(esp_name)
    if event.event_type != "bounced" or judge is None or not isinstance(event.esp_event, dict):
        return None
    return judge(event.esp_event, event)


def _payload(esp_event):
    """anymail's raw event: parsed JSON, or a QueryDict for form posts."""
    if hasattr(esp_event, "lists"):
        return dict(esp_event.lists())
    return esp_event if isinstance(esp_event, dict | list) else {"event": str(esp_event)}
