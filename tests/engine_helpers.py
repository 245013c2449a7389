from django.db import connection
from django.utils.translation import get_language

from messaging.engine import channels
from messaging.engine.channels import DeliveryResult
from messaging.models import Message
from messaging.subject_generator import SubjectTextGenerator


class LanguageSubject(SubjectTextGenerator):
    """A subject that says which language was active when it was made."""

    def get_subject_text(self) -> str:
        return f"{self.kwargs.get('prefix', 'Subject')} [{get_language()}]"


class RaisingSubject(SubjectTextGenerator):
    def get_subject_text(self) -> str:
        raise RuntimeError("subject generator exploded")


class FixedSubject(SubjectTextGenerator):
    def get_subject_text(self) -> str:
        return self.kwargs["text"]


SEND_ARGS = {"template_name": "tests/email.html", "template_context": {"title": "News"}}


class ScriptedChannel(channels.Channel):
    """Answers from a script per address; records the message's status as it delivers. Takes
    the engine's Outgoing items like any channel. `before_each(receiver)`, if set, runs before
    each receiver is answered (to pause, cancel or move the clock in the middle of a delivery
    run)."""

    message_type = "email"

    def __init__(self, answers=None, default: DeliveryResult | None = None):
        self.answers = answers or {}
        self.default = default or DeliveryResult.ok()
        self.seen_statuses = []
        self.delivered = []
        self.attempted = []
        self.before_each = None

    def deliver(self, items):
        first = True
        for item in items:
            # A test double may look inside the engine's ref (the receiver); a real channel never does.
            receiver = item.ref
            if first:
                self.seen_statuses.append(Message.objects.get(pk=receiver.message_id).status)
                first = False
            if self.before_each is not None:
                self.before_each(receiver)
            self.attempted.append(item.address)
            result = self.answers.get(item.address, self.default)
            if result.delivered:
                self.delivered.append(item.address)
            yield item, result


def short_lock_timeout(seconds: float) -> None:
    """This thread's connection gives up waiting for a lock after `seconds` (SQLite's busy
    timeout, PostgreSQL's lock_timeout): a writer that proves nobody holds a lock for long."""
    connection.ensure_connection()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
        else:
            cursor.execute(f"SET lock_timeout = '{int(seconds * 1000)}ms'")
