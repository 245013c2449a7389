from django.core.management.base import BaseCommand

from messaging.operations import retention


class Command(BaseCommand):
    help = (
        "Delete sent or error messages that have no receivers left (drafts and messages in progress "
        "are kept; each deletion is recorded in the audit trail)."
    )

    def handle(self, *args, **options):
        deleted = retention.delete_messages_without_receivers()
        self.stdout.write(f"Deleted {deleted} message(s) without receivers.")
