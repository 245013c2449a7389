#!/usr/bin/env python
"""The sending benchmark (`make bench`, `make bench QUICK=1`).

One sink per --latencies value, each in a process of its own on a free loopback port:

- 0: the instant sink, Postfix's smtp-sink, answering at once (arrival times from its dump files);
- any other: tests/benchmarks/latency_sink.py, answering the end of DATA after that many ms,
  as a distant relay does.

For each sink and N (--sizes on the instant sink, --latency-sizes on the others):

- ours: one `manage.py run_huey` consumer as configured by default (2 process workers,
  MESSAGING_DELIVERY_HELPERS=1, MESSAGING_SMTP_CONNECTIONS sessions per worker), timed from
  queuing the send (the Send button) to every receiver's result recorded: preparation
  (rendering, inserting receivers) included; --repeats times (median, min, max, spread), and
  the lanes each worker settled on, read from its log;
- ours 1 proc (instant sink): message.prepare_and_send in one process, preparation included;
- ours 2 consumers (first sink, largest N within its cap): two `run_huey`, one worker each;
- post_office: django-post_office's send_many + send_queued_mail_until_done with as many
  processes as ours has workers, its default threads per process, on the content ours
  rendered; enqueue timed apart from sending; --repeats-post-office times; on the instant sink
  also with one process (PO 1 proc, against ours 1 proc);
- ceiling: instant, prebuilt messages over smtplib, one connection per process, as many
  processes as ours has workers; latency, connections x 1000 / latency_ms;
- for every run of ours, every receiver's Message-ID must reach the sink exactly once.

A contender other than ours is not run above its cap (--max-n; post_office at 100 ms sends
~58/s, so 100,000 would take ~29 minutes): its cell says "not run", and no ratio is computed
against another N. Then the rate-limit check (MESSAGING_RATE_LIMITS 20/s, two consumers with one
worker each, on the latency sink at each --rate-latencies), with every consumer stopped the live
status page for a 100,000-receiver message, and issue 31's targets (tests/benchmarks/targets.py),
each met, missed, not run or not measured.

Honours DATABASE_URL / REDIS_URL, but always on a separate database (VAR_DIR/bench/bench.sqlite3
or `<its name>_bench`) and huey name, so development data is untouched. Prints the tables and
writes VAR_DIR/bench/results.json; with --save also docs/benchmarks/<date>-<database>.json,
the file a README table quotes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.benchmarks import report, status_page, targets  # noqa: E402
from tests.benchmarks.contenders import latency_ceiling, run_post_office, run_raw  # noqa: E402
from tests.benchmarks.engine import (  # noqa: E402
    BENCH_DIR,
    config_label,
    kill_leftovers,
    parse_config,
    run_one_process,
    run_ours,
)
from tests.benchmarks.latency_sink import LatencySink  # noqa: E402
from tests.benchmarks.sink import SmtpSink  # noqa: E402

# The instant sink: 10 and 100,000 for the time to the first email, 10,000 and 100,000 for the
# workers' memory; the latency sinks: the sizes issue 31 states its targets at.
SIZES = [10, 300, 5_000, 10_000, 100_000]
LATENCY_SIZES = [300, 5_000, 100_000]
QUICK_SIZES = [10, 300, 5_000]
LATENCIES = [0.0, 20.0, 100.0]  # ms before the reply to DATA; 0: the instant sink
QUICK_LATENCIES = [0.0, 100.0]
# N above which a contender is not run (ours always is); "repeats": above it every contender
# runs once. post_office sends ~60/s at 100 ms, ~150/s at best: 100,000 would take 11 to 29
# minutes; the raw ceiling's rate is flat from 10,000 (2 minutes at 100,000).
MAX_N = {
    "post_office": 5_000,
    "one_process": 10_000,
    "scale_out": 10_000,
    "ceiling": 10_000,
    "repeats": 5_000,
}
REPEATS = 5  # the spread is over five runs
RATE_LIMIT = 20  # per second, MESSAGING_RATE_LIMITS["default"]
RATE_N = 500  # 25 s at the limit
DOCS_DIR = ROOT / "docs" / "benchmarks"


# --------------------------------------------------------------------------- database


def reset_database() -> str:
    """A fresh benchmark database; returns its vendor ("sqlite" or "postgresql")."""
    from tests.benchmarks import settings as bench_settings

    db = bench_settings.DATABASES["default"]
    for name in ("huey.sqlite3", "huey.sqlite3-wal", "huey.sqlite3-shm"):
        (BENCH_DIR / name).unlink(missing_ok=True)
    if db["ENGINE"].endswith("sqlite3"):
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(db["NAME"] + suffix).unlink(missing_ok=True)
        return "sqlite"
    import psycopg

    name = db["NAME"]
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise SystemExit(f"Refusing to drop a database named {name!r}.")
    with psycopg.connect(
        dbname="postgres",
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        host=db.get("HOST") or None,
        port=db.get("PORT") or None,
        autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return "postgresql"


def migrate(env: dict) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "tests.benchmarks.settings_post_office"},
        check=True,
    )


def create_users(n: int) -> list[int]:
    """n users: en and nb profiles alternating, some blank or unsupported (→ default language),
    every fifth with a primary notification address of its own."""
    from django.contrib.auth import get_user_model

    from messaging.models import MessagingProfile, UserEmail

    user_model = get_user_model()
    users = [
        user_model(
            username=f"bench{i:06d}",
            email=f"bench{i}@example.org",
            first_name=("Åse" if i % 2 else "Anne") + str(i),
            last_name="Ås" if i % 2 else "Smith",
            password="!",
        )
        for i in range(n)
    ]
    user_model.objects.bulk_create(users, batch_size=2000)
    ids = list(
        user_model.objects.filter(username__startswith="bench").order_by("pk").values_list("pk", flat=True)
    )
    languages = ["en", "nb", "nb", "en", "", "nb", "en", "nb", "de", "en"]
    MessagingProfile.objects.bulk_create(
        [MessagingProfile(user_id=pk, languagecode=languages[i % 10]) for i, pk in enumerate(ids)],
        batch_size=2000,
    )
    UserEmail.objects.bulk_create(
        [
            UserEmail(user_id=pk, email=f"primary{i}@example.org", is_primary=True)
            for i, pk in enumerate(ids)
            if i % 5 == 0
        ],
        batch_size=2000,
    )
    return ids


# --------------------------------------------------------------------------- email building


def email_build_speed(count: int = 500) -> dict:
    """ms per two-part message: Django's EmailMultiAlternatives vs FastEmailMultiAlternatives,
    message(policy=SMTP).as_bytes() as the SMTP backend calls it; and the whole build of an
    email (the engine's Outgoing, then the channel's build_email) for a receiver of an enforced
    type (no preference notice) and of an optional one (signed List-Unsubscribe headers and the
    footer added), like for like."""
    import email.policy

    from django.core.mail import EmailMultiAlternatives

    from messaging.engine.channels.email import build_email
    from messaging.engine.channels.fast_email import FastEmailMultiAlternatives
    from messaging.engine.outgoing import PreferenceNotices, outgoing_for
    from messaging.engine.rendering import html_to_text
    from messaging.models import Message, MessageReceiver
    from tests.benchmarks.content import NB_BODY

    html = NB_BODY.replace("{{ recipient_name }}", "Åse Ås")
    plain = html_to_text(html)
    result = {}
    for label, cls in (("django", EmailMultiAlternatives), ("fast", FastEmailMultiAlternatives)):
        started = time.perf_counter()
        for i in range(count):
            mail = cls(
                subject="Påminnelse: frist æøå for Åse",
                body=plain,
                to=[f"user{i}@example.org"],
                headers={"Message-ID": f"<receiver-{i}.message-1@messaging.local>"},
            )
            mail.attach_alternative(html, "text/html")
            mail.message(policy=email.policy.SMTP).as_bytes()
        result[f"{label}_ms"] = (time.perf_counter() - started) / count * 1000
    for label, context_type in (("build_email", "deadline_moved"), ("build_email_notice", "other")):
        message = Message(pk=1, context_type=context_type)
        receivers = [
            MessageReceiver(
                pk=i,
                message=message,
                user_id=i,
                language="nb",
                send_to=f"user{i}@example.org",
                subject="Påminnelse: frist æøå for Åse",
                message_content_plain=plain,
                message_content_html=html,
            )
            for i in range(1, count + 1)
        ]
        notices = PreferenceNotices()
        started = time.perf_counter()
        for receiver in receivers:
            mail = build_email(outgoing_for(receiver, notice=notices.for_receiver(receiver)))
            mail.message(policy=email.policy.SMTP).as_bytes()
        result[f"{label}_ms"] = (time.perf_counter() - started) / count * 1000
    started = time.perf_counter()
    for _ in range(count // 4):
        html_to_text(html)
    result["html2text_ms"] = (time.perf_counter() - started) / (count // 4) * 1000
    return result


# --------------------------------------------------------------------------- runs


def step(label: str, run: Callable[[], dict]) -> dict:
    """One contender's run, announced, and its wall time (set-up included) shown after it."""
    print(f"{label} ...", end=" ", flush=True)
    started = time.perf_counter()
    result = run()
    print(f"{time.perf_counter() - started:.0f} s", flush=True)
    return result


