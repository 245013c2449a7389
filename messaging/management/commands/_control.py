"""The shared shape of messaging_pause, messaging_resume and messaging_cancel. Statuses are
named as the status page's badges name them (messaging.tracking.status_labels)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from messaging.engine import controlling
from messaging.models import Message
from messaging.tracking import status_labels


class ControlCommand(BaseCommand):
    action = ""  # a key of controlling.ACTIONS

    def add_arguments(self, parser):
        parser.add_argument("message_ids", nargs="+", type=int, metavar="MESSAGE_ID")
        parser.add_argument("--by", metavar="USERNAME", help="Recorded in the audit trail as who did it.")

    def handle(self, *args, message_ids, by=None, **options):
        actor = None
        if by:
            actor = get_user_model().objects.filter(username=by).first()
            if actor is None:
                raise CommandError(f"No user named {by!r}.")
        messages = {m.pk: m for m in Message.objects.filter(pk__in=message_ids)}
        missing = sorted(set(message_ids) - messages.keys())
        if missing:
            raise CommandError(f"No message with id(s): {', '.join(map(str, missing))}; nothing was changed.")
        refused = 0
        for pk in message_ids:
            try:
                message = controlling.ACTIONS[self.action](messages[pk], actor=actor)
            except controlling.ControlRefused as refusal:
                refused += 1
                self.stderr.write(f"#{pk}: {status_labels.refusal_text(refusal)}")
            else:
                self.stdout.write(f"#{pk}: {status_labels.current_message_label(message).text}")
        if refused:
            raise CommandError(f"{refused} message(s) were left as they were.", returncode=1)
