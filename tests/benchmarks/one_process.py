"""Our engine in one process: message.prepare_and_send(...) on a draft, timed.

Usage (engine.run_one_process calls it): python -m tests.benchmarks.one_process MESSAGE_ID
with DJANGO_SETTINGS_MODULE=tests.benchmarks.settings and MESSAGING_DELIVERY_HELPERS=0, so no
consumer joins in. Django's start-up is outside the time; preparing (rendering, inserting the
receivers) and delivering are inside. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time

import django


def main(message_id: int) -> None:
    django.setup()
    from messaging.compose import composing
    from messaging.models import Message
    from tests.benchmarks.contenders import peak_rss_mb

    message = Message.objects.get(pk=message_id)
    arguments = composing.prepare_arguments(message)  # what the worker passes for a composed message
    started_wall = time.time()
    started = time.perf_counter()
    message.prepare_and_send(**arguments)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {"started_wall": started_wall, "seconds": seconds, "peak_rss_mb": peak_rss_mb(os.getpid())}
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