def profile_key(latency_ms: float) -> str:
    """The results' key for a sink: "instant", or e.g. "latency_100ms"."""
    return "instant" if latency_ms == 0 else f"latency_{latency_ms:g}ms"


def within(args: argparse.Namespace, contender: str, n: int) -> bool:
    cap = args.max_n[contender]
    return cap is None or n <= cap


def not_run(args: argparse.Namespace, contender: str) -> str:
    return f"not run: N above --max-n {contender}={args.max_n[contender]:,}"


def repeat_stats(runs: list[dict], key: str = "msgs_per_s") -> dict:
    """Median, min, max and spread = (max - min) / median of one figure over repeated runs."""
    values = [run[key] for run in runs]
    median = statistics.median(values)
    return {
        "runs": len(values),
        "median": median,
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / median if median else None,
    }


def repeated(label: str, times: int, run: Callable[[int], dict]) -> tuple[dict, list[dict], dict]:
    """`run(i)` `times` times: the run whose msgs/s is nearest the median (the row's figures
    other than msgs/s are that run's), every run, and their statistics."""
    runs = [
        step(f"{label} (run {i + 1}/{times})" if times > 1 else label, partial(run, i)) for i in range(times)
    ]
    stats = repeat_stats(runs)
    middle = min(runs, key=lambda r: abs(r["msgs_per_s"] - stats["median"]))
    return middle, runs, stats


