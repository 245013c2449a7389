import time

from django.conf import settings
from django.core.management.base import BaseCommand

from messaging.operations.mailsink import LATER_BOUNCE, REFUSALS, MailSink


class Command(BaseCommand):
    help = (
        "Run a local SMTP sink for development: every accepted email is stored as a .eml file "
        "under var/mail/. Addresses at tempfail.example get 451 and at bounce.example get 550, "
        "so failures can be tried out; mail to bounce-later.example is accepted and bounced later "
        "(a delivery report in the bounce Maildir, as a real relay sends one)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8025)
        parser.add_argument(
            "--dir",
            default=str(settings.MESSAGING_MAIL_DIR),
            help="Where to store .eml files (default: %(default)s).",
        )
        parser.add_argument(
            "--bounce-dir",
            default=str(settings.MESSAGING_MAIL_DIR.parent / "bounces"),
            help="The Maildir that delivery reports go to (default: %(default)s).",
        )

    def handle(self, *args, host, port, dir, bounce_dir, **options):
        sink = MailSink(host=host, port=port, mail_dir=dir, bounce_dir=bounce_dir).start()
        refusals = ", ".join(f"*{suffix} → {reply[:3]}" for suffix, reply in REFUSALS.items())
        self.stdout.write(
            f"Mail sink listening on {sink.url}; storing mail in {dir} ({refusals}; "
            f"*{LATER_BOUNCE} → a delivery report in {bounce_dir})."
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            sink.stop()
            self.stdout.write(f"Mail sink stopped after receiving {len(sink.received)} email(s).")
