#!/usr/bin/env python
"""The sending benchmark (`make bench`, `make bench QUICK=1`).

For N = 1,000 / 10,000 / 100,000 receivers (--quick stops at 10,000), on one database and one
SMTP sink (Postfix's smtp-sink on a free loopback port):

- ours: a Message for N users with mixed en/nb profiles, prepare_and_send run by real
  `manage.py run_huey` consumers (the huey task the staff UI enqueues), until the message is
  sent; every receiver's Message-ID must reach the sink exactly once;
- ours+fast: the same with messaging.channels.fast_email building the emails (the proposed change);
- post_office: django-post_office's send_many + send_queued_mail loop, same content and sink;
- raw: prebuilt messages over smtplib, same concurrency and connections per message.

Then the live status page's data for a 100,000-receiver message (counts query, and a filtered
page of 50 receivers with a count): p50/p95 over repeated runs.

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


def start_consumers(config: str, env: dict, fast: bool, tag: str) -> list[subprocess.Popen]:
    """config: "<processes>x<workers><thread|process>", e.g. 1x2thread, 2x1thread, 1x2process."""
    match = re.fullmatch(r"(\d+)x(\d+)(thread|process)", config)
    if not match:
        raise SystemExit(f"Bad consumer config {config!r}")
    processes, workers, kind = int(match[1]), int(match[2]), match[3]
    consumer_env = {**env, "DJANGO_SETTINGS_MODULE": SETTINGS, "BENCH_FAST_EMAIL": "1" if fast else "0"}
    started = []
    for i in range(processes):
        log = (BENCH_DIR / f"consumer-{tag}-{i}.log").open("wb")
        started.append(
            subprocess.Popen(
                [
                    *(sys.executable, "manage.py", "run_huey", "-w", str(workers), "-k", kind),
                    *("--no-periodic", "--delay", "0.05", "--max-delay", "0.5", "--quiet"),
                ],
                cwd=ROOT,
                env=consumer_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
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


def run_ours(user_ids: list[int], config: str, env: dict, sink: SmtpSink, fast: bool = False) -> dict:
    from messaging import tasks
    from messaging.models import Message
    from messaging.services.status import receiver_counts

    n = len(user_ids)
    message = Message.objects.create(
        composed_content=CONTENT,
        virtual_message_receivers={"chosen_user_ids": user_ids, "user_ids": user_ids},
    )
    consumers = start_consumers(config, env, fast, tag=f"{n}-{config}{'-fast' if fast else ''}")
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

    from messaging.services.delivery import CLAIM_BATCH_SIZE

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
            )
        )
        if len(batch) == 5000:
            MessageReceiver.objects.bulk_create(batch)
            batch = []
    MessageReceiver.objects.bulk_create(batch)
    return message.pk, "bulk-inserted receivers"


def status_view_url(message_id: int) -> str | None:
    """The staff UI's live status page (counts, progress and the filterable receiver table),
    if it exists by now."""
    from django.urls import NoReverseMatch, reverse

    try:
        return reverse("messaging:message_status", args=[message_id])
    except NoReverseMatch:
        return None


def measure_status(message_id: int, repeat: int) -> dict:
    from django.db import reset_queries

    from messaging.models import Message, MessageReceiver
    from messaging.services.status import receiver_counts

    def counts():
        receiver_counts(message_id)

    def table(**filters):
        def query():
            page = MessageReceiver.objects.filter(message_id=message_id, **filters).order_by("id")
            list(page.values("id", "user_id", "send_to", "language", "status", "sent_datetime")[:50])
            page.count()

        return query

    reset_queries()
    result = {
        "counts": timed(counts, repeat),
        "table_failed": timed(table(status="failed"), repeat),
        "table_nb": timed(table(language="nb"), repeat),
    }
    url = status_view_url(message_id)
    if url:
        from django.contrib.auth import get_user_model
        from django.test import Client

        user_model = get_user_model()
        admin = user_model.objects.filter(username="bench-admin").first()
        if admin is None:
            admin = user_model.objects.create_superuser("bench-admin", "admin@example.org", None)
        # The page needs created_by (messages created by other apps' code have none; see report).
        Message.objects.filter(pk=message_id, created_by=None).update(created_by=admin)
        client = Client(HTTP_HOST="localhost")
        client.force_login(admin)
        # The page's htmx poll (HX-Trigger: receiver-results), and full pages filtered by status
        # and by language (first page of the receiver table, with its count).
        variants = {
            "view_status": ("", {"HX-Request": "true", "HX-Trigger": "receiver-results"}),
            "view_table_failed": ("?status=failed", {}),
            "view_table_nb": ("?language=nb", {}),
        }
        for kind, (query, headers) in variants.items():

            def get(query=query, headers=headers):
                response = client.get(url + query, headers=headers)
                assert response.status_code in (200, 286), (url + query, response.status_code)

            result[kind] = timed(get, repeat) | {"url": url + query}
        result["view_table"] = max(
            result["view_table_failed"], result["view_table_nb"], key=lambda r: r["p95_ms"]
        )
    result["status_poll_p95_ms"] = result.get("view_status", result["counts"])["p95_ms"]
    result["status_table_p95_ms"] = result.get(
        "view_table", max(result["table_failed"], result["table_nb"], key=lambda r: r["p95_ms"])
    )["p95_ms"]
    return result


# --------------------------------------------------------------------------- main


def fmt(value, spec=".0f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: dict) -> None:
    rows = results["sizes"]
    configs = results["ours_configs"]
    header = (
        ["N"]
        + [f"ours {c}" for c in configs]
        + (["ours+fast"] if results["fast"] else [])
        + ["post_office", "raw", "ours/PO", "ours/raw", "prepare/s", "RSS MB", "once"]
    )
    lines = [header]
    for n, row in rows.items():
        lines.append(
            [f"{int(n):,}"]
            + [fmt(row["ours_by_config"].get(c, {}).get("msgs_per_s")) for c in configs]
            + ([fmt(row.get("ours_fast", {}).get("msgs_per_s"))] if results["fast"] else [])
            + [
                fmt(row["post_office_msgs_per_s"]),
                fmt(row["raw_ceiling_msgs_per_s"]),
                fmt(row["ratio_vs_post_office"], ".2f"),
                fmt(row["ratio_vs_ceiling"], ".2f"),
                fmt(row["prepare_receivers_per_s"]),
                fmt(row["worker_peak_rss_mb"], ".0f"),
                "yes" if row["exactly_once"] else "NO",
            ]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    print()
    print(f"Sending benchmark, msgs/s ({results['database']}, ours = {results['ours_config']})")
    for i, line in enumerate(lines):
        print("  ".join(str(cell).rjust(w) for cell, w in zip(line, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
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
        f"Status page data, {STATUS_N:,} receivers ({results['status_source']}): "
        f"counts {pct(status['counts'])}; table status=failed {pct(status['table_failed'])}; "
        f"table language=nb {pct(status['table_nb'])}"
    )
    for kind in ("view_status", "view_table_failed", "view_table_nb"):
        if kind in status:
            print(f"  {kind} {status[kind]['url']}: {pct(status[kind])}")
    print(
        f"status_poll_p95_ms={results['status_poll_p95_ms']:.1f}  "
        f"status_table_p95_ms={results['status_table_p95_ms']:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="stop at 10,000 receivers")
    parser.add_argument("--sizes", help="comma-separated N values (overrides --quick)")
    parser.add_argument(
        "--consumers",
        default="2x1thread",
        help="our consumer setups, comma-separated: <processes>x<workers><thread|process>; "
        "the first is the recommended one used for the ratios",
    )
    parser.add_argument("--compare-consumers", default="1x2thread", help="extra setups, run for N <= 10,000")
    parser.add_argument("--no-fast", action="store_true", help="skip the fast_email run of our engine")
    parser.add_argument("--no-post-office", action="store_true")
    parser.add_argument("--status-repeat", type=int, default=50)
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (SIZES[:2] if args.quick else SIZES)
    configs = [c for c in args.consumers.split(",") if c]
    extra = [c for c in args.compare_consumers.split(",") if c and c not in configs]
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()

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
            "ours_config": configs[0],
            "ours_configs": configs + extra,
            "fast": not args.no_fast,
            "email_build": build,
            "sizes": {},
        }
        status_source_id = None
        for n in sizes:
            ids = all_ids[:n]
            row = {"ours_by_config": {}}
            for config in configs + (extra if n <= 10_000 else []):
                print(f"N={n:,}: ours ({config}) ...", flush=True)
                row["ours_by_config"][config] = run_ours(ids, config, env, sink)
            ours = row["ours_by_config"][configs[0]]
            if not args.no_fast:
                print(f"N={n:,}: ours+fast_email ({configs[0]}) ...", flush=True)
                row["ours_fast"] = run_ours(ids, configs[0], env, sink, fast=True)
            if not args.no_post_office:
                print(f"N={n:,}: post_office ...", flush=True)
                row["post_office"] = run_po(ours["message_id"], n, sink, env)
            print(f"N={n:,}: raw ceiling ...", flush=True)
            concurrency = sum(int(p) * int(w) for p, w in re.findall(r"(\d+)x(\d+)", configs[0]))
            row["raw"] = run_raw(ours["message_id"], n, sink, concurrency=min(concurrency, 2) or 1)
            po = row.get("post_office", {}).get("msgs_per_s")
            row |= {
                "ours_msgs_per_s": ours["msgs_per_s"],
                "post_office_msgs_per_s": po,
                "raw_ceiling_msgs_per_s": row["raw"]["msgs_per_s"],
                "ratio_vs_post_office": ours["msgs_per_s"] / po if po else None,
                "ratio_vs_ceiling": ours["msgs_per_s"] / row["raw"]["msgs_per_s"],
                "prepare_receivers_per_s": ours["prepare_receivers_per_s"],
                "worker_peak_rss_mb": ours["worker_peak_rss_mb"],
                "exactly_once": all(r["exactly_once"] for r in row["ours_by_config"].values()),
            }
            if row.get("ours_fast"):
                row["ours_fast_msgs_per_s"] = row["ours_fast"]["msgs_per_s"]
            results["sizes"][str(n)] = row
            if n == STATUS_N:
                status_source_id = ours["message_id"]
            (BENCH_DIR / "results.json").write_text(json.dumps(results, indent=2, default=str))
        print("status page queries ...", flush=True)
        status_id, source = status_message(all_ids, status_source_id)
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
        sink.stop()
        shutil.rmtree(sink.dump_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