def run_size(latency: float, n: int, ids: list[int], sink, env: dict, args: argparse.Namespace) -> dict:
    """Every contender at one N on one sink."""
    from messaging import conf

    consumers, workers = parse_config(args.consumers)
    processes = consumers * workers
    key = profile_key(latency)
    at = f"{key} N={n:,}:"
    times = args.repeats if within(args, "repeats", n) else 1
    row: dict = {}

    def ours(i: int) -> dict:
        return run_ours(ids, args.consumers, env, sink, tag=f"{key}-r{i}")

    row["ours"], row["ours_runs"], row["ours_stats"] = repeated(f"{at} ours", times, ours)
    if latency == 0 and within(args, "one_process", n):
        row["ours_one_process"] = step(f"{at} ours in one process", lambda: run_one_process(ids, env, sink))
    if args.scale_out and n == args.scale_out_n and latency == args.latencies[0]:
        row["ours_2_consumers"] = step(
            f"{at} ours {args.scale_out}", lambda: run_ours(ids, args.scale_out, env, sink, tag=key)
        )
    message_id = row["ours"]["message_id"]
    if args.no_post_office:
        row["post_office_not_run"] = "not run: --no-post-office"
    elif not within(args, "post_office", n):
        row["post_office_not_run"] = not_run(args, "post_office")
    else:

        def post_office(i: int) -> dict:
            return run_post_office(message_id, n, env, sink, processes)

        po_times = args.repeats_post_office if within(args, "repeats", n) else 1
        row["post_office"], row["post_office_runs"], row["post_office_stats"] = repeated(
            f"{at} post_office", po_times, post_office
        )
        if "ours_one_process" in row:
            row["post_office_one_process"] = step(
                f"{at} post_office in one process", lambda: run_post_office(message_id, n, env, sink, 1)
            )
    if latency != 0:
        row["ceiling"] = latency_ceiling(processes * conf.get("MESSAGING_SMTP_CONNECTIONS"), latency)
    elif within(args, "ceiling", n):
        row["ceiling"] = step(f"{at} raw ceiling", lambda: run_raw(message_id, n, sink, processes))
    else:
        row["ceiling_not_run"] = not_run(args, "ceiling")
    return row | ratios(row)


