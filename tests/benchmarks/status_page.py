"""The live status page's timings for a 100,000-receiver message, every consumer stopped:
the htmx poll (HX-Request, HX-Trigger: receiver-results), the full page, and the page filtered
by status and by language, through django.test.Client; p50/p95 over repeated requests."""

from __future__ import annotations

import statistics
import time

from tests.benchmarks.content import CONTENT

STATUS_N = 100_000


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
    from messaging.engine.transitions import roll_up

    roll_up(message.pk)
    return message.pk, "bulk-inserted receivers"


def settle_database() -> None:
    """Before the status requests: no consumer may still run, and the receiver table is in the
    state autovacuum leaves it in (PostgreSQL: VACUUM ANALYZE now, so autovacuum does not start
    in the middle of the measurement; SQLite: the WAL checkpointed into the main file)."""
    from django.db import connection

    from tests.benchmarks.engine import STARTED

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

    from messaging.engine.status import receiver_counts

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
