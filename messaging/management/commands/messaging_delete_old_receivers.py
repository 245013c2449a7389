from django.core.management.base import BaseCommand, CommandError

from messaging.operations import retention


class Command(BaseCommand):
    help = (
        "Delete message receivers created more than DAYS days ago that are sent or error, of sent or "
        "error messages (receivers that may still be sent, and messages in progress, are kept)."
    )

    def add_arguments(self, parser):
        parser.add_argument("days", type=int, help="Age in days; receivers older than this go.")

    def handle(self, *args, days, **options):
        if days < 0:
            raise CommandError("DAYS must be zero or more.")
        deleted = retention.delete_old_receivers(days)
        self.stdout.write(f"Deleted {deleted} receiver(s) older than {days} day(s).")