def ratios(row: dict) -> dict:
    """Ours against the others at the same N: medians where runs were repeated."""
    ours = row["ours_stats"]["median"]
    send_rates = [r["send_msgs_per_s"] for r in row["ours_runs"] if r.get("send_msgs_per_s")]
    send_only = statistics.median(send_rates) if send_rates else None
    ceiling = row.get("ceiling", {}).get("msgs_per_s")
    one, po_one = row.get("ours_one_process"), row.get("post_office_one_process")
    return {
        "ours_send_msgs_per_s_median": send_only,
        "ours_vs_post_office": ours / row["post_office_stats"]["median"] if "post_office" in row else None,
        "ours_one_process_vs_post_office_one_process": (
            one["msgs_per_s"] / po_one["msgs_per_s"] if one and po_one else None
        ),
        "ours_vs_ceiling": ours / ceiling if ceiling else None,
        "ours_send_vs_ceiling": send_only / ceiling if ceiling and send_only else None,
    }


def start_sink(latency_ms: float):
    if latency_ms == 0:
        return SmtpSink(BENCH_DIR / "sink").start()
    return LatencySink(BENCH_DIR / f"latency-sink-{latency_ms:g}", latency_ms).start()


def sink_description(latency_ms: float, args: argparse.Namespace) -> tuple[str, str]:
    """The sink and the ceiling, as the table states them."""
    from messaging import conf

    consumers, workers = parse_config(args.consumers)
    connections = conf.get("MESSAGING_SMTP_CONNECTIONS")
    if latency_ms == 0:
        return (
            "Postfix smtp-sink, instant replies",
            f"raw smtplib, prebuilt messages (no preparation), {consumers * workers} processes "
            "x 1 connection",
        )
    return (
        f"aiosmtpd sink, {latency_ms:g} ms before the reply to DATA",
        f"{consumers * workers} workers x {connections} connections x 1000 / {latency_ms:g} ms "
        "(no preparation, no SMTP round trips but DATA's)",
    )


def run_profile(latency: float, users: list[int], env: dict, args: argparse.Namespace, results: dict) -> None:
    sink_text, ceiling_text = sink_description(latency, args)
    result = results["profiles"][profile_key(latency)] = {
        "latency_ms": latency,
        "sink": sink_text,
        "ceiling": ceiling_text,
        "sizes": {},
    }
    sink = start_sink(latency)
    try:
        profile_env = {**env, "EMAIL_URL": sink.url}
        for n in args.sizes if latency == 0 else args.latency_sizes:
            result["sizes"][str(n)] = run_size(latency, n, users[:n], sink, profile_env, args)
            save(results)
    finally:
        sink.stop()


def run_rate_checks(users: list[int], env: dict, latencies: list[float], n: int) -> dict:
    """Two consumers with one worker each under MESSAGING_RATE_LIMITS, the limit read from the
    latency sink's arrival times, for each sink latency."""
    return {
        f"{latency:g}": step(
            f"rate limit {RATE_LIMIT}/s, latency {latency:g} ms, N={n:,}: ours 2x1",
            partial(rate_check, users[:n], env, latency),
        )
        for latency in latencies
    }


