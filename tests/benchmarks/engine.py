"""Our engine as the benchmark runs it: real `manage.py run_huey` consumers, or prepare_and_send
in one process; and the check that every receiver reached the sink exactly once."""

from __future__ import annotations

import bisect
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from tests.benchmarks.contenders import peak_rss_mb, process_tree

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(os.environ.get("VAR_DIR", ROOT / "var")) / "bench"
SETTINGS = "tests.benchmarks.settings"
CONSUMER_ENV = ("HUEY_WORKERS", "HUEY_WORKER_TYPE", "MESSAGING_DELIVERY_HELPERS")
# delivery._run_lanes logs each increase of a delivery's lanes at INFO; the benchmark settings'
# log format puts the process id first, so each worker's count can be told apart.
LANES_RE = re.compile(r"pid=(\d+) .*Message (\d+): delivering over (\d+) lanes\.")
STARTED: list[subprocess.Popen] = []  # every consumer this run started, to prove they are gone


class Sink(Protocol):
    def arrivals(self) -> list[tuple[float, str]]: ...

    def clear(self) -> None: ...


def parse_config(config: str) -> tuple[int, int]:
    """A setup written <consumers>x<workers>, e.g. 1x2 (the settings default), 2x1."""
    match = re.fullmatch(r"(\d+)x(\d+)", config)
    if not match:
        raise SystemExit(f"Bad consumer config {config!r}; use <consumers>x<workers>, e.g. 2x1")
    return int(match[1]), int(match[2])


def config_label(config: str) -> str:
    consumers, workers = parse_config(config)
    plural = {True: "s", False: ""}
    return f"{consumers} consumer{plural[consumers > 1]} x {workers} process worker{plural[workers > 1]}"


def start_consumers(config: str, env: dict, tag: str) -> list[subprocess.Popen]:
    """`manage.py run_huey` with no options: the consumer settings come from HUEY["consumer"]
    (process workers, initial_delay 0.05, max_delay 1.0, periodic tasks on). Only the worker
    count differs from the default, through HUEY_WORKERS, and the delivery helpers are set so
    that every worker of every consumer can join in (the default 1 is right for 1x2 and 2x1)."""
    consumers, workers = parse_config(config)
    consumer_env = {k: v for k, v in env.items() if k not in CONSUMER_ENV}
    consumer_env["DJANGO_SETTINGS_MODULE"] = SETTINGS
    if workers != 2:
        consumer_env["HUEY_WORKERS"] = str(workers)
    if consumers * workers - 1 != 1:
        consumer_env["MESSAGING_DELIVERY_HELPERS"] = str(consumers * workers - 1)
    started = []
    for i in range(consumers):
        log = consumer_log(tag, i).open("wb")
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_huey"],
            cwd=ROOT,
            env=consumer_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        STARTED.append(process)
    return started


def consumer_log(tag: str, index: int) -> Path:
    return BENCH_DIR / f"consumer-{tag}-{index}.log"


def lanes_logged(log_text: str, message_id: int) -> list[int]:
    """The most lanes each worker process logged for message_id, most first. A worker that
    logged none delivered over its first lane only, or not at all."""
    most: dict[str, int] = {}
    for pid, message, lanes in LANES_RE.findall(log_text):
        if int(message) == message_id:
            most[pid] = max(most.get(pid, 0), int(lanes))
    return sorted(most.values(), reverse=True)


def stop_consumers(consumers: list[subprocess.Popen]) -> None:
    for process in consumers:
        process.terminate()
    for process in consumers:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def kill_leftovers() -> None:
    for process in STARTED:
        if process.poll() is None:
            process.kill()


def new_draft(user_ids: list[int]):
    """A draft for user_ids with the benchmark content: the compose page saves chosen_user_ids;
    user_ids is what prepare_and_send reads when called directly."""
    from messaging.models import Message
    from tests.benchmarks.content import CONTENT

    receivers = {"chosen_user_ids": user_ids, "user_ids": user_ids}
    return Message.objects.create(composed_content=CONTENT, virtual_message_receivers=receivers)


def wait_until_done(message, consumers: list[subprocess.Popen], deadline: float) -> None:
    from messaging.models import Message

    while True:
        message.refresh_from_db(fields=["status", "status_data"])
        if message.status in (Message.Status.SENT, Message.Status.ERROR):
            return
        if any(p.poll() is not None for p in consumers):
            raise RuntimeError(f"a consumer exited; see {BENCH_DIR}/consumer-*.log")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"message {message.pk} not done in time: {message.status}")
        time.sleep(0.05)


