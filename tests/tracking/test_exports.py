"""The receivers of a message as CSV (/messages/<pk>/receivers.csv, messaging.tracking.exports) and the
"N receivers match" total of the status page's filters (selectors.filtered_receiver_total)."""

from __future__ import annotations

import csv
import io
import os
import resource
import time
import tracemalloc
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.db.models.signals import post_init
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import translation

from messaging.models import Message, MessageReceiver
from messaging.tracking import exports, selectors, status_labels
from tests.conftest import grant

R = MessageReceiver.Status
O = MessageReceiver.Outcome  # noqa: E741
HTMX = {"HTTP_HX_REQUEST": "true"}
HEADER = [
    "Receiver id",
    "Name",
    "Username",
    "Address",
    "Language",
    "Status",
    "Status label",
    "Delivery outcome",
    "Successful attempts",
    "Failed attempts",
    "Sent",
    "Last error or bounce detail",
]
SENT_AT = datetime(2026, 1, 15, 12, 30, 5, 123456, tzinfo=UTC)  # winter: Oslo is UTC+1
EVERYONE = ("sent", "bounced", "failed", "error", "not_sent", "permanent", "cancelled")
# QuerySet.count() of a sliced queryset (the status page counts matches up to a bound); the
# grouped counts name theirs.
COUNT_SQL = "SELECT COUNT(*) FROM (SELECT"


@pytest.fixture
def staff(make_user):
    return grant(make_user(is_staff=True, username="staffer"), "view_message")


def sent_message(**fields) -> Message:
    """A sent message whose counts are published, as the engine leaves it (the status page then
    counts no receivers)."""
    return Message.objects.create(
        status=Message.Status.SENT,
        composed_content={"en": {"subject": "Exam moved", "body": "<p>Hi</p>"}},
        status_data={"summary": {"receiver_counts": {"sent": 3, "failed": 1, "error": 1}, "total": 5}},
        **fields,
    )


def receiver(message, user, **fields) -> MessageReceiver:
    fields.setdefault("send_to", user.email)
    fields.setdefault("language", "en")
    return MessageReceiver.objects.create(
        message=message,
        user=user,
        message_content_html="<p>big body</p>",
        message_content_plain="big body",
        **fields,
    )


@pytest.fixture
def small(make_user):
    """Five receivers: sent, sent but bounced, failed, error, not sent; two of them in nb."""
    message = sent_message()
    ada = make_user(first_name="Ada", last_name="Lovelace", username="ada")
    bjorn = make_user(first_name="Bjørn", last_name="Ødegård", username="bjorn", email="bjørn@example.org")
    kari = make_user(first_name="Kari", last_name="Nordmann", username="kari")
    ola = make_user(first_name="", last_name="", username="ola")
    per = make_user(first_name="Per", last_name="Hansen", username="per")
    rows = {
        "sent": receiver(
            message,
            ada,
            status=R.SENT,
            sent_datetime=SENT_AT,
            sending_success_count=1,
            delivery_outcome=O.DELIVERED,
        ),
        "bounced": receiver(
            message,
            bjorn,
            language="nb",
            status=R.SENT,
            sent_datetime=SENT_AT,
            sending_success_count=1,
            delivery_outcome=O.HARD_BOUNCE,
            outcome_detail="550 5.1.1 User unknown",
            last_error="",
        ),
        "failed": receiver(
            message, kari, status=R.FAILED, sending_failed_count=2, last_error="451 4.3.0 Try again later"
        ),
        "error": receiver(
            message, ola, language="nb", status=R.ERROR, sending_failed_count=4, last_error="550 No such user"
        ),
        "not_sent": receiver(message, per),
        "permanent": receiver(
            message,
            ada,
            status=R.FAILED,
            permanent_failure=True,
            sending_failed_count=1,
            last_error="550 5.1.1 No such user",
        ),
        "cancelled": receiver(
            message, per, status=R.CANCELLED, cancel_reason=MessageReceiver.CancelReason.EXPIRED
        ),
    }
    other = sent_message()
    receiver(other, ada, status=R.FAILED, last_error="not this message")
    return message, rows


def export_url(message, **params) -> str:
    url = reverse("messaging:receiver_export", args=[message.pk])
    return f"{url}?{urlencode(params)}" if params else url


def download(client, url, **extra) -> tuple[object, list[list[str]]]:
    response = client.get(url, **extra)
    assert response.status_code == 200, response.status_code
    body = b"".join(response.streaming_content)
    assert body.startswith(b"\xef\xbb\xbf"), "UTF-8 byte order mark for Excel"
    return response, list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))