def rate_check(user_ids: list[int], env: dict, latency_ms: float) -> dict:
    sink = LatencySink(BENCH_DIR / f"rate-sink-{latency_ms:g}", latency_ms).start()
    limits = json.dumps({"default": {"per_second": RATE_LIMIT}})
    try:
        rate_env = {**env, "EMAIL_URL": sink.url, "MESSAGING_RATE_LIMITS": limits}
        return run_ours(user_ids, "2x1", rate_env, sink, tag="rate", rate_limit=RATE_LIMIT)
    finally:
        sink.stop()


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="N = 10, 300 and 5,000 on the instant and the 100 ms sink"
    )
    parser.add_argument("--sizes", help="comma-separated N values (overrides --quick)")
    parser.add_argument(
        "--latency-sizes", help=f"N values on the latency sinks; default {LATENCY_SIZES}, or --sizes if given"
    )
    parser.add_argument(
        "--latencies",
        "--latency-ms",
        help="sinks, in order: ms before the reply to DATA, 0 for the instant sink (smtp-sink); "
        "default 0,20,100, quick 0,100",
    )
    parser.add_argument(
        "--repeats", type=int, help=f"runs of ours per sink and N; default {REPEATS}, quick 1"
    )
    parser.add_argument(
        "--repeats-post-office", type=int, default=1, help="runs of post_office per sink and N"
    )
    parser.add_argument(
        "--max-n",
        default="",
        help="caps on N per contender, e.g. post_office=10000,ceiling=none; contenders: "
        + ", ".join(f"{k} (default {v})" for k, v in MAX_N.items())
        + "; above 'repeats' every contender runs once",
    )
    parser.add_argument(
        "--consumers",
        default="1x2",
        help="ours: <consumers>x<process workers>; 1x2 is the settings default (one run_huey)",
    )
    parser.add_argument("--scale-out", default="2x1", help="the 'ours 2 consumers' setup ('' to skip)")
    parser.add_argument(
        "--rate-latencies", help="latency sinks (ms) for the rate check; default 100,0, quick 100; '' skips"
    )
    parser.add_argument("--rate-n", type=int, default=RATE_N)
    parser.add_argument("--no-post-office", action="store_true")
    parser.add_argument("--status-repeat", type=int, default=50, help="requests per status view (0: skip)")
    parser.add_argument(
        "--status-n",
        type=int,
        default=status_page.STATUS_N,
        help="receivers of the status page's message (1000000 on PostgreSQL: about a minute to insert)",
    )
    parser.add_argument(
        "--status-watchers", type=int, default=status_page.WATCHERS, help="staff polling at once (0: skip)"
    )
    parser.add_argument(
        "--save", action="store_true", help=f"also write {DOCS_DIR.relative_to(ROOT)}/<date>-<db>.json"
    )
    args = parser.parse_args()
    if args.latency_sizes:
        args.latency_sizes = numbers(args.latency_sizes, int)
    else:
        args.latency_sizes = (
            numbers(args.sizes, int) if args.sizes else (QUICK_SIZES if args.quick else LATENCY_SIZES)
        )
    args.sizes = numbers(args.sizes, int) if args.sizes else (QUICK_SIZES if args.quick else SIZES)
    default_latencies = QUICK_LATENCIES if args.quick else LATENCIES
    args.latencies = numbers(args.latencies, float) if args.latencies else default_latencies
    if any(latency < 0 for latency in args.latencies):
        raise SystemExit("--latencies: 0 (the instant sink) or a delay in ms")
    if args.rate_latencies is None:
        args.rate_latencies = "100" if args.quick else "100,0"
    args.rate_latencies = numbers(args.rate_latencies, float)
    if args.repeats is None:
        args.repeats = 1 if args.quick else REPEATS
    if args.repeats < 1 or args.repeats_post_office < 1:
        raise SystemExit("--repeats and --repeats-post-office: 1 or more")
    args.max_n = parse_caps(args.max_n)
    parse_config(args.consumers)
    first = args.sizes if args.latencies and args.latencies[0] == 0 else args.latency_sizes
    args.scale_out_n = max((n for n in first if within(args, "scale_out", n)), default=None)
    return args


def numbers(text: str, kind: type) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def parse_caps(text: str) -> dict[str, int | None]:
    """--max-n: `contender=N` (or `=none`, no cap), comma-separated, over the defaults."""
    caps = dict(MAX_N)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in caps or not value:
            raise SystemExit(f"--max-n: {item!r}; use e.g. post_office=5000 with one of {', '.join(MAX_N)}")
        caps[name] = None if value.lower() == "none" else int(value)
    return caps