def run_ours(
    user_ids: list[int], config: str, env: dict, sink: Sink, tag: str, rate_limit: int | None = None
) -> dict:
    """Consumers started and idle; then the clock runs from the Send button's call
    (composing.queue_send: recipients resolved, message queued, its task enqueued) to the
    message's final status, i.e. every receiver's result recorded. Preparation (rendering,
    inserting receivers) is inside that time.

    The message stays a draft until the clock starts: a queued message without a task would
    look lost to the consumers' sweeper, which would start it before the clock does."""
    from huey.contrib.djhuey import HUEY

    from messaging.compose import composing

    n = len(user_ids)
    message = new_draft(user_ids)
    HUEY.flush()  # nothing left over from an earlier run may compete
    run_tag = f"{tag}-{n}-{config}"
    consumers = start_consumers(config, env, tag=run_tag)
    try:
        time.sleep(2.0)  # consumers import Django and start polling; not part of the time
        load_before = os.getloadavg()[0]
        started_wall = time.time()
        started = time.perf_counter()
        composing.queue_send(message)
        # Slower than 20/s (or a third of the rate limit) is a failure, not a figure.
        wait_until_done(message, consumers, started + max(600, n / 20, 3 * n / (rate_limit or n)))
        elapsed = time.perf_counter() - started
        # The largest process of the consumers (each worker is a child process of its consumer).
        rss = max(peak_rss_mb(pid) for process in consumers for pid in process_tree(process.pid))
    finally:
        stop_consumers(consumers)
    logs = "".join(consumer_log(run_tag, i).read_text(errors="replace") for i in range(len(consumers)))
    return {
        "config": config,
        "seconds": elapsed,
        "msgs_per_s": n / elapsed,
        "worker_peak_rss_mb": rss,
        "lanes": lanes_logged(logs, message.pk),
        "load_1min_before": load_before,
        "load_1min_after": os.getloadavg()[0],
        **outcome(message),
        **delivery_check(message.pk, n, sink, started_wall, rate_limit),
    }


def run_one_process(user_ids: list[int], env: dict, sink: Sink) -> dict:
    """message.prepare_and_send in a process of its own, no consumer running and no helper
    task queued (MESSAGING_DELIVERY_HELPERS=0), timed around the call: preparation included."""
    n = len(user_ids)
    message = new_draft(user_ids)
    load_before = os.getloadavg()[0]
    out = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.one_process", str(message.pk)],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": SETTINGS, "MESSAGING_DELIVERY_HELPERS": "0"},
        capture_output=True,
        text=True,
        timeout=max(600, n / 10),
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"prepare_and_send in one process failed:\n{out.stdout}\n{out.stderr}")
    timing = json.loads(out.stdout.strip().splitlines()[-1])
    message.refresh_from_db()
    return {
        "config": "one process",
        "seconds": timing["seconds"],
        "msgs_per_s": n / timing["seconds"],
        "worker_peak_rss_mb": timing["peak_rss_mb"],
        "lanes": lanes_logged(out.stderr, message.pk),
        "load_1min_before": load_before,
        "load_1min_after": os.getloadavg()[0],
        **outcome(message),
        **delivery_check(message.pk, n, sink, timing["started_wall"]),
    }


def outcome(message) -> dict:
    from messaging.engine.status import receiver_counts

    data = message.status_data
    prepared = data.get("prepared_seconds")
    return {
        "message_id": message.pk,
        "status": message.status,
        "receiver_counts": receiver_counts(message.pk),
        "prepared_seconds": prepared,
        "prepare_receivers_per_s": data["receiver_count"] / prepared if prepared else None,
    }


def delivery_check(
    message_id: int, n: int, sink: Sink, started_wall: float, rate_limit: int | None = None
) -> dict:
    """Every receiver's Message-ID at the sink exactly once, and when the first and last
    arrived, counted from the start of the clock (and, given a limit, how the arrivals kept
    to it). Empties the sink for the next run."""
    from messaging import conf
    from messaging.feedback import signatures
    from messaging.models import MessageReceiver

    arrivals = sink.arrivals()
    sink.clear()
    domain = conf.message_id_domain()
    expected = {
        signatures.message_id(pk, message_id, domain)
        for pk in MessageReceiver.objects.filter(message_id=message_id).values_list("pk", flat=True)
    }
    seen: dict[str, int] = {}
    for _, message_id_header in arrivals:
        seen[message_id_header] = seen.get(message_id_header, 0) + 1
    duplicates = sorted(mid for mid, count in seen.items() if mid in expected and count > 1)
    missing = len(expected - seen.keys())
    stamps = sorted(stamp for stamp, _ in arrivals)
    return {
        "delivered": len(arrivals),
        "exactly_once": not duplicates and not missing and len(arrivals) == n,
        "duplicates": len(duplicates),
        "duplicate_examples": duplicates[:5],
        "missing": missing,
        "unexpected": len(arrivals) - sum(seen[mid] for mid in expected if mid in seen),
        "first_email_s": stamps[0] - started_wall if stamps else None,
        "last_email_s": stamps[-1] - started_wall if stamps else None,
        # The delivery rate alone: from the first email at the sink to the last (preparation,
        # which comes before the first, excluded).
        "send_msgs_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None,
    } | ({"rate": rate_windows(stamps, rate_limit)} if rate_limit else {})


def rate_windows(stamps: list[float], limit: int) -> dict:
    """Over the sorted arrival times: for each arrival, how many arrived in the second starting
    with it; the largest such count, how many of those seconds exceeded the limit, and the
    achieved rate over the whole send."""
    counts = [bisect.bisect_left(stamps, t + 1.0, lo=i) - i for i, t in enumerate(stamps)]
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
    achieved = (len(stamps) - 1) / span if span else None
    return {
        "limit_per_s": limit,
        "max_in_1s_window": max(counts, default=0),
        "windows_over_limit": sum(1 for c in counts if c > limit),
        "windows": len(counts),
        "achieved_per_s": achieved,
        "achieved_vs_limit": achieved / limit if achieved else None,
        "span_s": span,
    }
