#!/usr/bin/env python
"""The sending benchmark (`make bench`, `make bench QUICK=1`).

For N = 1,000 / 10,000 / 100,000 receivers (--quick stops at 10,000), on one database and one
SMTP sink (Postfix's smtp-sink on a free loopback port):

- ours: a Message for N users with mixed en/nb profiles, prepare_and_send run by one real
  `manage.py run_huey` consumer with the settings' defaults (2 process workers, polling
  0.05-1.0 s, MESSAGING_DELIVERY_HELPERS=1 so the second worker joins in), until the message
  is sent;
- ours 2 consumers: the scale-out check, two separate `run_huey` processes with one process
  worker each (HUEY_WORKERS=1); beside it, for N <= 10,000, one consumer with one worker
  (1x1), the baseline the second consumer has to improve on;
- for every run of ours, every receiver's Message-ID must reach the sink exactly once;
- post_office: django-post_office's send_many + send_queued_mail loop, same content and sink;
- raw: prebuilt messages over smtplib, same concurrency and connections per message.

Then, with every consumer stopped, the live status page for a 100,000-receiver message through
django.test.Client: the htmx poll (HX-Request, HX-Trigger: receiver-results), the full page,
and the page filtered by status and by language; p50/p95 over repeated requests.

Honours DATABASE_URL / REDIS_URL, but always on a separate database (var/bench/bench.sqlite3
or `messaging_bench`) and huey name, so development data is untouched.
Prints one table and writes var/bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.contenders import (  # noqa: E402
    peak_rss_mb,
    process_tree,
    run_post_office,
    run_raw_ceiling,
)
from tests.benchmarks.sink import SmtpSink  # noqa: E402

BENCH_DIR = ROOT / "var" / "bench"
SETTINGS = "tests.benchmarks.settings"
SIZES = [1_000, 10_000, 100_000]
STATUS_N = 100_000

EN_BODY = (
    "<h1>Deadline moved</h1>"
    "<p>Hello {{ recipient_name }},</p>"
    "<p>The deadline for <strong>Assignment 3: Distributed systems</strong> has been moved to "
    "Friday 14 March at 23:59. Your examiners have been told, and your group keeps its current "
    "members. If you already delivered, nothing changes for you.</p>"
    "<ul><li>New deadline: Friday 14 March, 23:59</li><li>Course: INF3200</li>"
    "<li>Questions: ask your teaching assistant</li></ul>"
    '<p>See the assignment at <a href="https://devilry.example.org/assignment/3">the course page</a>. '
    "This is a long line of text that goes on for a while so that the plain text version has at least "
    "one line longer than seventy-eight characters, as real messages do.</p>"
    "<p>Best regards,<br>The course staff</p>"
)
NB_BODY = (
    "<h1>Fristen er flyttet</h1>"
    "<p>Hei {{ recipient_name }},</p>"
    "<p>Fristen for <strong>Oppgave 3: Distribuerte systemer</strong> er flyttet til fredag 14. mars "
    "kl. 23.59. Sensorene dine er varslet, og gruppen din beholder de samme medlemmene. Har du "
    "allerede levert, endres ingenting for deg. Blåbærsyltetøy, ærlig og øyeblikkelig.</p>"
    "<ul><li>Ny frist: fredag 14. mars, 23.59</li><li>Emne: INF3200</li>"
    "<li>Spørsmål: kontakt gruppelæreren din</li></ul>"
    '<p>Se oppgaven på <a href="https://devilry.example.org/assignment/3">emnesiden</a>. '
    "Dette er en lang linje med tekst som fortsetter en stund, slik at ren tekst-versjonen har minst "
    "én linje som er lengre enn syttiåtte tegn, slik ekte meldinger har.</p>"
    "<p>Vennlig hilsen<br>Emneansvarlige</p>"
)
CONTENT = {
    "en": {"subject": "Deadline moved for {{ recipient_first_name }}", "body": EN_BODY},
    "nb": {"subject": "Påminnelse: frist æøå for {{ recipient_first_name }}", "body": NB_BODY},
}


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


# --------------------------------------------------------------------------- our engine


CONSUMER_ENV = ("HUEY_WORKERS", "HUEY_WORKER_TYPE", "MESSAGING_DELIVERY_HELPERS")
STARTED: list[subprocess.Popen] = []  # every consumer this run started, to prove they are gone


def parse_config(config: str) -> tuple[int, int]:
    """A setup written <consumers>x<workers>, e.g. 1x2 (the settings default), 2x1, 1x1."""
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
        log = (BENCH_DIR / f"consumer-{tag}-{i}.log").open("wb")
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


def stop_consumers(consumers: list[subprocess.Popen]) -> None:
    for process in consumers:
        process.terminate()
    for process in consumers:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_ours(user_ids: list[int], config: str, env: dict, sink: SmtpSink) -> dict:
    from messaging import tasks
    from messaging.models import Message
    from messaging.services.status import receiver_counts

    n = len(user_ids)
    message = Message.objects.create(
        composed_content=CONTENT,
        status=Message.Status.QUEUED,  # as composing.queue_send leaves it
        virtual_message_receivers={"chosen_user_ids": user_ids, "user_ids": user_ids},
    )
    consumers = start_consumers(config, env, tag=f"{n}-{config}")
    try:
        time.sleep(2.0)  # consumers import Django and start polling; not part of the time
        started = time.perf_counter()
        tasks.send_composed_message(message.pk)  # what composing.queue_send enqueues
        deadline = started + max(600, n / 20)
        while True:
            message.refresh_from_db(fields=["status", "status_data"])
            if message.status in (Message.Status.SENT, Message.Status.ERROR):
                break
            if any(p.poll() is not None for p in consumers):
                raise RuntimeError(f"a consumer exited; see {BENCH_DIR}/consumer-*.log")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"message {message.pk} not done in time: {message.status}")
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        # The largest process of the consumers (each worker is a child process of its consumer).
        rss = max(peak_rss_mb(pid) for process in consumers for pid in process_tree(process.pid))
    finally:
        stop_consumers(consumers)
    counts = receiver_counts(message.pk)
    data = message.status_data
    ids = sink.message_ids()
    expected = {
        f"<receiver-{pk}.message-{message.pk}@messaging.local>"
        for pk in message.receivers.values_list("pk", flat=True)
    }
    duplicates = sum(1 for mid, c in ids.items() if mid in expected and c > 1)
    missing = len(expected - ids.keys())
    sink.clear()
    return {
        "config": config,
        "message_id": message.pk,
        "status": message.status,
        "seconds": elapsed,
        "msgs_per_s": n / elapsed,
        "prepare_receivers_per_s": data["receiver_count"] / data["prepared_seconds"]
        if data.get("prepared_seconds")
        else None,
        "prepared_seconds": data.get("prepared_seconds"),
        "worker_peak_rss_mb": rss,
        "receiver_counts": counts,
        "delivered": sum(ids.values()),
        "load_1min_after": os.getloadavg()[0],
        "exactly_once": duplicates == 0 and missing == 0 and sum(ids.values()) == n,
        "duplicates": duplicates,
        "missing": missing,
    }


# --------------------------------------------------------------------------- other contenders


def prebuilt_mails(message_id: int, n: int) -> list[tuple[str, bytes]]:
    import email.policy

    from messaging.channels.fast_email import FastEmailMultiAlternatives
    from messaging.models import MessageReceiver

    mails = []
    rows = (
        MessageReceiver.objects.filter(message_id=message_id)
        .order_by("id")
        .values_list("id", "send_to", "subject", "message_content_plain", "message_content_html")[:n]
    )
    for pk, send_to, subject, plain, html in rows.iterator(chunk_size=2000):
        mail = FastEmailMultiAlternatives(
            subject=subject, body=plain, to=[send_to], headers={"Message-ID": f"<raw-{pk}@bench.local>"}
        )
        mail.attach_alternative(html, "text/html")
        mails.append((send_to, mail.message(policy=email.policy.SMTP).as_bytes()))
    return mails


def run_raw(message_id: int, n: int, sink: SmtpSink, concurrency: int) -> dict:
    from django.conf import settings

    from messaging.services.transitions import CLAIM_BATCH_SIZE

    mails = prebuilt_mails(message_id, n)
    seconds = run_raw_ceiling(
        sink.host, sink.port, mails, concurrency, CLAIM_BATCH_SIZE, settings.DEFAULT_FROM_EMAIL
    )
    delivered = sink.delivered()
    sink.clear()
    return {"seconds": seconds, "msgs_per_s": n / seconds, "delivered": delivered}


def run_po(message_id: int, n: int, sink: SmtpSink, env: dict) -> dict:
    result = run_post_office(message_id, n, env)
    result["delivered"] = sink.delivered()
    result["msgs_per_s"] = n / result["total_s"]
    sink.clear()
    return result


# --------------------------------------------------------------------------- email building


def email_build_speed(count: int = 2000) -> dict:
    """ms per two-part message: Django's EmailMultiAlternatives vs FastEmailMultiAlternatives,
    message(policy=SMTP).as_bytes() as the SMTP backend calls it."""
    import email.policy

    from django.core.mail import EmailMultiAlternatives

    from messaging.channels.fast_email import FastEmailMultiAlternatives
    from messaging.rendering import html_to_text

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
    started = time.perf_counter()
    for _ in range(count // 4):
        html_to_text(html)
    result["html2text_ms"] = (time.perf_counter() - started) / (count // 4) * 1000
    return result


# --------------------------------------------------------------------------- status page


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(fn, repeat: int) -> dict:
    fn()
    fn()  # warm caches, as a page polled every few seconds is
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": statistics.median(samples), "p95_ms": percentile(samples, 95), "runs": repeat}


def status_message(user_ids: list[int], existing: int | None) -> tuple[int, str]:
    """A 100,000-receiver message: the one our engine sent at that N, else one made by
    bulk-inserting receivers (95 % sent, 3 % failed, 2 % error) for the quick run."""
    from messaging.models import Message, MessageReceiver

    if existing is not None:
        return existing, "sent by the engine"
    message = Message.objects.create(
        composed_content=CONTENT,
        status=Message.Status.SENT,
        virtual_message_receivers={"user_ids": user_ids},
    )
    statuses = ["sent"] * 95 + ["failed"] * 3 + ["error"] * 2
    batch = []
    for i in range(STATUS_N):
        status = statuses[(i * 37) % 100]
        batch.append(
            MessageReceiver(
                message=message,
                user_id=user_ids[i % len(user_ids)],
                send_to=f"bench{i}@example.org",
                language="nb" if i % 2 else "en",
                subject="Påminnelse: frist æøå",
                message_content_plain="x" * 600,
                message_content_html="<p>" + "x" * 800 + "</p>",
                status=status,
                status_data={"errors": [{"error_message": "550 No such user"}]} if status != "sent" else {},
                last_error="550 No such user" if status != "sent" else "",
            )
        )
        if len(batch) == 5000:
            MessageReceiver.objects.bulk_create(batch)
            batch = []
    MessageReceiver.objects.bulk_create(batch)
    # What the engine does at the end of every delivery run: publish the counts.
    from messaging.services.transitions import roll_up

    roll_up(message.pk)
    return message.pk, "bulk-inserted receivers"


def settle_database() -> None:
    """Before the status requests: no consumer may still run, and the receiver table is in the
    state autovacuum leaves it in (PostgreSQL: VACUUM ANALYZE now, so autovacuum does not start
    in the middle of the measurement; SQLite: the WAL checkpointed into the main file)."""
    from django.db import connection

    alive = [p.pid for p in STARTED if p.poll() is None]
    if alive:
        raise RuntimeError(f"consumers still running during the status measurement: {alive}")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE messaging_messagereceiver")
            cursor.execute("VACUUM ANALYZE messaging_message")
        elif connection.vendor == "sqlite":
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def measure_status(message_id: int, repeat: int) -> dict:
    """The staff UI's live status page (messaging:message_status) through django.test.Client,
    as a logged-in superuser: the htmx poll the page repeats every few seconds, the full page,
    and the page filtered by status and by language (first page of the receiver table, with its
    count). The bare counts query is timed beside it, to tell SQL from rendering."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from messaging.services.status import receiver_counts

    url = reverse("messaging:message_status", args=[message_id])
    user_model = get_user_model()
    admin = user_model.objects.filter(username="bench-admin").first()
    if admin is None:
        admin = user_model.objects.create_superuser("bench-admin", "admin@example.org", None)
    client = Client(HTTP_HOST="localhost")
    client.force_login(admin)
    variants = {
        "view_poll": ("", {"HX-Request": "true", "HX-Trigger": "receiver-results"}),
        "view_page": ("", {}),
        "view_table_failed": ("?status=failed", {}),
        "view_table_nb": ("?language=nb", {}),
    }
    result = {"counts_query": timed(lambda: receiver_counts(message_id), repeat)}
    for kind, (query, headers) in variants.items():

        def get(query=query, headers=headers):
            response = client.get(url + query, headers=headers)
            assert response.status_code in (200, 286), (url + query, response.status_code)
            assert len(response.content) > 1000, (url + query, response.content[:200])

        result[kind] = timed(get, repeat) | {"url": url + query, "headers": headers}
    result["status_poll_p95_ms"] = result["view_poll"]["p95_ms"]
    result["status_table_p95_ms"] = max(
        result["view_table_failed"]["p95_ms"], result["view_table_nb"]["p95_ms"]
    )
    result["status_page_p95_ms"] = result["view_page"]["p95_ms"]
    return result