def benchmark_env() -> dict:
    """The environment of every process the benchmark starts. A rate limit set outside would
    throttle every contender: only the rate check sets one."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    for name in ("HUEY_IMMEDIATE", "MESSAGING_RATE_LIMITS"):
        env.pop(name, None)
    return env


def settings_that_matter(args: argparse.Namespace) -> dict:
    from django.conf import settings

    from messaging import conf

    consumers, workers = parse_config(args.consumers)
    return {
        "ours": config_label(args.consumers),
        "worker_type": settings.HUEY["consumer"]["worker_type"],
        "delivery_helpers": conf.delivery_helpers(),
        "smtp_connections_per_worker": conf.get("MESSAGING_SMTP_CONNECTIONS"),
        "total_smtp_connections": consumers * workers * conf.get("MESSAGING_SMTP_CONNECTIONS"),
        "post_office_processes": consumers * workers,
        "latencies_ms": args.latencies,
        "sizes": args.sizes,
        "latency_sizes": args.latency_sizes,
        "repeats": args.repeats,
        "repeats_post_office": args.repeats_post_office,
        "max_n": args.max_n,
        "rate_limit": {"default": {"per_second": RATE_LIMIT}},
        "rate_check": "2 consumers x 1 process worker, MESSAGING_DELIVERY_HELPERS=1",
        "durability": report.durability(),
    }


def save(results: dict, path: Path = BENCH_DIR / "results.json") -> None:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def setup_database(env: dict) -> str:
    """A fresh, migrated benchmark database and an empty queue; returns the database vendor."""
    database = reset_database()
    migrate(env)
    import django

    django.setup()
    from huey.contrib.djhuey import HUEY

    HUEY.flush()
    return database


def measure_status(results: dict, users: list[int], args: argparse.Namespace) -> dict:
    """The status page on the --status-n-receiver message ours sent, else on a bulk-inserted one
    (still sending, so its page polls)."""
    big = results["profiles"].get("instant", {}).get("sizes", {}).get(str(args.status_n), {})
    sent = big.get("ours", {}).get("message_id")
    status_id, source = status_page.status_message(users, sent, args.status_n)
    status_page.settle_database()
    measured = status_page.measure_status(status_id, args.status_repeat, args.status_watchers)
    return measured | {"source": source, "n": args.status_n}


def new_results(args: argparse.Namespace, load_before: float) -> dict:
    """What the run is, where and on what: everything but the figures."""
    return {
        "date": datetime.date.today().isoformat(),
        **report.command_line(),
        "git": report.git_state(),
        "machine": report.machine(load_before),
        "settings": settings_that_matter(args),
        "email_build": email_build_speed(),
        "profiles": {},
    }


def write_results(results: dict, database: str, to_docs: bool) -> None:
    save(results)
    print(f"\nwrote {BENCH_DIR / 'results.json'}")
    if to_docs:
        DOCS_DIR.mkdir(parents=True, exist_ok=True)
        path = DOCS_DIR / f"{results['date']}-{database}.json"
        save(results, path)
        print(f"wrote {path.relative_to(ROOT)}")


def main() -> None:
    args = parse_args()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    for old in BENCH_DIR.glob("consumer-*.log"):
        old.unlink()
    wall = time.perf_counter()
    load_before = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, 1-min load average {load_before:.2f}", flush=True)
    if load_before > 0.5:
        print(f"warning: load average {load_before:.2f} before the start; other work skews the figures")
    env = benchmark_env()
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.benchmarks.settings"
    os.environ.pop("MESSAGING_RATE_LIMITS", None)  # the harness reads the settings ours runs with
    try:
        database = setup_database(env)
        count = max([*args.sizes, *args.latency_sizes, args.rate_n if args.rate_latencies else 1])
        print(f"database {database}; creating {count:,} users ...", flush=True)
        users = create_users(count)
        results = new_results(args, load_before)
        for latency in args.latencies:
            run_profile(latency, users, env, args, results)
        results["rate_limit"] = run_rate_checks(users, env, args.rate_latencies, args.rate_n)
        save(results)
        if args.status_repeat:
            status = partial(measure_status, results, users, args)
            results["status"] = step("status page", status)
        results["machine"]["load_1min_after"] = os.getloadavg()[0]
        results["wall_seconds"] = time.perf_counter() - wall
        results["targets"] = targets.evaluate(results)
        results["headline"] = report.headline(results)
        report.print_all(results, args.status_n)
        write_results(results, database, args.save)
    finally:
        kill_leftovers()


if __name__ == "__main__":
    main()
