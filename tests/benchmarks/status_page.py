"""The live status page's timings for a 100,000-receiver message (`--status-n`: a million on
PostgreSQL takes about a minute to insert), every consumer stopped: the htmx poll (HX-Request,
HX-Trigger: receiver-results) when nothing changed and when something did, the full page, the
table filtered by status, by language and by a two-word full name, page 2,000, through
django.test.Client, p50/p95 over repeated requests; then 20 staff polling at once, quiet and
while counts change every 2 s, and what they cost the server."""

from __future__ import annotations

import copy as copy_module
import re
import statistics
import threading
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


FIRST_NAMES = [
    "Ava", "Emma", "Nora", "Sofie", "Ingrid", "Olivia", "Maja", "Ella", "Sara", "Leah",
    "Jakob", "Emil", "Noah", "Oliver", "Filip", "William", "Lucas", "Liam", "Henrik", "Oskar",
    "Åse", "Bjørn", "Kari", "Ola", "Per", "Anne", "Ole", "Marit", "Knut", "Liv",
]  # fmt: skip
LAST_NAMES = [
    "Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen", "Kristiansen",
    "Jensen", "Karlsen", "Johnsen", "Pettersen", "Eriksen", "Berg", "Haugen", "Hagen",
    "Johannessen", "Andreassen", "Jacobsen", "Dahl", "Jørgensen", "Halvorsen", "Henriksen",
    "Lund", "Sørensen", "Jakobsen", "Moen", "Gundersen", "Iversen", "Strand", "Solberg",
    "Svendsen", "Eide", "Knutsen", "Martinsen", "Paulsen", "Bakken", "Kristoffersen", "Mathisen",
    "Lie", "Harris", "Amundsen", "Nguyen", "Rasmussen", "Ali", "Lunde", "Solheim", "Berge",
    "Moe", "Nygård", "Bakke", "Kristensen", "Fredriksen", "Holm", "Lien", "Hauge", "Christensen",
    "Andresen", "Nielsen", "Knudsen", "Evensen", "Sæther", "Aas", "Myhre", "Hanssen", "Ahmed",
    "Haugland", "Thomassen", "Sivertsen", "Simonsen", "Danielsen", "Berntsen", "Sandvik",
    "Rønning", "Arnesen", "Antonsen", "Næss", "Vik", "Haug", "Ellingsen", "Thorsen", "Edvardsen",
    "Birkeland", "Isaksen", "Gulbrandsen", "Ruud", "Aasen", "Strøm", "Myklebust", "Tangen",
    "Ødegård", "Eliassen", "Helland", "Bøe", "Jenssen", "Aune", "Mikkelsen", "Tveit", "Brekke",
    "Abrahamsen",
]  # fmt: skip
# The receivers of the status message: 94 % sent, 3 % failed, 2 % error, 1 % not sent yet (it
# is still sending, so its page polls), spread over the table as a real send leaves them.
RECEIVER_STATUSES = ["sent"] * 94 + ["failed"] * 3 + ["error"] * 2 + ["not_sent"]
INSERT_BATCH = 50_000
PERMANENT_ERROR, TEMPORARY_ERROR = "550 5.1.1 No such user", "451 4.3.0 Try again later"


