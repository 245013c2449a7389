"""django-post_office's recommended bulk path, timed: mail.send_many() then the
send_queued_mail loop (send_queued_mail_until_done, as `manage.py send_queued_mail` runs it).

Usage (run.py calls it): python -m tests.benchmarks.post_office_run MESSAGE_ID N PROCESSES
with DJANGO_SETTINGS_MODULE=tests.benchmarks.settings_post_office. It sends the subject,
plain text, HTML and address our engine rendered for the first N receivers of MESSAGE_ID
(so rendering is not part of post_office's time; enqueueing is timed apart from sending), with
PROCESSES processes of post_office's default THREADS_PER_PROCESS threads each, and prints one
JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time

import django

ENQUEUE_CHUNK = 1000


def main(message_id: int, n: int, processes: int) -> None:
    django.setup()
    from django.conf import settings
    from post_office import mail
    from post_office.lockfile import default_lockfile
    from post_office.models import Email, Log
    from post_office.settings import get_batch_size, get_threads_per_process

    from messaging.models import MessageReceiver
    from tests.benchmarks.contenders import peak_rss_mb

    Log.objects.all()._raw_delete(Log.objects.db)
    Email.objects.all()._raw_delete(Email.objects.db)
    rows = list(
        MessageReceiver.objects.filter(message_id=message_id)
        .order_by("id")
        .values_list("id", "send_to", "subject", "message_content_plain", "message_content_html")[:n]
    )
    started = time.perf_counter()
    for start in range(0, len(rows), ENQUEUE_CHUNK):
        mail.send_many(
            [
                {
                    "sender": settings.DEFAULT_FROM_EMAIL,
                    "recipients": [send_to],
                    "subject": subject,
                    "message": plain,
                    "html_message": html,
                    "headers": {"Message-ID": f"<post-office-{pk}@bench.local>"},
                }
                for pk, send_to, subject, plain, html in rows[start : start + ENQUEUE_CHUNK]
            ]
        )
    enqueued = time.perf_counter()
    mail.send_queued_mail_until_done(default_lockfile, processes=processes)
    finished = time.perf_counter()
    statuses = dict(
        Email.objects.values_list("status")
        .annotate(n=django.db.models.Count("id"))
        .values_list("status", "n")
    )
    print(
        json.dumps(
            {
                "enqueue_s": enqueued - started,
                "send_s": finished - enqueued,
                "total_s": finished - started,
                "statuses": {str(k): v for k, v in statuses.items()},
                "processes": processes,
                "threads_per_process": get_threads_per_process(),
                "batch_size": get_batch_size(),
                "mail_backend": settings.MAILERS["default"]["BACKEND"],
                "peak_rss_mb": peak_rss_mb(os.getpid()),
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
