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


def headline(results: dict) -> dict:
    """The figures the issue names (each target's measured figure, None where this run did not
    measure it), ours send only against the ceiling, and the rate-limit check's."""
    figures: dict = {t["id"]: t["measured"] for t in results.get("targets", [])}
    for key, profile in results["profiles"].items():
        for n, row in profile["sizes"].items():
            figures[f"{key}_{n}_ours_send_only_vs_ceiling"] = row.get("ours_send_vs_ceiling")
    for latency, check in results.get("rate_limit", {}).items():
        rate = check.get("rate", {})
        figures[f"rate_limit_{latency}ms_windows_over_limit"] = rate.get("windows_over_limit")
        figures[f"rate_limit_{latency}ms_max_in_1s_window"] = rate.get("max_in_1s_window")
        figures[f"rate_limit_{latency}ms_achieved_vs_limit"] = rate.get("achieved_vs_limit")
    return figures


# --------------------------------------------------------------------------- tables


def fmt(value, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def print_rows(lines: list[list[str]], left: tuple[int, ...] = ()) -> None:
    """A table: the first line is the header; columns right-aligned but those in `left`."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for i, line in enumerate(lines):
        cells = zip(line, widths, strict=True)
        print("  ".join(c.ljust(w) if j in left else c.rjust(w) for j, (c, w) in enumerate(cells)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def print_all(results: dict, status_n: int) -> None:
    from tests.benchmarks.targets import print_targets

    for profile in results["profiles"].values():
        print_profile(profile, results)
    print_differences(results)
    print_rate_limit(results["rate_limit"])
    if "status" in results:
        print_status(results["status"], status_n)
    print_targets(results.get("targets", []), results["machine"]["database"])
    print_headline(results["headline"], results)


HEADER = ["N", "runs", "ours", "spread", "send only", "1 proc", "post_office", "PO 1 proc", "PO send only"]
HEADER += ["ceiling", "ours/PO", "1 proc/PO 1 proc", "ours/ceiling", "send only/ceiling"]
HEADER += ["1st email s", "prepare/s", "RSS MB", "lanes", "once"]
NOT_RUN = "not run"


def ours_runs(row: dict) -> list[dict]:
    """Every run of our engine in a row: the repeated runs, in one process, two consumers."""
    runs = row.get("ours_runs") or [row["ours"]]  # results saved before --repeats have one
    return [*runs, *(row[key] for key in ("ours_one_process", "ours_2_consumers") if key in row)]


def lanes_text(run: dict) -> str:
    return "/".join(str(lanes) for lanes in run.get("lanes", [])) or "-"


def table_line(n: str, row: dict) -> list[str]:
    ours, one, po = row["ours"], row.get("ours_one_process", {}), row.get("post_office")
    stats = row.get("ours_stats", {"runs": 1, "median": ours["msgs_per_s"]})
    po_runs = row.get("post_office_stats", {}).get("runs", 1 if po else "-")
    repeated = row.get("ours_runs") or [ours]
    once = ["yes" if all(run["exactly_once"] for run in repeated) else "NO"]
    once += [
        "yes" if row[key]["exactly_once"] else "NO"
        for key in ("ours_one_process", "ours_2_consumers")
        if key in row
    ]
    return [
        f"{int(n):,}",
        f"{stats['runs']}/{po_runs}",
        fmt(stats["median"]),
        fmt(stats.get("spread") if stats["runs"] > 1 else None, ".1%"),
        fmt(row.get("ours_send_msgs_per_s_median", ours.get("send_msgs_per_s"))),
        fmt(one.get("msgs_per_s")),
        fmt(row["post_office_stats"]["median"]) if po else NOT_RUN,
        fmt(row["post_office_one_process"]["msgs_per_s"]) if "post_office_one_process" in row else "-",
        fmt(po.get("send_msgs_per_s")) if po else "-",
        fmt(row["ceiling"]["msgs_per_s"]) if "ceiling" in row else NOT_RUN,
        fmt(row.get("ours_vs_post_office"), ".2f"),
        fmt(row.get("ours_one_process_vs_post_office_one_process"), ".2f"),
        fmt(row.get("ours_vs_ceiling"), ".2f"),
        fmt(row.get("ours_send_vs_ceiling"), ".2f"),
        fmt(ours["first_email_s"], ".1f"),
        fmt(ours["prepare_receivers_per_s"]),
        fmt(ours["worker_peak_rss_mb"]),
        lanes_text(ours),
        "/".join(once),
    ]


def print_profile(profile: dict, results: dict) -> None:
    settings, m = results["settings"], results["machine"]
    print(f"\n{profile['sink']}. msgs/s, {m['database']} + {m['huey']}, {m['nproc']} CPUs")
    print_rows([HEADER] + [table_line(n, row) for n, row in profile["sizes"].items()])
    print(
        f"  ours = {settings['ours']}, up to {settings['total_smtp_connections']} SMTP connections: the "
        "median of its runs (runs = ours/post_office); spread = (max - min) / median; 1st email, "
        "prepare/s, RSS (largest consumer process, peak, SMTP connections open) and lanes (the most "
        "each worker logged for the send, '-': none logged, one lane) are those of the run nearest "
        "the median."
    )
    print(
        "  send only = ours from the first email at the sink to the last (preparation excluded), "
        "median; 1 proc = message.prepare_and_send in one process; PO 1 proc = post_office with one "
        "process (its default threads); once = every Message-ID at the sink exactly once (ours' "
        "runs / 1 proc / 2 consumers)."
    )
    print(f"  ceiling = {profile['ceiling']}.")
    for n, row in profile["sizes"].items():
        for line in footnotes(int(n), row):
            print(f"  {line}")


def footnotes(n: int, row: dict) -> list[str]:
    """What the table cannot hold for one N: contenders not run, every repeated run, the two
    consumers' run, and warnings."""
    lines = [
        f"N={n:,}: {c} {row[f'{c}_not_run']}" for c in ("post_office", "ceiling") if f"{c}_not_run" in row
    ]
    for key, name in (("ours", "ours"), ("post_office", "post_office")):
        runs = row.get(f"{key}_runs", [])
        if len(runs) > 1:
            stats = row[f"{key}_stats"]
            each = ", ".join(
                f"{run['msgs_per_s']:.0f}" + (f" ({lanes_text(run)} lanes)" if key == "ours" else "")
                for run in runs
            )
            loads = [run["load_1min_after"] for run in runs if "load_1min_after" in run]
            load = f"; 1-min load after each {min(loads):.1f}-{max(loads):.1f}" if loads else ""
            lines.append(
                f"N={n:,}: {name} runs {each}: median {stats['median']:.0f}, min {stats['min']:.0f}, "
                f"max {stats['max']:.0f}, spread {stats['spread']:.1%}{load}"
            )
    if "ours_one_process" in row:
        lines.append(f"N={n:,}: ours 1 proc: lanes {lanes_text(row['ours_one_process'])}")
    if "ours_2_consumers" in row:
        two = row["ours_2_consumers"]
        lines.append(
            f"N={n:,}: ours 2 consumers x 1 worker: {two['msgs_per_s']:.0f} msgs/s, lanes "
            f"{lanes_text(two)}, exactly once: {'yes' if two['exactly_once'] else 'NO'}"
        )
    return lines + [f"WARNING: {warning}" for warning in warnings(n, row)]


def warnings(n: int, row: dict) -> list[str]:
    """Runs whose figure is not that of a complete send: a message not `sent`, a receiver
    missing or twice at the sink, a contender that delivered another count."""
    found = []
    others = [*row.get("post_office_runs", []), row.get("post_office_one_process"), row.get("ceiling")]
    for contender in filter(None, others):
        delivered = contender.get("delivered")
        if delivered is not None and delivered != n:
            found.append(f"post_office or ceiling at N={n:,} delivered {delivered:,} messages")
    for run in ours_runs(row):
        if run["status"] != "sent" or not run["exactly_once"]:
            found.append(
                f"ours {run['config']} at N={n:,}: message {run['message_id']} {run['status']}, "
                f"{run['receiver_counts']}, at the sink {run['delivered']:,} (duplicates "
                f"{run['duplicates']}, e.g. {run['duplicate_examples']}; missing {run['missing']})"
            )
    return found


def print_differences(results: dict) -> None:
    """What differs between the contenders, besides the engine."""
    settings = results["settings"]
    po = next(
        (
            row["post_office"]
            for p in results["profiles"].values()
            for row in p["sizes"].values()
            if "post_office" in row
        ),
        None,
    )
    threads = (
        f"{po['threads_per_process']} threads each, batch {po['batch_size']}" if po else "its default threads"
    )
    durability = settings["durability"]
    print("\nWhat differs between the contenders (same machine, database, sink and receivers):")
    print(
        f"  ours: {settings['ours']} ({settings['worker_type']} workers, delivery helpers "
        f"{settings['delivery_helpers']}), up to {settings['smtp_connections_per_worker']} SMTP sessions "
        "(lanes) per worker, how many decided per send; timed from Send: preparation (rendering each "
        "receiver's subject and bodies, inserting the receivers) included."
    )
    print(
        f"  post_office: {settings['post_office_processes']} processes x {threads}; given the content "
        "ours rendered (no rendering of its own); enqueue (send_many) included in its msgs/s, not in "
        "PO send only."
    )
    print(
        "  ceiling: no database, no preparation; the instant sink's is measured (raw smtplib), a "
        "latency sink's computed (connections x 1000 / latency)."
    )
    print(f"  Database durability: ours {durability['ours']}; post_office {durability['post_office']}.")


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


STATUS_VIEWS = (
    "view_poll_unchanged",
    "view_poll",
    "view_page",
    "view_table_failed",
    "view_table_nb",
    "view_search",
    "view_page_deep",
    "view_page_deep_linked",
)


def print_status(status: dict, status_n: int) -> None:
    def pct(r: dict) -> str:
        return f"p50 {r['p50_ms']:.1f} / p95 {r['p95_ms']:.1f} ms"

    print(
        f"\nStatus page, {status.get('n', status_n):,} receivers ({status['source']}), django.test.Client, "
        f"{status['view_poll']['runs']} requests each, consumers stopped:"
    )
    for kind in STATUS_VIEWS:
        if kind in status:  # results saved before a view was measured lack it
            extra = " (htmx poll)" if status[kind]["headers"] else ""
            print(f"  {kind:21} GET {status[kind]['url']}{extra}: {pct(status[kind])}")
    print(f"  counts query alone: {pct(status['counts_query'])}")
    print(
        f"  status_poll_p95_ms={status['status_poll_p95_ms']:.1f}  "
        f"status_table_p95_ms={status['status_table_p95_ms']:.1f} (filtered, worst)  "
        f"status_page_p95_ms={status['status_page_p95_ms']:.1f} (unfiltered)"
    )
    for phase, watched in status.get("watchers", {}).items():
        publish = watched["publish_p50_ms"]
        print(
            f"  {watched['watchers']} watchers polling every 2 s, {phase}: {watched['polls']} polls in "
            f"{watched['seconds']:.0f} s ({watched['unchanged_polls']} unchanged: 204), {pct(watched)}; "
            f"busy {watched['busy_cores']:.3f} cores in requests, "
            f"process CPU {watched['process_cpu_cores']:.3f} cores"
            + (f"; counts published every 2 s, p50 {publish:.0f} ms" if publish else "")
        )


def print_headline(figures: dict, results: dict) -> None:
    shown = {t["id"] for t in results.get("targets", [])}
    print("\nOther headline figures (None: not measured in this run; the targets' are above):")
    for key, value in figures.items():
        if key not in shown:
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
