from django.core.management.base import BaseCommand

from messaging.services import maintenance


class Command(BaseCommand):
    help = "Delete sent or failed messages that have no receivers left (drafts are kept)."

    def handle(self, *args, **options):
        deleted = maintenance.delete_messages_without_receivers()
        self.stdout.write(f"Deleted {deleted} message(s) without receivers.")
