"""huey's `run_huey`, with SIGTERM as the graceful stop that delivery can see.

huey stops at once on SIGTERM by default (process workers are interrupted mid-task). systemd,
Kubernetes and supervisor send SIGTERM, so here SIGTERM sets the consumer's stop flag instead:
each worker finishes the receiver in flight, releases the rest of its claim and exits
(messaging.worker_shutdown). SIGINT (Ctrl-C) stays the immediate stop.
"""

from django.conf import settings
from huey.contrib.djhuey import HUEY
from huey.contrib.djhuey.management.commands import run_huey

from messaging import worker_shutdown


class Command(run_huey.Command):
    def handle(self, *args, **options):
        configured = settings.HUEY.get("consumer", {}) if isinstance(settings.HUEY, dict) else {}
        if options.get("graceful_signal") is None and "graceful_signal" not in configured:
            options["graceful_signal"] = "TERM"
        create_consumer = HUEY.create_consumer

        def create_watched_consumer(**consumer_options):
            consumer = create_consumer(**consumer_options)
            worker_shutdown.watch(consumer.stop_flag)  # before the workers fork or start
            return consumer

        HUEY.create_consumer = create_watched_consumer
        try:
            super().handle(*args, **options)
        finally:
            del HUEY.create_consumer
