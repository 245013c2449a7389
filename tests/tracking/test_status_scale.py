"""The live status page at a million receivers (see tests/benchmarks/status_page.py for the
figures): polls that find nothing changed answer 204 before reading anything else, the page
keeps polling while a worker still holds a receiver, pages of the table are found by id (an
anchor makes deep pages as cheap as the first), rows are rendered without django-tables2's cell
machinery but with the same markup, counts are bounded, failure groups are not regrouped for
every watcher, and the receiver search is the one people search (issue 30: full names in any
word order), shared with the People page and the compose page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_tables2 import RequestConfig

from messaging.engine import transitions
from messaging.models import AuditEvent, Message, MessageReceiver, Suppression, UserEmail
from messaging.tracking import paging, people, search, selectors
from messaging.tracking.tables import ReceiverTable
from messaging.tracking.views import messages as status_views
from tests.tracking.test_status_reading import PERMANENT, RETRYING, SENT, make_send, staff  # noqa: F401 (a fixture)

M, R = Message.Status, MessageReceiver.Status
POLL = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TRIGGER": "receiver-results"}
VERSION = re.compile(r'"X-Status-Version": "([0-9a-f]+)"')

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()  # failure groups are kept between requests
    yield
    cache.clear()


def status_url(message: Message, **params) -> str:
    url = reverse("messaging:message_status", args=[message.pk])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


def version_of(page: str) -> str:
    match = VERSION.search(page)
    assert match, "the page does not poll"
    return match.group(1)


def poll(client, url: str, version: str):
    return client.get(url, **POLL, HTTP_X_STATUS_VERSION=version)


def sending(make_user, *states) -> Message:
    """A message still sending (its page polls every 2 s), one receiver per state."""
    return make_send(make_user, *states, (R.NOT_SENT, False, ""), status=M.SENDING)


def in_a_minute():
    return timezone.now() + timedelta(minutes=1)


def receiver_sql(ctx) -> list[str]:
    table = connection.ops.quote_name(MessageReceiver._meta.db_table)
    return [q["sql"] for q in ctx.captured_queries if table in q["sql"]]


# Polls that find nothing changed -----------------------------------------------------------------


class TestNothingChanged:
    def test_a_poll_with_the_version_shown_gets_204_and_reads_no_receiver(self, staff_client, make_user):
        message = sending(make_user, SENT, PERMANENT)
        url = status_url(message)
        version = version_of(staff_client.get(url).content.decode())
        with CaptureQueriesContext(connection) as ctx:
            response = poll(staff_client, url, version)
        assert response.status_code == 204 and response.content == b""
        # The time it checked, for "Updated": ISO for the <time> element, and as shown.
        iso, shown = response[status_views.CHECKED_HEADER].split(" ")
        assert re.fullmatch(r"\d\d:\d\d:\d\d", shown) and iso.startswith(str(timezone.localdate()))
        assert not receiver_sql(ctx)  # in progress: nothing about its receivers is read
        # The session, the user and their permissions, the message, its audit events.
        assert len(ctx.captured_queries) <= 6

    def test_only_the_poll_is_answered_so(self, staff_client, make_user):
        message = sending(make_user, SENT)
        url = status_url(message)
        version = version_of(staff_client.get(url).content.decode())
        # The full page, and an htmx request from anything but the poll, are always rendered.
        assert staff_client.get(url, HTTP_X_STATUS_VERSION=version).status_code == 200
        other = staff_client.get(url, HTTP_HX_REQUEST="true", HTTP_X_STATUS_VERSION=version)
        assert other.status_code == 200
        assert poll(staff_client, url, "something-else").status_code == 200

    def test_another_filter_page_or_order_is_another_version(self, staff_client, make_user):
        message = sending(make_user, SENT, PERMANENT)
        version = version_of(staff_client.get(status_url(message)).content.decode())
        for params in ({"status": "failed"}, {"page": "2"}, {"sort": "user"}, {"q": "x"}):
            assert poll(staff_client, status_url(message, **params), version).status_code == 200, params
        filtered = status_url(message, status="failed")
        version = version_of(staff_client.get(filtered).content.decode())
        assert poll(staff_client, filtered, version).status_code == 204

    def test_published_counts_change_the_version(self, staff_client, make_user):
        message = sending(make_user, SENT)
        url = status_url(message)
        version = version_of(staff_client.get(url).content.decode())
        # A worker records a result and publishes the counts (every ~2 s while sending).
        MessageReceiver.objects.filter(message=message, status=R.NOT_SENT).update(status=R.SENT)
        transitions.roll_up(message.pk)
        response = poll(staff_client, url, version)
        page = response.content.decode()
        assert response.status_code == 286  # all sent now: the rows and counts, and polling stops
        assert 'id="count-sent">2<' in page and 'data-polling="false"' in page

    def test_an_action_changes_the_version(self, staff_client, make_user):
        message = sending(make_user, SENT)
        url = status_url(message)
        version = version_of(staff_client.get(url).content.decode())
        staff_client.post(reverse("messaging:message_pause", args=[message.pk]), HTTP_HX_REQUEST="true")
        response = poll(staff_client, url, version)
        assert response.status_code == 200 and 'id="paused-banner"' in response.content.decode()

    def test_an_audit_event_changes_the_version(self, staff_client, make_user):
        message = sending(make_user, SENT)
        url = status_url(message)
        version = version_of(staff_client.get(url).content.decode())
        AuditEvent.objects.create(
            message=message, action=AuditEvent.Action.RESENT_ALL, details={"receivers": 0}
        )
        assert poll(staff_client, url, version).status_code == 200

    def test_the_page_is_rendered_afresh_at_least_once_a_minute(self, make_user):
        message = sending(make_user, SENT)
        now = timezone.now()
        params = RequestFactory().get("/").GET
        same = selectors.status_version(message, params, selectors.LIVE, now=now)
        assert same == selectors.status_version(message, params, selectors.LIVE, now=now)
        later = now + timedelta(seconds=selectors.VERSION_MAX_AGE_SECONDS)
        assert selectors.status_version(message, params, selectors.LIVE, now=later) != same
        assert selectors.status_version(message, params, selectors.RETRYING, now=now) != same

    def test_when_nothing_can_change_any_more_the_poll_stops(self, staff_client, make_user):
        message = make_send(make_user, SENT, PERMANENT)
        url = status_url(message)
        page = staff_client.get(url).content.decode()
        assert 'data-polling="false"' in page and "X-Status-Version" not in page
        assert poll(staff_client, url, "from-when-it-was-sending").status_code == 286


# Polling while a worker holds a receiver -----------------------------------------------------------


class TestStillChanging:
    def hold(self, message: Message, **fields) -> None:
        MessageReceiver.objects.filter(pk=message.receivers.order_by("id").first().pk).update(**fields)

    @pytest.mark.parametrize(
        ("status", "held"),
        [(M.CANCELLED, (R.NOT_SENT, False, "")), (M.EXPIRED, (R.NOT_SENT, False, "")), (M.ERROR, PERMANENT)],
    )
    def test_a_live_claim_keeps_a_stopped_or_finished_message_live(self, make_user, status, held):
        message = make_send(make_user, held, SENT, status=status)
        assert message.status == status and selectors.pending_change(message) is None
        # A worker holds it: the cancel left it to its worker, or staff resend it by hand.
        self.hold(message, claimed_by="worker-1", lease_expires_datetime=in_a_minute())
        assert selectors.held_by_workers(message) and selectors.pending_change(message) == selectors.LIVE

    def test_a_receiver_in_flight_keeps_it_live_even_without_an_owner(self, make_user):
        message = make_send(make_user, (R.NOT_SENT, False, ""), status=M.CANCELLED)
        self.hold(message, in_flight_since=timezone.now())
        assert selectors.pending_change(message) == selectors.LIVE

    def test_a_claim_whose_lease_ran_out_or_a_receiver_set_aside_is_not_a_worker(self, make_user):
        message = make_send(make_user, (R.NOT_SENT, False, ""), status=M.CANCELLED)
        self.hold(
            message, claimed_by="dead-worker", lease_expires_datetime=timezone.now() - timedelta(seconds=1)
        )
        assert not selectors.held_by_workers(message)
        # Set aside until a time (a used-up sending limit): a lease without an owner.
        self.hold(message, claimed_by="", lease_expires_datetime=timezone.now() + timedelta(minutes=5))
        assert not selectors.held_by_workers(message) and selectors.pending_change(message) is None

    def test_retries_keep_it_polling_slowly(self, make_user):
        assert selectors.pending_change(make_send(make_user, SENT, RETRYING)) == selectors.RETRYING
        assert selectors.pending_change(make_send(make_user, SENT, PERMANENT)) is None

    def test_in_progress_and_scheduled_are_live(self, make_user):
        message = make_send(make_user, SENT)
        for status in (M.QUEUED, M.PREPARING, M.SENDING, M.BLOCKED, M.PAUSED, M.SCHEDULED):
            message.status = status
            assert selectors.pending_change(message) == selectors.LIVE, status

    def test_the_page_of_a_cancelled_message_polls_while_its_worker_records(self, staff_client, make_user):
        message = make_send(make_user, (R.NOT_SENT, False, ""), SENT, status=M.CANCELLED)
        self.hold(
            message, claimed_by="worker-1", lease_expires_datetime=timezone.now() + timedelta(minutes=1)
        )
        url = status_url(message)
        page = staff_client.get(url).content.decode()
        assert 'data-polling="true"' in page and 'hx-trigger="every 2s"' in page
        version = version_of(page)
        assert poll(staff_client, url, version).status_code == 204
        # The worker records its result and lets go: the numbers can no longer change.
        self.hold(message, status=R.SENT, claimed_by="", lease_expires_datetime=None)
        transitions.roll_up(message.pk)
        last = poll(staff_client, url, version)
        assert last.status_code == 286 and 'id="count-sent">2<' in last.content.decode()

    def test_one_live_message_among_finished_ones_is_found_in_three_queries(
        self, make_user, django_assert_max_num_queries
    ):
        finished = [make_send(make_user, SENT) for _ in range(3)]
        cancelled = make_send(make_user, (R.NOT_SENT, False, ""), status=M.CANCELLED)
        with django_assert_max_num_queries(3):
            assert selectors.pending_change_of([*finished, cancelled]) is None
        self.hold(cancelled, in_flight_since=timezone.now())
        assert selectors.pending_change_of([*finished, cancelled]) == selectors.LIVE
        assert selectors.pending_change_of([*finished, make_send(make_user, RETRYING)]) == selectors.RETRYING
        assert selectors.pending_change_of([]) is None


class TestMessageListRefreshes:
    """Issue 30: the message list, like the status page, refreshes itself while a message on it
    can still change (sending, scheduled, a receiver held by a worker, retries pending)."""

    URL = reverse("messaging:message_list")
    LIST_POLL = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TRIGGER": "message-results"}

    def results(self, page: str) -> str:
        return re.search(r'<div id="message-results".*?>', page, re.S).group(0)

    def test_it_polls_while_a_cancelled_message_still_has_mail_in_flight(self, staff_client, make_user):
        make_send(make_user, SENT)
        message = make_send(make_user, (R.NOT_SENT, False, ""), SENT, status=M.CANCELLED)
        assert 'data-polling="false"' in self.results(staff_client.get(self.URL).content.decode())
        TestStillChanging().hold(message, in_flight_since=timezone.now())

        opening = self.results(staff_client.get(self.URL, {"status": "cancelled"}).content.decode())
        assert 'data-polling="true"' in opening and 'hx-trigger="every 5s"' in opening
        assert 'hx-get="/messages/?status=cancelled"' in opening, "a refresh keeps the filter"

        # The worker records what it handed over: the refresh shows it and polls no more.
        TestStillChanging().hold(message, status=R.SENT, in_flight_since=None)
        transitions.roll_up(message.pk)
        refresh = staff_client.get(self.URL, {"status": "cancelled"}, **self.LIST_POLL).content.decode()
        assert "<html" not in refresh and 'data-polling="false"' in self.results(refresh)
        assert "hx-trigger" not in self.results(refresh)
        row = re.search(rf'<tr [^>]*id="message-{message.pk}".*?</tr>', refresh, re.S).group(0)
        assert re.findall(r">\s*(\d+)\s*</td>", row)[-3:] == ["2", "2", "0"], row

    def test_sending_polls_every_5_seconds_and_pending_retries_every_15(self, staff_client, make_user):
        sending_now = sending(make_user, SENT)
        page = self.results(staff_client.get(self.URL).content.decode())
        assert 'hx-trigger="every 5s"' in page
        sending_now.delete()
        make_send(make_user, SENT, RETRYING)
        assert 'hx-trigger="every 15s"' in self.results(staff_client.get(self.URL).content.decode())

    def test_only_the_page_shown_counts(self, staff_client, make_user):
        sending(make_user, SENT)  # the oldest: on page 2
        for _ in range(status_views.MESSAGES_PER_PAGE):
            make_send(make_user, SENT)
        first = self.results(staff_client.get(self.URL).content.decode())
        assert 'data-polling="false"' in first
        second = self.results(staff_client.get(self.URL, {"page": 2}).content.decode())
        assert 'data-polling="true"' in second


class TestActionsKeepTheFilters:
    def test_pause_answers_with_the_receivers_the_page_was_filtered_to(self, staff_client, make_user):
        message = sending(make_user, SENT, SENT)
        page = staff_client.get(status_url(message, status="not_sent")).content.decode()
        pause = reverse("messaging:message_pause", args=[message.pk])
        assert f'hx-post="{pause}?status=not_sent"' in page
        answer = staff_client.post(f"{pause}?status=not_sent", **{"HTTP_HX_REQUEST": "true"}).content.decode()
        assert 'data-status="paused"' in answer
        assert len(re.findall(r'<tr id="receiver-\d+"', answer)) == 1, (
            "the answer shows only the filtered rows"
        )
        assert 'data-count="1"' in answer


# Pages of the table ---------------------------------------------------------------------------------


@pytest.fixture
def many(make_user) -> Message:
    """A sending message with 60 receivers, every third one failed."""
    message = Message.objects.create(status=M.SENDING, composed_content={"en": {"subject": "Many"}})
    for i in range(60):
        user = make_user(first_name=f"P{i:02}", last_name="Many")
        MessageReceiver.objects.create(
            message=message, user=user, send_to=user.email, status=R.FAILED if i % 3 == 0 else R.NOT_SENT
        )
    transitions.roll_up(message.pk)
    return message


def page_ids(page: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="receiver-\d+" data-receiver-id="(\d+)"', page)]


def paginator_for(message: Message, per_page: int, anchor=None, **filters) -> paging.SeekPaginator:
    receivers = MessageReceiver.objects.filter(message=message, **filters).order_by("id")
    return paging.SeekPaginator(receivers, per_page, anchor=anchor)


class TestPaging:
    def test_an_anchor_gives_the_same_pages_as_counting_from_the_first(self, many):
        plain = paginator_for(many, 7)
        expected = {n: [r.pk for r in plain.page(n).object_list] for n in range(1, 10)}
        assert sum(map(len, expected.values())) == 60 and len(expected[9]) == 4
        for anchor_page in (2, 5, 9):
            anchor = paging.Anchor(anchor_page, expected[anchor_page][0])
            for n in range(1, 10):
                page = paginator_for(many, 7, anchor).page(n)
                assert [r.pk for r in page.object_list] == expected[n], (anchor_page, n)
                assert page.has_next() == (n < 9)

    def test_the_links_of_a_page_carry_its_anchor(self, many):
        paginator = paginator_for(many, 7)
        first = paginator.page(4).object_list[0].pk
        assert paginator.link_anchor == f"4.{first}"
        assert paging.parse_anchor(paginator.link_anchor) == paging.Anchor(4, first)

    def test_another_order_or_a_garbled_anchor_counts_from_the_first(self, many):
        by_status = MessageReceiver.objects.filter(message=many).order_by("status", "id")
        paginator = paging.SeekPaginator(by_status, 7, anchor=paging.Anchor(2, 10**6))
        assert paginator.anchor is None
        assert [r.pk for r in paginator.page(2).object_list] == list(
            by_status.values_list("pk", flat=True)[7:14]
        )
        assert paginator.link_anchor == ""
        for garbled in ("", "x", "3", "0.5", "-1.5", "3.x", "1" * 30 + ".1", "1.2.3"):
            assert paging.parse_anchor(garbled) is None, garbled

    def test_no_offset_over_joined_rows_and_none_from_a_link(self, staff_client, many):
        url = status_url(many)
        with CaptureQueriesContext(connection) as ctx:
            page2 = staff_client.get(url, {"page": 2}).content.decode()
        offsets = [sql for sql in receiver_sql(ctx) if "OFFSET" in sql]
        assert offsets and all("JOIN" not in sql and "message_content" not in sql for sql in offsets)
        # Its links carry its anchor; following one reads from there: a page's ids skipped.
        first = page_ids(page2)[0]
        assert f"?page=3&amp;seek=2.{first}" in page2 and f"?page=1&amp;seek=2.{first}" in page2
        with CaptureQueriesContext(connection) as ctx:
            page3 = staff_client.get(url, {"page": 3, "seek": f"2.{first}"}).content.decode()
        skipped = [int(n) for sql in receiver_sql(ctx) for n in re.findall(r"OFFSET (\d+)", sql)]
        assert skipped == [status_views.RECEIVERS_PER_PAGE]
        assert page_ids(page3) == page_ids(staff_client.get(url, {"page": 3}).content.decode())
        assert len(page_ids(page3)) == 10 and 'class="next page-item"' not in page3

    def test_filtered_pages_and_their_links(self, staff_client, many):
        failed = list(many.receivers.filter(status=R.FAILED).order_by("id").values_list("pk", flat=True))
        url = status_url(many)
        page1 = staff_client.get(url, {"status": "failed"}).content.decode()
        assert page_ids(page1) == failed[:25]  # 20 failed: one page, no next
        assert 'class="next page-item"' not in page1
        assert (
            staff_client.get(url, {"status": "failed", "page": 5}).status_code == 200
        )  # past the end: page 1

    def test_the_request_does_not_choose_how_many_rows(self, staff_client, many):
        page = staff_client.get(status_url(many), {"per_page": 1000}).content.decode()
        assert len(page_ids(page)) == status_views.RECEIVERS_PER_PAGE


# Rows without django-tables2's cell machinery, same markup -------------------------------------------


class TestRows:
    def test_the_rows_are_what_django_tables2_renders(self, make_user):
        message = make_send(
            make_user,
            SENT,
            RETRYING,
            PERMANENT,
            (R.ERROR, False, ""),
            (R.SENT, False, MessageReceiver.Outcome.HARD_BOUNCE),
            (R.NOT_SENT, False, ""),
            (R.HELD, False, ""),
            (R.CANCELLED, False, ""),
        )
        receivers = list(message.receivers.order_by("id"))
        MessageReceiver.objects.filter(pk=receivers[4].pk).update(outcome_detail="550 <gone> & " + "x" * 100)
        MessageReceiver.objects.filter(pk=receivers[5].pk).update(
            send_to="", language="", lease_expires_datetime=timezone.now() + timedelta(minutes=3)
        )
        MessageReceiver.objects.filter(pk=receivers[6].pk).update(
            next_attempt_datetime=timezone.now() + timedelta(days=1), language="nb"
        )
        MessageReceiver.objects.filter(pk=receivers[7].pk).update(
            status_data={"delivery_uncertain": {"timestamp": "2026-12-05T10:00:00+00:00"}}
        )
        Suppression.objects.create(address=receivers[2].send_to.lower(), reason="hard_bounce")
        request = RequestFactory().get("/", {"status": ""})
        queryset = selectors.receiver_filter(message, request.GET).qs

        generic = ReceiverTable(queryset, can_resend=True, query="status=")
        RequestConfig(request, paginate={"per_page": 25}).configure(generic)
        generic_html = generic.as_html(request)
        fast = ReceiverTable(queryset, can_resend=True, query="status=")
        RequestConfig(request, paginate=False).configure(fast)
        paging.paginate(fast, request.GET, 25)

        def rows(html: str) -> str:
            body = re.search(r"<tbody[^>]*>(.*)</tbody>", html, re.S).group(1)
            return re.sub(r">\s+<", "><", re.sub(r"\s+", " ", body)).strip()

        assert rows(generic_html) == rows(f"<tbody>{fast.body_html()}</tbody>")
        assert rows(generic_html).count("<tr ") == 8

    def test_no_receivers_say_so(self, staff_client, many):
        page = staff_client.get(status_url(many), {"q": "nobody"}).content.decode()
        assert "No receivers match." in page and not page_ids(page)


# Counts and failure groups ------------------------------------------------------------------------------


class TestBounded:
    def test_matches_are_counted_up_to_a_bound(self, staff_client, many, monkeypatch):
        monkeypatch.setattr(selectors, "MATCHES_COUNTED", 5)
        page = staff_client.get(status_url(many), {"status": "failed"}).content.decode()
        assert "More than 5 receivers match" in page and 'data-more="true"' in page
        page = staff_client.get(status_url(many), {"q": "P03 many"}).content.decode()
        assert "1 receiver matches" in page

    def test_failure_groups_are_grouped_once_per_change_of_the_counts(self, make_user):
        message = make_send(make_user, SENT, PERMANENT, RETRYING)
        counts = {"failed": 2, "error": 0}
        with CaptureQueriesContext(connection) as ctx:
            first = selectors.failure_groups(message, counts)
            assert selectors.failure_groups(message, counts) == first
        assert len(ctx.captured_queries) == 1
        assert sorted(first) == [("451 busy", False, 1), ("550 5.1.1 no such user", True, 1)]
        MessageReceiver.objects.filter(message=message, status=R.FAILED).update(last_error="421 later")
        with CaptureQueriesContext(connection) as ctx:
            changed = selectors.failure_groups(message, {"failed": 2, "error": 1})
        assert len(ctx.captured_queries) == 1 and ("421 later", False, 1) in changed
        with CaptureQueriesContext(connection) as ctx:
            assert selectors.failure_groups(message, {"failed": 0, "error": 0}) == []
        assert not ctx.captured_queries  # no failure counted: nothing to group
        assert selectors.failure_groups(message) == changed  # uncached (the sender's report)


# One rule for finding people ------------------------------------------------------------------------------


@pytest.fixture
def ava(make_user):
    user = make_user(first_name="Ava", last_name="Harris", username="aharris", email="ava.h@uni.example")
    UserEmail.objects.create(user=user, email="ava@gmail.example")
    return user


@pytest.fixture
def others(make_user):
    return [
        make_user(first_name="Ava", last_name="Jones", username="ajones"),
        make_user(first_name="Harris", last_name="Berg", username="hberg"),
        make_user(first_name="Eva", last_name="Harrison", username="eharrison", email="eva@gmail.example"),
    ]


class TestOneSearchRule:
    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("Ava Harris", {"aharris"}),
            ("harris ava", {"aharris"}),
            ("HARRIS   AVA", {"aharris"}),
            ("av harr", {"aharris"}),
            ("ava gmail", {"aharris"}),  # a name and another address of hers
            ("gmail harris", {"aharris", "eharrison"}),
            ("aharris", {"aharris"}),
            ("ava.h@uni", {"aharris"}),
            ("harris", {"aharris", "hberg", "eharrison"}),
            ("ava harris nobody", set()),
            ("", set()),
        ],
    )
    def test_every_word_in_any_order_and_case(self, ava, others, query, expected):
        found = set(search.matching_users(query, past_addresses=False).values_list("username", flat=True))
        assert found == expected

    @pytest.mark.parametrize("query", ["Ava Harris", "harris ava", "harr", "gmail", "ava gmail"])
    def test_the_status_page_the_people_page_and_compose_agree(self, staff_client, ava, others, query):
        message = Message.objects.create(status=M.SENT, composed_content={"en": {"subject": "s"}})
        for user in [ava, *others]:
            MessageReceiver.objects.create(message=message, user=user, send_to=user.email, status=R.SENT)
        rule = set(search.matching_users(query, past_addresses=False).values_list("pk", flat=True))
        assert rule  # each query finds someone
        page = staff_client.get(status_url(message), {"q": query}).content.decode()
        on_status_page = set(
            MessageReceiver.objects.filter(pk__in=page_ids(page)).values_list("user_id", flat=True)
        )
        on_people_page = {person.user.pk for person in people.search_people(query).people}
        in_compose = {found.user.pk for found in selectors.search_recipients(query).users}
        assert on_status_page == on_people_page == in_compose == rule

    def test_the_people_page_still_finds_an_address_sent_to_before(self, ava, others):
        message = Message.objects.create(status=M.SENT)
        MessageReceiver.objects.create(
            message=message, user=ava, send_to="old.ava@uni.example", status=R.SENT
        )
        assert set(people.matching_users("old.ava@uni")) == {ava}
        assert not search.matching_users("old.ava@uni", past_addresses=False).exists()

    @pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL trigram index")
    def test_postgresql_finds_users_through_the_trigram_index(self, ava, others):
        users = search.matching_users("harris ava", past_addresses=False)
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # a handful of users: force the choice
        assert "messaging_user_search" in users.explain()