def ids(rows) -> set[int]:
    return {int(row[0]) for row in rows[1:]}


# The file ----------------------------------------------------------------------------------------


class TestExport:
    def test_header_and_rows(self, staff_client, small, settings):
        settings.TIME_ZONE = "Europe/Oslo"
        message, rows = small
        response, table = download(staff_client, export_url(message))
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert response["Content-Disposition"] == f'attachment; filename="message-{message.pk}-receivers.csv"'
        assert table[0] == HEADER
        by_id = {int(row[0]): row for row in table[1:]}
        assert list(by_id) == sorted(r.pk for r in rows.values())  # this message's only, in id order
        ada = rows["sent"]
        assert by_id[ada.pk] == [
            str(ada.pk),
            "Ada Lovelace",
            "ada",
            ada.send_to,
            "en",
            "sent",
            "Sent",
            "Delivered",
            "1",
            "0",
            "2026-01-15T13:30:05+01:00",
            "",
        ]
        bounced = by_id[rows["bounced"].pk]
        assert bounced[7] == "Bounced" and bounced[11] == "550 5.1.1 User unknown"
        failed = by_id[rows["failed"].pk]
        assert failed[5:] == ["failed", "Failed, retrying", "", "0", "2", "", "451 4.3.0 Try again later"]
        error = by_id[rows["error"].pk]
        assert error[1] == "" and error[2] == "ola"  # no name: the column is empty, the username says who
        assert by_id[rows["cancelled"].pk][5:7] == ["cancelled", "Expired, not sent"]
        # The status label is the one the status page's badge shows.
        for receiver in MessageReceiver.objects.filter(message=message):
            assert by_id[receiver.pk][6] == status_labels.receiver_label(receiver).text, receiver.status

    def test_preference_states_read_as_on_the_status_page(self, staff_client, make_user):
        message = sent_message(context_type=Message.ContextType.FEEDBACK)
        digest = receiver(sent_message(context_type=Message.ContextType.DIGEST), make_user(), status="sent")
        R = MessageReceiver.Status
        rows = {
            "skipped": receiver(message, make_user(), status=R.SKIPPED),
            "held": receiver(message, make_user(), status=R.HELD),
            "in_digest": receiver(message, make_user(), status=R.SENT, digest=digest),
        }
        _response, table = download(staff_client, export_url(message))
        by_id = {int(row[0]): row for row in table[1:]}
        assert [by_id[rows[key].pk][5:7] for key in rows] == [
            ["skipped", "Skipped by preference"],
            ["held", "Held for digest"],
            ["sent", "Sent in a digest"],
        ]

    def test_non_ascii_names_and_addresses(self, staff_client, small):
        message, rows = small
        _response, table = download(staff_client, export_url(message))
        row = next(r for r in table if r[0] == str(rows["bounced"].pk))
        assert row[1] == "Bjørn Ødegård" and row[3] == "bjørn@example.org"
        body = b"".join(staff_client.get(export_url(message)).streaming_content)
        assert "Bjørn Ødegård".encode() in body  # UTF-8, not Latin-1

    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({"status": "failed"}, {"failed", "permanent"}),
            ({"status": "sent"}, {"sent", "bounced"}),
            ({"outcome": "hard_bounce"}, {"bounced"}),
            ({"language": "nb"}, {"bounced", "error"}),
            ({"q": "Nordmann"}, {"failed"}),  # last name
            ({"q": "Ada"}, {"sent", "permanent"}),  # first name
            ({"q": "bjørn@"}, {"bounced"}),  # address
            ({"status": "sent", "language": "nb"}, {"bounced"}),
            (
                {"status": "bogus"},
                set(EVERYONE),
            ),  # as the table: ignored
            ({"page": "2", "sort": "-user"}, set(EVERYONE)),
        ],
    )
    def test_filters_are_the_tables(self, staff_client, small, params, expected):
        message, rows = small
        _response, table = download(staff_client, export_url(message, **params))
        assert ids(table) == {rows[name].pk for name in expected}
        page = staff_client.get(
            reverse("messaging:message_status", args=[message.pk]), params
        ).content.decode()
        if "page" not in params:
            assert {rows[n].pk for n in rows if f'data-receiver-id="{rows[n].pk}"' in page} == ids(table)

    def test_formula_injection_is_neutralised(self, staff_client, make_user):
        message = sent_message()
        user = make_user(
            first_name='=HYPERLINK("http://evil.example")', last_name="x", username="+cmd|' /C calc'!A0"
        )
        hostile = receiver(
            message,
            user,
            send_to="-2+3@example.org",
            status=R.FAILED,
            last_error="@SUM(1+1)*cmd|' /C calc'!A0",
        )
        tab = make_user(first_name="Tab", last_name="", username="\ttab")
        plain = receiver(
            message, tab, send_to="\rret@example.org", status=R.ERROR, last_error="550 = - + @ inside"
        )
        _response, table = download(staff_client, export_url(message))
        rows = {int(row[0]): row for row in table[1:]}
        assert rows[hostile.pk][1] == '\'=HYPERLINK("http://evil.example") x'
        assert rows[hostile.pk][2] == "'+cmd|' /C calc'!A0"
        assert rows[hostile.pk][3] == "'-2+3@example.org"
        assert rows[hostile.pk][11] == "'@SUM(1+1)*cmd|' /C calc'!A0"
        assert rows[plain.pk][2] == "'\ttab" and rows[plain.pk][3] == "'\rret@example.org"
        assert rows[plain.pk][11] == "550 = - + @ inside"  # only a cell's first character matters
        for row in table:
            for cell in row:
                assert not cell.startswith(exports.FORMULA_STARTS), cell

    @pytest.mark.parametrize(
        ("zone", "expected"),
        [
            ("Europe/Oslo", "2026-01-15T13:30:05+01:00"),
            ("America/New_York", "2026-01-15T07:30:05-05:00"),
            ("UTC", "2026-01-15T12:30:05+00:00"),
        ],
    )
    def test_sent_is_iso_8601_in_the_current_time_zone(self, staff_client, small, settings, zone, expected):
        settings.TIME_ZONE = zone
        message, rows = small
        _response, table = download(staff_client, export_url(message, status="sent"))
        assert {row[10] for row in table[1:]} == {expected}
        summer = MessageReceiver.objects.filter(pk=rows["sent"].pk)
        summer.update(sent_datetime=datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
        if zone == "Europe/Oslo":
            _response, table = download(staff_client, export_url(message, q="ada"))
            assert table[1][10] == "2026-07-01T14:00:00+02:00"  # daylight saving time

    def test_labels_in_the_requests_language(self, staff_client, small):
        message, _rows = small
        with translation.override(translation.get_language()):  # the request activates nb
            response = staff_client.get(export_url(message, status="sent"), HTTP_ACCEPT_LANGUAGE="nb")
            # The body is read after the view returned, in whatever language the thread has then.
            translation.activate("en")
            body = b"".join(response.streaming_content).decode("utf-8-sig")
        table = list(csv.reader(io.StringIO(body, newline="")))
        with translation.override("nb"):
            header, sent = (
                exports.header(),
                str(status_labels.receiver_label(MessageReceiver(status=R.SENT)).text),
            )
        assert sent != "Sent" and table[0] == header
        assert {row[6] for row in table[1:]} == {sent}

    def test_reads_tuples_not_receivers_nor_their_content(self, staff_client, small):
        message, _rows = small
        made = []

        def count(sender, instance, **kwargs):
            made.append(instance)

        post_init.connect(count, sender=MessageReceiver)
        try:
            with CaptureQueriesContext(connection) as ctx:
                _response, table = download(staff_client, export_url(message))
        finally:
            post_init.disconnect(count, sender=MessageReceiver)
        assert len(table) == 1 + len(EVERYONE) and not made
        receiver_sql = [q["sql"] for q in ctx.captured_queries if "messaging_messagereceiver" in q["sql"]]
        assert receiver_sql and not [q for q in receiver_sql if "message_content" in q or "status_data" in q]

    def test_a_message_without_receivers_is_just_the_header(self, staff_client):
        _response, table = download(staff_client, export_url(sent_message()))
        assert table == [HEADER]

    def test_unknown_message_is_404(self, staff_client):
        assert staff_client.get(reverse("messaging:receiver_export", args=[987654])).status_code == 404

    def test_needs_the_view_permission(self, client, make_user, small):
        message, _rows = small
        url = export_url(message)
        assert client.get(url).status_code == 302  # to the login page
        client.force_login(
            grant(make_user(is_staff=True), "compose_message", "send_message", "resend_message")
        )
        assert client.get(url).status_code == 403
        client.force_login(grant(make_user(is_staff=False), "view_message"))
        assert client.get(url).status_code == 403
        client.force_login(grant(make_user(is_staff=True), "view_message"))
        assert client.get(url).status_code == 200
        assert client.post(url).status_code == 405


# The total on the status page --------------------------------------------------------------------


def filter_counts(ctx) -> list[str]:
    """COUNTs over the receivers the filters select (receiver_filter's `id >=` bound): not the
    resendable counts the page makes when feedback came back."""
    return [
        q["sql"]
        for q in ctx.captured_queries
        if COUNT_SQL in q["sql"] and '"messaging_messagereceiver"."id" >=' in q["sql"]
    ]


class TestFilteredTotal:
    def status(self, client, message, params=None, **extra):
        url = reverse("messaging:message_status", args=[message.pk])
        cache.clear()  # the failure groups kept from the request before: compare like with like
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url, params or {}, **extra)
        assert response.status_code in (200, 286)
        return response.content.decode(), ctx

    def test_no_total_and_no_count_without_a_filter(self, staff_client, small):
        message, _rows = small
        for params in ({}, {"page": "1"}, {"sort": "-user"}, {"q": "  "}, {"status": "bogus"}):
            page, ctx = self.status(staff_client, message, params)
            assert 'id="receiver-match-count"' not in page, params
            assert not filter_counts(ctx), params
            assert 'id="receiver-total"' in page  # the place htmx fills when a filter is set
            assert f'href="{export_url(message)}' in page  # every receiver can be downloaded

    @pytest.mark.parametrize(
        ("params", "n", "text"),
        [
            ({"status": "error"}, 1, "1 receiver matches"),
            ({"status": "sent"}, 2, "2 receivers match"),
            ({"language": "nb", "outcome": "hard_bounce"}, 1, "1 receiver matches"),
            ({"q": "NORDMANN"}, 1, "1 receiver matches"),
        ],
    )
    def test_one_count_with_a_filter(self, staff_client, small, params, n, text):
        message, _rows = small
        _page, unfiltered = self.status(staff_client, message)
        page, ctx = self.status(staff_client, message, params)
        assert f'data-count="{n}"' in page and text in page
        assert len(filter_counts(ctx)) == 1
        # That count, nothing else (a search finds its users first, once).
        extra = 1 + ("q" in params)
        assert len(ctx.captured_queries) == len(unfiltered.captured_queries) + extra
        (count_sql,) = filter_counts(ctx)
        assert "message_content" not in count_sql
        assert f"LIMIT {selectors.MATCHES_COUNTED + 1}" in count_sql  # never all of a big message
        query = "&amp;".join(f"{k}={v}" for k, v in params.items())
        assert f'href="{export_url(message)}?{query}"' in page

    def test_a_search_that_finds_nobody_reads_no_receiver(self, staff_client, small):
        message, _rows = small
        page, ctx = self.status(staff_client, message, {"q": "nobody-has-this"})
        assert 'data-count="0"' in page and "0 receivers match" in page
        assert not filter_counts(ctx)  # no user found: no receiver to count or list
        assert 'data-receiver-id="' not in page

    def test_an_htmx_filter_submit_swaps_the_total_too(self, staff_client, small):
        message, _rows = small
        page, ctx = self.status(
            staff_client, message, {"status": "sent"}, HTTP_HX_TARGET="receiver-results", **HTMX
        )
        assert page.lstrip().startswith('<div id="receiver-results"')  # the fragment, not the page
        assert '<div id="receiver-total" hx-swap-oob="true">' in page
        assert 'data-count="2"' in page and "2 receivers match" in page
        assert f'href="{export_url(message)}?status=sent"' in page
        assert len(filter_counts(ctx)) == 1
        # Back to no filter: the total goes away (the region is swapped empty of it).
        page, ctx = self.status(staff_client, message, {}, HTTP_HX_TARGET="receiver-results", **HTMX)
        assert '<div id="receiver-total" hx-swap-oob="true">' in page and "receiver-match-count" not in page
        assert not filter_counts(ctx)

    def test_the_poll_while_sending_counts_only_with_a_filter(self, staff_client, small):
        message, rows = small
        Message.objects.filter(pk=message.pk).update(status=Message.Status.SENDING)
        poll = {"HTTP_HX_TRIGGER": "receiver-results", **HTMX}
        page, ctx = self.status(staff_client, message, {}, **poll)
        assert 'hx-trigger="every 2s"' in page and not filter_counts(ctx)
        page, ctx = self.status(staff_client, message, {"status": "not_sent"}, **poll)
        assert 'data-count="1"' in page and len(filter_counts(ctx)) == 1
        MessageReceiver.objects.filter(pk=rows["failed"].pk).update(status=R.NOT_SENT)
        page, _ctx = self.status(staff_client, message, {"status": "not_sent"}, **poll)
        assert 'data-count="2"' in page  # it follows the sending


