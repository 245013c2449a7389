from django.core.management.base import BaseCommand, CommandError

from messaging import conf
from messaging.feedback import bounces, mailboxes


class Command(BaseCommand):
    help = (
        "Read bounce messages (delivery reports, auto-replies) from the bounce mailbox, record them "
        "on their receivers, suppress addresses that bounced for good, and remove them from the "
        "mailbox. What cannot be read is kept for staff (Suppressions and bounces page)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--mailbox",
            help="maildir:///path, mbox:///path or imap(s)://user:pass@host/INBOX "
            "(default: MESSAGING_BOUNCE_MAILBOX).",
        )

    def handle(self, *args, mailbox=None, **options):
        url = mailbox or conf.bounce_mailbox()
        if not url:
            raise CommandError("No bounce mailbox: set MESSAGING_BOUNCE_MAILBOX or pass --mailbox.")
        try:
            run = bounces.read_mailbox(url)
        except mailboxes.MailboxError as exc:
            raise CommandError(str(exc)) from exc
        counts = ", ".join(f"{what}: {n}" for what, n in sorted(run.counts.items())) or "nothing to read"
        self.stdout.write(f"{mailboxes.describe(url)}: {counts}.")