def status_users(user_ids: list[int], n: int) -> list[int]:
    """One user per receiver, as a real message has: the given users, then as many more as
    `n` needs, with names drawn from common Norwegian ones (a full name is shared by about one
    user in 3,000, so a two-word search finds a few, and one name thousands)."""
    from django.contrib.auth import get_user_model

    missing = n - len(user_ids)
    if missing <= 0:
        return user_ids[:n]
    user_model = get_user_model()
    first = user_model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    rows = (
        {
            "username": f"status{first + i:07d}",
            "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
            "last_name": LAST_NAMES[(i // len(FIRST_NAMES) + i * 7) % len(LAST_NAMES)],
            "email": f"status{first + i}@example.org",
        }
        for i in range(missing)
    )
    _insert(user_model(password="!"), rows)
    added = user_model.objects.filter(username__startswith="status").order_by("pk")
    return [*user_ids, *added.values_list("pk", flat=True)][:n]


def _insert(template, rows) -> None:
    """Insert `rows` (dicts of field name → value, the rest as in the unsaved `template`) in
    batches: PostgreSQL's COPY, else bulk_create. A million receivers take minutes, not an hour."""
    from django.db import connection

    model = type(template)
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    batch: list[dict] = []

    def flush() -> None:
        if not batch:
            return
        if connection.vendor == "postgresql":
            _copy(template, fields, batch)
        else:
            model.objects.bulk_create([_instance(template, row) for row in batch], batch_size=5000)
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) == INSERT_BATCH:
            flush()
    flush()


def _copy(template, fields: list, rows: list[dict]) -> None:
    """`rows` into the template's table with one COPY, values prepared as Django saves them."""
    from django.db import connection, transaction

    model, quote = type(template), connection.ops.quote_name
    prepared = {f.attname: f.get_db_prep_save(getattr(template, f.attname), connection) for f in fields}
    by_key = {**{f.name: f for f in fields}, **{f.attname: f for f in fields}}
    sql = f"COPY {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) FROM STDIN"
    with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for row in rows:
            values = {**prepared}
            for key, value in row.items():
                values[by_key[key].attname] = by_key[key].get_db_prep_save(value, connection)
            copy.write_row([values[f.attname] for f in fields])


def _instance(template, row: dict):
    instance = copy_module.copy(template)
    for name, value in row.items():
        setattr(instance, name, value)
    return instance


def status_message(user_ids: list[int], existing: int | None, n: int = STATUS_N) -> tuple[int, str]:
    """An `n`-receiver message: the one our engine sent at that N, else one made by inserting
    receivers (94 % sent, 3 % failed, 2 % error, 1 % not sent: still sending) in bulk."""
    from django.utils import timezone

    from messaging.models import Message, MessageReceiver

    if existing is not None:
        return existing, "sent by the engine"
    users = status_users(user_ids, n)
    message = Message.objects.create(
        composed_content=CONTENT,
        status=Message.Status.SENDING,
        virtual_message_receivers={"user_ids": users},
        status_data={"sending_started": timezone.now().isoformat()},
    )
    sent_at = timezone.now()
    template = MessageReceiver(
        message=message,
        user_id=users[0],
        subject="Påminnelse: frist æøå",
        message_content_plain="x" * 600,
        message_content_html="<p>" + "x" * 800 + "</p>",
    )

    def row(i: int) -> dict:
        status = RECEIVER_STATUSES[(i * 37) % 100]
        failed = status in ("failed", "error")
        return {
            "user_id": users[i],
            "send_to": f"bench{i}@example.org",
            "language": "nb" if i % 2 else "en",
            "status": status,
            "sent_datetime": sent_at if status == "sent" else None,
            "sending_success_count": int(status == "sent"),
            "sending_failed_count": 1 if status == "failed" else 4 if status == "error" else 0,
            "status_data": {"errors": [{"error_message": "550 No such user"}]} if failed else {},
            "last_error": ("550 5.1.1 No such user" if i % 3 else "451 4.3.0 Try again later")
            if failed
            else "",
            "permanent_failure": failed and bool(i % 3),
        }

    _insert(template, (row(i) for i in range(n)))
    # What the engine does at the end of every delivery run: publish the counts.
    from messaging.engine.transitions import roll_up

    roll_up(message.pk)
    return message.pk, "bulk-inserted receivers"


def settle_database() -> None:
    """Before the status requests: no consumer may still run, and the receiver table is in the
    state autovacuum leaves it in (PostgreSQL: VACUUM ANALYZE now, so autovacuum does not start
    in the middle of the measurement; SQLite: the WAL checkpointed into the main file)."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from tests.benchmarks.engine import STARTED

    alive = [p.pid for p in STARTED if p.poll() is None]
    if alive:
        raise RuntimeError(f"consumers still running during the status measurement: {alive}")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE messaging_messagereceiver")
            cursor.execute("VACUUM ANALYZE messaging_message")
            # The users just inserted: their search index's pending entries merged, as it would be.
            cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(get_user_model()._meta.db_table)}")
        elif connection.vendor == "sqlite":
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


POLL = {"HX-Request": "true", "HX-Trigger": "receiver-results"}
WATCHERS = 20
DEEP_PAGE = 2_000
WATCH_SECONDS = 20.0
POLL_SECONDS = 2.0  # the page's own pace while sending
VERSION = re.compile(r'"X-Status-Version": "([0-9a-f]+)"')


def staff_client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    user_model = get_user_model()
    admin = user_model.objects.filter(username="bench-admin").first()
    if admin is None:
        admin = user_model.objects.create_superuser("bench-admin", "admin@example.org", None)
    client = Client(HTTP_HOST="localhost")
    client.force_login(admin)
    return client


def version_of(client, url: str) -> str:
    """The version the page at `url` carries (what its polls send back)."""
    match = VERSION.search(client.get(url).content.decode())
    if match is None:
        raise RuntimeError(f"{url} does not poll: its message is not in progress")
    return match.group(1)


def two_word_name(message_id: int) -> str:
    """A receiver's full name as staff might type it: last name first, in lower case."""
    from messaging.models import MessageReceiver

    receivers = MessageReceiver.objects.filter(message_id=message_id).order_by("id")
    user = receivers[receivers.count() // 2].user
    return f"{user.last_name} {user.first_name}".lower()


def unchanged_polls(client, url: str, repeat: int) -> dict:
    """The poll of a page whose numbers did not change: it sends the version it shows and gets
    204. The version also changes once a minute (the page is rendered afresh then): a poll that
    meets that is not counted, and the next ones send the new version, as the browser would."""
    version = version_of(client, url)
    samples = []
    while len(samples) < repeat + 2:
        started = time.perf_counter()
        response = client.get(url, headers={**POLL, "X-Status-Version": version})
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code == 204:
            samples.append(elapsed)
        else:
            version = VERSION.search(response.content.decode()).group(1)
    samples = samples[2:]  # warm-up, as timed() does
    return {"p50_ms": statistics.median(samples), "p95_ms": percentile(samples, 95), "runs": repeat}


def measure_status(message_id: int, repeat: int, watchers: int = WATCHERS) -> dict:
    """The staff UI's live status page (messaging:message_status) through django.test.Client,
    as a logged-in superuser: the htmx poll the page repeats every 2 s, when nothing changed
    (it sends the version it shows: 204) and when something did (the live region rendered);
    the full page; the table filtered by status, by language, and by a two-word full name;
    page 2,000 (or the last but one) typed in (no anchor), and the next reached by a link of it
    (its anchor); then
    `watchers` staff polling at once (measure_watchers). The bare counts query is timed beside
    it, to tell SQL from rendering."""
    from django.urls import reverse

    from messaging.engine.status import receiver_counts
    from messaging.models import MessageReceiver
    from messaging.tracking.views.messages import RECEIVERS_PER_PAGE

    url = reverse("messaging:message_status", args=[message_id])
    client = staff_client()
    name = two_word_name(message_id)
    receivers = MessageReceiver.objects.filter(message_id=message_id).order_by("id")
    deep = max(min(DEEP_PAGE, receivers.count() // RECEIVERS_PER_PAGE - 1), 1)  # 2,000 if there is one
    first_of_deep = receivers.values_list("id", flat=True)[(deep - 1) * RECEIVERS_PER_PAGE]
    variants = {
        "view_poll": ("", {**POLL, "X-Status-Version": "changed"}),
        "view_page": ("", {}),
        "view_table_failed": ("?status=failed", {}),
        "view_table_nb": ("?language=nb", {}),
        "view_search": (f"?q={name.replace(' ', '+')}", {}),
        "view_page_deep": (f"?page={deep}", {}),
        "view_page_deep_linked": (f"?page={deep + 1}&seek={deep}.{first_of_deep}", {}),
    }
    result = {
        "counts_query": timed(lambda: receiver_counts(message_id), repeat),
        "view_poll_unchanged": unchanged_polls(client, url, repeat) | {"url": url, "headers": POLL},
        "search": name,
    }
    for kind, (query, headers) in variants.items():

        def get(query=query, headers=headers):
            response = client.get(url + query, headers=headers)
            assert response.status_code in (200, 286), (url + query, response.status_code)
            assert len(response.content) > 1000, (url + query, response.content[:200])

        result[kind] = timed(get, repeat) | {"url": url + query, "headers": headers}
    result["status_poll_p95_ms"] = result["view_poll"]["p95_ms"]
    result["status_poll_unchanged_p95_ms"] = result["view_poll_unchanged"]["p95_ms"]
    result["status_table_p95_ms"] = max(
        result[kind]["p95_ms"]
        for kind in ("view_table_failed", "view_table_nb", "view_search", "view_page_deep")
    )
    result["status_page_p95_ms"] = result["view_page"]["p95_ms"]
    if watchers:
        result["watchers"] = {
            "quiet": measure_watchers(message_id, url, watchers, sending=False),
            "sending": measure_watchers(message_id, url, watchers, sending=True),
        }
    return result


def measure_watchers(message_id: int, url: str, watchers: int, sending: bool) -> dict:
    """`watchers` staff on the page at once, each polling every 2 s with the version of what
    it shows, as the browser does, for WATCH_SECONDS (threads in this process, each with its
    own session and database connection). Quiet: nothing changes, every poll is a 204.
    Sending: a stand-in delivery worker records one receiver's result and publishes the counts
    (transitions.roll_up, as workers do every 2 s) every 2 s, so each watcher's next poll
    renders the page. What it costs the server: the polls' time summed over the wall time (how
    many cores of request handling they kept busy) and this process's CPU time likewise."""
    from django.db import connection
    from django.utils import timezone

    from messaging.engine.transitions import roll_up
    from messaging.models import MessageReceiver

    samples: list[tuple[float, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def watch(offset: float) -> None:
        try:
            client = staff_client()
            version = version_of(client, url)
            time.sleep(offset)  # browsers opened the page at different moments
            while not stop.is_set():
                started = time.perf_counter()
                response = client.get(url, headers={**POLL, "X-Status-Version": version})
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 204:
                    version = VERSION.search(response.content.decode()).group(1)
                with lock:
                    samples.append((elapsed, response.status_code))
                stop.wait(max(POLL_SECONDS - elapsed / 1000, 0))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=watch, args=(i * POLL_SECONDS / watchers,), daemon=True)
        for i in range(watchers)
    ]
    for thread in threads:
        thread.start()
    time.sleep(POLL_SECONDS + 1)  # every watcher has loaded its page and polls
    with lock:
        samples.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    waiting = MessageReceiver.objects.filter(message_id=message_id, status="not_sent").order_by("id")
    publish_ms = []
    while time.perf_counter() - wall < WATCH_SECONDS:
        if sending:
            started = time.perf_counter()
            receiver = waiting.values_list("id", flat=True).first()
            if receiver is not None:
                waiting.filter(pk=receiver).update(status="sent", sent_datetime=timezone.now())
            roll_up(message_id)
            publish_ms.append((time.perf_counter() - started) * 1000)
        time.sleep(POLL_SECONDS)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    for thread in threads:
        thread.join()
    with lock:
        durations = [ms for ms, _code in samples]
        codes = [code for _ms, code in samples]
    return {
        "watchers": watchers,
        "seconds": wall,
        "polls": len(durations),
        "unchanged_polls": codes.count(204),
        "p50_ms": statistics.median(durations),
        "p95_ms": percentile(durations, 95),
        "busy_cores": sum(durations) / 1000 / wall,
        "process_cpu_cores": cpu / wall,
        "publish_p50_ms": statistics.median(publish_ms) if publish_ms else None,
    }
