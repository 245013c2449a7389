from django.core.management.base import BaseCommand, CommandError

from messaging.engine import resending
from messaging.models import Message


class Command(BaseCommand):
    help = (
        "Queue every failed or error receiver again (never one already sent). "
        "Without --message, every message; a worker then delivers them."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--message",
            type=int,
            action="append",
            dest="message_ids",
            help="Only this message id (repeatable).",
        )

    def handle(self, *args, message_ids=None, **options):
        messages = Message.objects.exclude(status__in=[Message.Status.DRAFT])
        if message_ids:
            messages = messages.filter(pk__in=message_ids)
            missing = set(message_ids) - set(messages.values_list("pk", flat=True))
            if missing:
                raise CommandError(f"No sent message with id(s): {', '.join(map(str, sorted(missing)))}.")
        total = touched = 0
        for message in messages.iterator():
            queued = resending.resend_failed(message)
            total += queued
            touched += bool(queued)
        self.stdout.write(f"Queued {total} failed receiver(s) of {touched} message(s) for resending.")
