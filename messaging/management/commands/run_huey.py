"""huey's `run_huey`, with SIGTERM as the graceful stop that delivery can see, and a heartbeat.

huey stops at once on SIGTERM by default (process workers are interrupted mid-task). systemd,
Kubernetes and supervisor send SIGTERM, so here SIGTERM sets the consumer's stop flag instead:
each worker finishes the receiver in flight, releases the rest of its claim and exits
(messaging.engine.worker_shutdown). SIGINT (Ctrl-C) stays the immediate stop.

While the consumer runs, a heartbeat thread writes its row ("host:pid") every
MESSAGING_HEARTBEAT_SECONDS (messaging.operations.heartbeats); the row is deleted when the
consumer exits normally. The thread starts after the workers have started (forked), and a
sweep is queued at once (messaging.engine.maintenance).
"""

from django.conf import settings
from huey.contrib.djhuey import HUEY
from huey.contrib.djhuey.management.commands import run_huey

from messaging.engine import queue, worker_shutdown
from messaging.operations import heartbeats


class Command(run_huey.Command):
    def handle(self, *args, **options):
        configured = settings.HUEY.get("consumer", {}) if isinstance(settings.HUEY, dict) else {}
        if options.get("graceful_signal") is None and "graceful_signal" not in configured:
            options["graceful_signal"] = "TERM"
        create_consumer = HUEY.create_consumer
        heartbeat = None

        def create_watched_consumer(**consumer_options):
            consumer = create_consumer(**consumer_options)
            worker_shutdown.watch(consumer.stop_flag)  # before the workers fork or start
            start = consumer.start

            def start_with_heartbeat():
                nonlocal heartbeat
                start()
                heartbeat = heartbeats.HeartbeatThread(
                    workers=consumer.workers, worker_type=consumer.worker_type, periodic=consumer.periodic
                )
                heartbeat.start()
                # Sweep at once rather than at the next minute: what fell due while no
                # consumer ran (scheduled messages, retries, expiries) starts now.
                queue.sweep()

            consumer.start = start_with_heartbeat
            return consumer

        HUEY.create_consumer = create_watched_consumer
        try:
            super().handle(*args, **options)
        finally:
            del HUEY.create_consumer
            if heartbeat is not None:
                heartbeat.stop()