# Memory at 100,000 receivers ---------------------------------------------------------------------

BIG_N = 100_000
BATCH = 5_000


def current_rss_kib() -> int | None:
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def insert_receivers(message, users, n: int) -> None:
    """`n` receivers (90 % sent, 6 % failed, 4 % error) with one executemany per batch:
    bulk_create spends most of a second per thousand rows compiling SQL in Python, a minute here
    on a busy machine. Every other column gets its model default, so new columns are filled too."""
    fields = [f for f in MessageReceiver._meta.concrete_fields if not f.primary_key]
    template = MessageReceiver(
        message=message,
        user=users[0],
        sending_success_count=1,
        # What the export must leave in the database.
        message_content_html="<p>Hei</p>",
        message_content_plain="Hei",
    )
    base = [f.get_db_prep_save(f.pre_save(template, add=True), connection) for f in fields]
    column = {f.attname: i for i, f in enumerate(fields)}
    sent_at = MessageReceiver._meta.get_field("sent_datetime").get_db_prep_save(SENT_AT, connection)
    kinds = {
        R.SENT: (sent_at, ""),
        R.FAILED: (None, "451 4.7.1 Greylisted, please try again later"),
        R.ERROR: (None, "550 5.1.1 No such user here"),
    }
    statuses = [R.SENT] * 90 + [R.FAILED] * 6 + [R.ERROR] * 4
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        connection.ops.quote_name(MessageReceiver._meta.db_table),
        ", ".join(connection.ops.quote_name(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )

    def row(i: int) -> list:
        values = list(base)
        status = statuses[i % 100]
        values[column["user_id"]] = users[i % len(users)].pk
        values[column["send_to"]] = f"big{i}@example.org"
        values[column["language"]] = "nb" if i % 2 else "en"
        values[column["status"]] = str(status)
        values[column["sent_datetime"]], values[column["last_error"]] = kinds[status]
        return values

    with connection.cursor() as cursor:
        for start in range(0, n, BATCH):
            cursor.executemany(sql, [row(i) for i in range(start, min(start + BATCH, n))])


def test_streams_100000_receivers_in_flat_memory(staff_client, capsys):
    User = get_user_model()
    users = User.objects.bulk_create(
        User(
            username=f"big{i}",
            first_name=f"Åse{i}",
            last_name="Bjørnstad-Ødegård",
            email=f"big{i}@example.org",
        )
        for i in range(200)
    )
    message = sent_message()
    started = time.monotonic()
    insert_receivers(message, users, BIG_N)
    created = time.monotonic() - started

    rss_before, peak_before = current_rss_kib(), peak_rss_kib()
    tracemalloc.start()
    try:
        response = staff_client.get(export_url(message))
        assert response.status_code == 200 and response.streaming
        chunks = size = largest = lines = 0
        for chunk in response.streaming_content:
            chunks += 1
            size += len(chunk)
            largest = max(largest, len(chunk))
            lines += chunk.count(b"\r\n")
        _current, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_after, peak_after = current_rss_kib(), peak_rss_kib()
    streamed = time.monotonic() - started - created

    assert lines == BIG_N + 1  # the header and every receiver
    with capsys.disabled():
        print(
            f"\n[receiver export] {BIG_N:,} receivers ({created:.1f} s to insert), {lines - 1:,} rows, "
            f"{size:,} bytes of CSV in {chunks:,} chunks (largest {largest:,} bytes) in {streamed:.1f} s;"
            f"\n[receiver export] tracemalloc peak while streaming: {traced_peak / 2**20:.2f} MiB; "
            f"RSS before {rss_before} KiB, after {rss_after} KiB; "
            f"peak RSS before {peak_before} KiB, after {peak_after} KiB"
        )
    # Structural bounds, not timings: the file is ~10 MB, so a response that held all of it (or
    # every row, or every receiver) could not stay under its size; streaming needs a few MB.
    assert size > 8 * 2**20
    assert traced_peak < min(50 * 2**20, size)
    assert largest < 1 * 2**20  # streamed in small chunks, not one buffer
