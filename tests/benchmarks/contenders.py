"""The contenders other than our engine: django-post_office's bulk path and the ceilings."""

from __future__ import annotations

import json
import multiprocessing
import os
import smtplib
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_post_office(message_id: int, n: int, env: dict, sink, processes: int) -> dict:
    """send_many + send_queued_mail_until_done(processes=...) in a separate process
    (settings_post_office), on the content our engine rendered for the same receivers."""
    command = ["-m", "tests.benchmarks.post_office_run", str(message_id), str(n), str(processes)]
    out = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "tests.benchmarks.settings_post_office"},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"post_office run failed:\n{out.stdout}\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result |= {
        "msgs_per_s": n / result["total_s"],
        "send_msgs_per_s": n / result["send_s"],
        "delivered": sink.delivered(),
    }
    sink.clear()
    return result


def prebuilt_mails(message_id: int, n: int) -> list[tuple[str, bytes]]:
    """The bytes our engine would send to the first n receivers of message_id."""
    import email.policy

    from messaging.engine.channels.fast_email import FastEmailMultiAlternatives
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


def run_raw(message_id: int, n: int, sink, processes: int) -> dict:
    """The instant sink's ceiling: prebuilt messages over smtplib, one connection per process
    for the whole run."""
    from django.conf import settings

    mails = prebuilt_mails(message_id, n)
    per_process = -(-n // processes)
    seconds = run_raw_ceiling(
        sink.host, sink.port, mails, processes, per_process, settings.DEFAULT_FROM_EMAIL
    )
    delivered = sink.delivered()
    sink.clear()
    return {"seconds": seconds, "msgs_per_s": n / seconds, "delivered": delivered, "processes": processes}


def latency_ceiling(connections: int, latency_ms: float) -> dict:
    """The latency sink's ceiling: every connection busy, each message costing the delay alone
    (the MAIL/RCPT/DATA round trips are left out, so nothing reaches it exactly)."""
    return {"connections": connections, "msgs_per_s": connections * 1000 / latency_ms}


def _raw_worker(host: str, port: int, mails: list, per_connection: int, sender: str) -> None:
    client = None
    try:
        for i, (to, data) in enumerate(mails):
            if i % per_connection == 0:
                if client is not None:
                    client.quit()
                client = smtplib.SMTP(host, port, timeout=30)
                client.ehlo()
            client.sendmail(sender, [to], data)
    finally:
        if client is not None:
            client.quit()


def run_raw_ceiling(
    host: str, port: int, mails: list[tuple[str, bytes]], processes: int, per_connection: int, sender: str
) -> float:
    """Prebuilt messages over smtplib: `processes` concurrent senders, a new connection every
    `per_connection` messages. Returns seconds."""
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(
            target=_raw_worker, args=(host, port, mails[i::processes], per_connection, sender), daemon=True
        )
        for i in range(processes)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if any(w.exitcode for w in workers):
        raise RuntimeError("a raw-ceiling sender failed")
    return elapsed


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, in MB; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return pids
