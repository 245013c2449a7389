"""What a benchmark run records besides its figures (machine, commit, database durability), the
headline figures the issue asks for, and the tables it prints."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SQLITE_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


# --------------------------------------------------------------------------- context


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.rstrip()

    # Uncommitted changes to the engine mean the figures are not those of the commit.
    dirty = git("status", "--porcelain", "--", "messaging", "project", "tests/benchmarks")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted": dirty.splitlines()}


def machine(load_before: float) -> dict:
    import django
    from django.conf import settings
    from django.db import connection

    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), "")
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "database": f"{connection.vendor} {database_version()}",
        "huey": settings.HUEY["huey_class"],
        "load_1min_before": load_before,
    }


def database_version() -> str:
    from django.db import connection

    if connection.vendor == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0]


def durability() -> dict:
    """The commit durability each contender runs with. Both use the benchmark settings'
    database; earlier versions of our engine relaxed synchronous_commit on PostgreSQL while
    delivering (read from messaging/engine/delivery.py, so an old commit is labelled right)."""
    from django.db import connection

    from messaging.engine import delivery

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA journal_mode")
            journal = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            synchronous = SQLITE_SYNCHRONOUS[cursor.fetchone()[0]]
            same = f"journal_mode={journal}, synchronous={synchronous}"
            return {"journal_mode": journal, "synchronous": synchronous, "ours": same, "post_office": same}
        cursor.execute("SHOW synchronous_commit")
        server = cursor.fetchone()[0]
    relaxed = "SET synchronous_commit TO OFF" in Path(delivery.__file__).read_text()
    return {
        "synchronous_commit": server,
        "ours": "synchronous_commit=off while delivering" if relaxed else f"synchronous_commit={server}",
        "post_office": f"synchronous_commit={server}",
    }


def command_line() -> dict:
    """The command, and the environment that changes what it measures (no DATABASE_URL: it may
    hold a password; the database and huey backend are recorded with the machine)."""
    overrides = {k: v for k, v in os.environ.items() if k.startswith(("MESSAGING_", "HUEY_"))}
    python = Path(sys.executable).relative_to(ROOT, walk_up=True).as_posix()
    return {"command": " ".join([python, *sys.argv]), "environment": overrides}


# --------------------------------------------------------------------------- headline figures


def _row(results: dict, profile: str, n: int) -> dict:
    return results["profiles"].get(profile, {}).get("sizes", {}).get(str(n), {})


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def headline(results: dict) -> dict:
    """The figures the issue names, None where this run did not measure them."""
    figures: dict = {}
    for profile, n in (("latency", 10_000), ("instant", 10_000), ("instant", 100_000)):
        row = _row(results, profile, n)
        figures[f"{profile}_{n}_ours_vs_post_office"] = row.get("ours_vs_post_office")
        figures[f"{profile}_{n}_ours_vs_ceiling"] = row.get("ours_vs_ceiling")
        figures[f"{profile}_{n}_ours_send_only_vs_ceiling"] = row.get("ours_send_vs_ceiling")
    for latency, check in results.get("rate_limit", {}).items():
        rate = check.get("rate", {})
        figures[f"rate_limit_{latency}ms_windows_over_limit"] = rate.get("windows_over_limit")
        figures[f"rate_limit_{latency}ms_max_in_1s_window"] = rate.get("max_in_1s_window")
        figures[f"rate_limit_{latency}ms_achieved_vs_limit"] = rate.get("achieved_vs_limit")
    rss = {
        n: _row(results, "instant", n).get("ours", {}).get("worker_peak_rss_mb") for n in (10_000, 100_000)
    }
    figures["rss_100k_vs_10k"] = _ratio(rss[100_000], rss[10_000])
    figures["send_to_first_email_100k_s"] = (
        _row(results, "instant", 100_000).get("ours", {}).get("first_email_s")
    )
    return figures


# --------------------------------------------------------------------------- tables


def fmt(value, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def print_rows(lines: list[list[str]]) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for i, line in enumerate(lines):
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def print_all(results: dict, status_n: int) -> None:
    for name, profile in results["profiles"].items():
        print_profile(name, profile, results)
    print_rate_limit(results["rate_limit"])
    if "status" in results:
        print_status(results["status"], status_n)
    print_headline(results["headline"], results)


HEADER = ["N", "ours", "ours send only", "ours 1 proc", "post_office", "PO send only", "ceiling"]
HEADER += ["ours/PO", "ours/ceiling", "send only/ceiling"]
HEADER += ["1st email s", "prepare/s", "RSS MB", "once"]
OURS_RUNS = ("ours", "ours_one_process", "ours_2_consumers")


def table_line(n: str, row: dict) -> list[str]:
    ours, one, po = row["ours"], row.get("ours_one_process", {}), row.get("post_office", {})
    return [
        f"{int(n):,}",
        fmt(ours["msgs_per_s"]),
        fmt(ours.get("send_msgs_per_s")),
        fmt(one.get("msgs_per_s")),
        fmt(po.get("msgs_per_s")),
        fmt(po.get("send_msgs_per_s")),
        fmt(row["ceiling"]["msgs_per_s"]),
        fmt(row.get("ours_vs_post_office"), ".2f"),
        fmt(row.get("ours_vs_ceiling"), ".2f"),
        fmt(row.get("ours_send_vs_ceiling"), ".2f"),
        fmt(ours["first_email_s"], ".1f"),
        fmt(ours["prepare_receivers_per_s"]),
        fmt(ours["worker_peak_rss_mb"]),
        "/".join("yes" if row[run]["exactly_once"] else "NO" for run in OURS_RUNS if run in row),
    ]


def print_profile(name: str, profile: dict, results: dict) -> None:
    settings, m = results["settings"], results["machine"]
    durability = settings["durability"]
    print(f"\n{name}: {profile['sink']}. msgs/s, {m['database']} + {m['huey']}")
    print_rows([HEADER] + [table_line(n, row) for n, row in profile["sizes"].items()])
    print(
        f"  ours = {settings['ours']}, {settings['total_smtp_connections']} SMTP connections; "
        "ours 1 proc = message.prepare_and_send in one process."
    )
    print(
        "  Both: from queuing the send (the Send button) to every receiver's result recorded, "
        "preparation (rendering, inserting receivers) included; ours send only = from the first "
        "email at the sink to the last (preparation excluded)."
    )
    print(
        f"  post_office = send_many (the content ours rendered: no rendering) + "
        f"send_queued_mail_until_done, {settings['post_office_processes']} processes x its default "
        "threads; enqueue included (PO send only: without it)."
    )
    print(f"  ceiling = {profile['ceiling']}.")
    print(f"  Database: ours {durability['ours']}; post_office {durability['post_office']}.")
    print(
        "  1st email, prepare/s, RSS (largest consumer process, peak, SMTP connections open) are for ours;"
        " once = every Message-ID at the sink exactly once (ours / 1 proc / 2 consumers)."
    )
    for n, row in profile["sizes"].items():
        if "ours_2_consumers" in row:
            two = row["ours_2_consumers"]
            print(
                f"  ours 2 consumers x 1 worker, N={int(n):,}: {two['msgs_per_s']:.0f} msgs/s, "
                f"exactly once: {'yes' if two['exactly_once'] else 'NO'}"
            )
        for warning in warnings(int(n), row):
            print(f"  WARNING: {warning}")


def warnings(n: int, row: dict) -> list[str]:
    """Runs whose figure is not that of a complete send: a message not `sent`, a receiver
    missing or twice at the sink, a contender that delivered another count."""
    found = []
    for contender in ("post_office", "ceiling"):
        delivered = row.get(contender, {}).get("delivered")
        if delivered is not None and delivered != n:
            found.append(f"{contender} at N={n:,} delivered {delivered:,} messages")
    for run in (row[key] for key in OURS_RUNS if key in row):
        if run["status"] != "sent" or not run["exactly_once"]:
            found.append(
                f"ours {run['config']} at N={n:,}: message {run['message_id']} {run['status']}, "
                f"{run['receiver_counts']}, at the sink {run['delivered']:,} (duplicates "
                f"{run['duplicates']}, e.g. {run['duplicate_examples']}; missing {run['missing']})"
            )
    return found


def print_rate_limit(checks: dict) -> None:
    if not checks:
        return
    print()
    for latency, check in checks.items():
        rate = check["rate"]
        print(
            f"Rate limit {rate['limit_per_s']}/s, 2 consumers x 1 worker, {check['delivered']:,} receivers, "
            f"latency sink {latency} ms: max in any 1-s window {rate['max_in_1s_window']}, "
            f"windows over the limit {rate['windows_over_limit']} of {rate['windows']}, "
            f"achieved {fmt(rate['achieved_per_s'], '.1f')}/s "
            f"({fmt(rate['achieved_vs_limit'], '.2f')} of the limit) over {rate['span_s']:.1f} s, "
            f"exactly once: {'yes' if check['exactly_once'] else 'NO'}"
        )


def print_status(status: dict, status_n: int) -> None:
    def pct(r: dict) -> str:
        return f"p50 {r['p50_ms']:.1f} / p95 {r['p95_ms']:.1f} ms"

    print(
        f"\nStatus page, {status_n:,} receivers ({status['source']}), django.test.Client, "
        f"{status['view_poll']['runs']} requests each, consumers stopped:"
    )
    for kind in ("view_poll", "view_page", "view_table_failed", "view_table_nb"):
        extra = " (htmx poll)" if status[kind]["headers"] else ""
        print(f"  {kind:17} GET {status[kind]['url']}{extra}: {pct(status[kind])}")
    print(f"  counts query alone: {pct(status['counts_query'])}")
    print(
        f"  status_poll_p95_ms={status['status_poll_p95_ms']:.1f}  "
        f"status_table_p95_ms={status['status_table_p95_ms']:.1f} (filtered, worst of status/language)  "
        f"status_page_p95_ms={status['status_page_p95_ms']:.1f} (unfiltered)"
    )


def print_headline(figures: dict, results: dict) -> None:
    print("\nHeadline figures (None: not measured in this run):")
    for key, value in figures.items():
        print(f"  {key}: {value if isinstance(value, int) else fmt(value, '.2f')}")
    build = results["email_build"]
    print(
        f"Email build per two-part message: Django {build['django_ms']:.3f} ms, "
        f"fast_email {build['fast_ms']:.3f} ms; html2text {build['html2text_ms']:.3f} ms"
    )
    if "build_email_notice_ms" in build:  # results saved before the preference notice lack it
        print(
            f"The channel's build_email: enforced type {build['build_email_ms']:.3f} ms, optional type "
            f"(List-Unsubscribe + footer) {build['build_email_notice_ms']:.3f} ms"
        )
    m = results["machine"]
    print(
        f"{m['nproc']} CPUs ({m['cpu_model']}); 1-min load average before {m['load_1min_before']:.2f}, "
        f"after {m['load_1min_after']:.2f}; wall {results['wall_seconds']:.0f} s"
    )
