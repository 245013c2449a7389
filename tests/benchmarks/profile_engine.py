#!/usr/bin/env python
"""Profile our engine's prepare_and_send at N receivers, in one process (pyinstrument or cProfile).

    python tests/benchmarks/profile_engine.py [--n 10000] [--cprofile]

Runs on the benchmark database (run `tests/benchmarks/run.py` first: it creates the users) and
its own smtp-sink. The huey task that lets other consumers join is not enqueued, so the whole
delivery runs in this process. Writes VAR_DIR/bench/profile.html (pyinstrument) or prints the top
functions by own time (cProfile).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.engine import BENCH_DIR  # noqa: E402
from tests.benchmarks.sink import SmtpSink  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()

    sink = SmtpSink(BENCH_DIR / "profile-sink").start()
    os.environ.update(EMAIL_URL=sink.url, DJANGO_SETTINGS_MODULE="tests.benchmarks.settings")
    try:
        import django

        django.setup()
        from django.contrib.auth import get_user_model

        from messaging.compose import composing
        from messaging.engine import queue, sending
        from messaging.models import Message
        from tests.benchmarks.content import CONTENT

        ids = list(
            get_user_model()
            .objects.filter(username__startswith="bench")
            .order_by("pk")
            .values_list("pk", flat=True)[: args.n]
        )
        if len(ids) < args.n:
            raise SystemExit(f"Only {len(ids)} benchmark users; run tests/benchmarks/run.py first.")
        message = Message.objects.create(
            composed_content=CONTENT, virtual_message_receivers={"chosen_user_ids": ids, "user_ids": ids}
        )
        queue.deliver_message = lambda message_id: None  # no helpers: everything in this process
        arguments = composing.prepare_arguments(message)
        started = time.perf_counter()
        if args.cprofile:
            import cProfile
            import pstats

            profile = cProfile.Profile()
            profile.runcall(sending.prepare_and_send, message, **arguments)
            elapsed = time.perf_counter() - started
            stats = pstats.Stats(profile)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(40)
        else:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001)
            profiler.start()
            sending.prepare_and_send(message, **arguments)
            profiler.stop()
            elapsed = time.perf_counter() - started
            (BENCH_DIR / "profile.html").write_text(profiler.output_html())
            print(profiler.output_text(unicode=False, color=False, show_all=False, time="percent_of_total"))
        message.refresh_from_db()
        print(
            f"N={args.n:,}: {message.status} in {elapsed:.1f} s "
            f"({args.n / elapsed:.0f} msgs/s, prepared in {message.status_data.get('prepared_seconds')} s)"
        )
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