# --------------------------------------------------------------------------- main


def fmt(value, spec=".0f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: dict) -> None:
    rows = results["sizes"]
    configs = results["ours_configs"]
    names = {results["ours_config"]: "ours", results.get("scale_out_config"): "ours 2 consumers"}
    header = (
        ["N"]
        + [names.get(c, f"ours {c}") for c in configs]
        + ["post_office", "raw", "ours/PO", "ours/raw", "2c/1x1", "prepare/s", "RSS MB", "once"]
    )
    lines = [header]
    for n, row in rows.items():
        by_config = row["ours_by_config"]
        lines.append(
            [f"{int(n):,}"]
            + [fmt(by_config.get(c, {}).get("msgs_per_s")) for c in configs]
            + [
                fmt(row["post_office_msgs_per_s"]),
                fmt(row["raw_ceiling_msgs_per_s"]),
                fmt(row["ratio_vs_post_office"], ".2f"),
                fmt(row["ratio_vs_ceiling"], ".2f"),
                fmt(row.get("scale_out_vs_one_worker"), ".2f"),
                fmt(row["prepare_receivers_per_s"]),
                fmt(row["worker_peak_rss_mb"], ".0f"),
                "/".join("yes" if by_config[c]["exactly_once"] else "NO" for c in configs if c in by_config),
            ]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    print()
    print(
        f"Sending benchmark, msgs/s ({results['database']}; "
        + "; ".join(f"{names.get(c, c)} = {config_label(c)}" for c in configs)
        + ")"
    )
    for i, line in enumerate(lines):
        print("  ".join(str(cell).rjust(w) for cell, w in zip(line, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "ours/PO, ours/raw, prepare/s and RSS (largest consumer process) are for ours; "
        "2c/1x1 = ours 2 consumers / one consumer with one worker; "
        "once = every Message-ID at the sink exactly once, per run of ours"
    )
    loads = [r["load_1min_after"] for row in rows.values() for r in row["ours_by_config"].values()]
    print(
        f"{results['cpus']} CPUs; 1-min load average before the start {results['load_1min_before']:.2f}, "
        f"after the runs of ours {min(loads):.2f}-{max(loads):.2f} (the runs themselves add about 2)"
    )
    if results.get("rss_100k_vs_10k") is not None:
        print(f"worker peak RSS 100,000 / 10,000: {results['rss_100k_vs_10k']:.2f}")
    build = results["email_build"]
    print(
        f"\nEmail build per two-part message: Django {build['django_ms']:.3f} ms, "
        f"fast_email {build['fast_ms']:.3f} ms ({build['django_ms'] / build['fast_ms']:.0f}x); "
        f"html2text {build['html2text_ms']:.3f} ms"
    )
    status = results["status"]

    def pct(r):
        return f"p50 {r['p50_ms']:.1f} / p95 {r['p95_ms']:.1f} ms"

    print(
        f"Status page, {STATUS_N:,} receivers ({results['status_source']}), django.test.Client, "
        f"{status['view_poll']['runs']} requests each, consumers stopped:"
    )
    for kind in ("view_poll", "view_page", "view_table_failed", "view_table_nb"):
        extra = " (htmx poll)" if status[kind]["headers"] else ""
        print(f"  {kind:17} GET {status[kind]['url']}{extra}: {pct(status[kind])}")
    print(f"  counts query alone: {pct(status['counts_query'])}")
    print(
        f"status_poll_p95_ms={results['status_poll_p95_ms']:.1f}  "
        f"status_table_p95_ms={results['status_table_p95_ms']:.1f} (filtered, worst of status/language)  "
        f"status_page_p95_ms={status['status_page_p95_ms']:.1f} (unfiltered)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="stop at 10,000 receivers")
    parser.add_argument("--sizes", help="comma-separated N values (overrides --quick)")
    parser.add_argument(
        "--consumers",
        default="1x2",
        help="ours: <consumers>x<process workers>; 1x2 is the settings default (one run_huey)",
    )
    parser.add_argument(
        "--scale-out", default="2x1", help="the 'ours 2 consumers' setup, run at every N ('' to skip)"
    )
    parser.add_argument(
        "--baseline",
        default="1x1",
        help="the setup the scale-out is compared with, run for N <= 10,000 ('' to skip)",
    )
    parser.add_argument("--no-post-office", action="store_true")
    parser.add_argument("--status-repeat", type=int, default=50)
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (SIZES[:2] if args.quick else SIZES)
    ours_config = args.consumers
    configs = [c for c in dict.fromkeys([ours_config, args.scale_out, args.baseline]) if c]
    for config in configs:
        parse_config(config)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    for old in BENCH_DIR.glob("consumer-*.log"):
        old.unlink()
    wall = time.perf_counter()
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        print(f"warning: load average {load_before:.2f} before the start; other work skews the figures")

    sink = SmtpSink(BENCH_DIR / "sink").start()
    env = {**os.environ, "EMAIL_URL": sink.url, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HUEY_IMMEDIATE", None)
    os.environ.update(EMAIL_URL=sink.url, DJANGO_SETTINGS_MODULE=SETTINGS)
    try:
        database = reset_database()
        migrate(env)
        import django

        django.setup()
        from huey.contrib.djhuey import HUEY

        HUEY.flush()
        print(
            f"smtp-sink on {sink.url}; database {database}; creating {max(max(sizes), 1):,} users ...",
            flush=True,
        )
        all_ids = create_users(max(sizes))
        build = email_build_speed()
        results = {
            "database": database,
            "ours_config": ours_config,
            "scale_out_config": args.scale_out or None,
            "baseline_config": args.baseline or None,
            "ours_configs": configs,
            "email_build": build,
            "cpus": os.cpu_count(),
            "load_1min_before": load_before,
            "sizes": {},
        }
        status_source_id = None
        for n in sizes:
            ids = all_ids[:n]
            row = {"ours_by_config": {}}
            for config in configs:
                if config == args.baseline and config not in (ours_config, args.scale_out) and n > 10_000:
                    continue
                print(f"N={n:,}: ours {config_label(config)} ...", flush=True)
                row["ours_by_config"][config] = run_ours(ids, config, env, sink)
            ours = row["ours_by_config"][ours_config]
            if not args.no_post_office:
                print(f"N={n:,}: post_office ...", flush=True)
                row["post_office"] = run_po(ours["message_id"], n, sink, env)
            print(f"N={n:,}: raw ceiling ...", flush=True)
            consumers, workers = parse_config(ours_config)
            row["raw"] = run_raw(ours["message_id"], n, sink, concurrency=consumers * workers)
            po = row.get("post_office", {}).get("msgs_per_s")
            scale_out = row["ours_by_config"].get(args.scale_out, {}).get("msgs_per_s")
            baseline = row["ours_by_config"].get(args.baseline, {}).get("msgs_per_s")
            row |= {
                "ours_msgs_per_s": ours["msgs_per_s"],
                "ours_2_consumers_msgs_per_s": scale_out,
                "ours_baseline_msgs_per_s": baseline,
                "scale_out_vs_one_worker": scale_out / baseline if scale_out and baseline else None,
                "scale_out_vs_ours": scale_out / ours["msgs_per_s"] if scale_out else None,
                "post_office_msgs_per_s": po,
                "raw_ceiling_msgs_per_s": row["raw"]["msgs_per_s"],
                "ratio_vs_post_office": ours["msgs_per_s"] / po if po else None,
                "ratio_vs_ceiling": ours["msgs_per_s"] / row["raw"]["msgs_per_s"],
                "prepare_receivers_per_s": ours["prepare_receivers_per_s"],
                "worker_peak_rss_mb": ours["worker_peak_rss_mb"],
                "exactly_once": all(r["exactly_once"] for r in row["ours_by_config"].values()),
            }
            results["sizes"][str(n)] = row
            if n == STATUS_N:
                status_source_id = ours["message_id"]
            (BENCH_DIR / "results.json").write_text(json.dumps(results, indent=2, default=str))
        if "10000" in results["sizes"] and "100000" in results["sizes"]:
            rss = {n: results["sizes"][n]["worker_peak_rss_mb"] for n in ("10000", "100000")}
            results["rss_100k_vs_10k"] = rss["100000"] / rss["10000"]
        print("status page ...", flush=True)
        status_id, source = status_message(all_ids, status_source_id)
        settle_database()
        status = measure_status(status_id, args.status_repeat)
        results |= {
            "status": status,
            "status_source": source,
            "status_poll_p95_ms": status["status_poll_p95_ms"],
            "status_table_p95_ms": status["status_table_p95_ms"],
            "wall_seconds": time.perf_counter() - wall,
        }
        (BENCH_DIR / "results.json").write_text(json.dumps(results, indent=2, default=str))
        print_table(results)
        print(f"\nwrote {BENCH_DIR / 'results.json'} in {results['wall_seconds']:.0f} s")
    finally:
        for process in STARTED:
            if process.poll() is None:
                process.kill()
        sink.stop()
        shutil.rmtree(sink.dump_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
