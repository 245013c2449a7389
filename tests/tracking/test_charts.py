"""Issue 13, progress you can see: the progress timeline roll_up keeps on a delivering message
(status.progress_timeline), the sends-per-week figures of the message list
(selectors.sends_per_week), and the JSON both pages hand to static/messaging/charts.js."""

from __future__ import annotations

import itertools
import json
import re
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from messaging.engine import delivery, status, transitions
from messaging.engine.status import TIMELINE_POINTS, progress_timeline, thinned
from messaging.models import Message, MessageReceiver
from messaging.tracking import selectors
from tests.conftest import grant
from tests.engine_helpers import SEND_ARGS, LanguageSubject

RStatus = MessageReceiver.Status
OSLO = ZoneInfo("Europe/Oslo")
STARTED = datetime(2026, 3, 4, 12, 0, tzinfo=OSLO)
T0 = int(STARTED.timestamp())


def counts(sent=0, failed=0, error=0, not_sent=0, cancelled=0) -> dict[str, int]:
    return {
        RStatus.SENT: sent,
        RStatus.FAILED: failed,
        RStatus.ERROR: error,
        RStatus.NOT_SENT: not_sent,
        RStatus.CANCELLED: cancelled,
    }


def at(seconds: int) -> datetime:
    return STARTED + timedelta(seconds=seconds)


def started(**data) -> dict:
    return {"sending_started": STARTED.isoformat(), **data}


# The timeline rules (pure) -------------------------------------------------------------------------


class TestProgressTimeline:
    def test_starts_with_a_zero_point_at_the_start_of_sending(self):
        assert progress_timeline(started(), counts(sent=3, not_sent=7), now=at(5)) == [
            [T0, 0, 0],
            [T0 + 5, 3, 0],
        ]

    def test_nothing_before_sending_started(self):
        assert progress_timeline({}, counts(not_sent=7), now=at(5)) == []
        assert progress_timeline({"sending_started": "yesterday"}, counts(sent=1), now=at(5)) == []

    def test_appends_when_the_counts_changed_failed_and_error_together(self):
        timeline = progress_timeline(
            started(timeline=[[T0, 0, 0], [T0 + 2, 3, 0]]), counts(3, 1, 2), now=at(4)
        )
        assert timeline == [[T0, 0, 0], [T0 + 2, 3, 0], [T0 + 4, 3, 3]]

    def test_no_new_point_while_the_counts_are_unchanged(self):
        before = [[T0, 0, 0], [T0 + 2, 3, 1]]
        assert progress_timeline(started(timeline=before), counts(3, 1, not_sent=5), now=at(60)) == before
        assert progress_timeline(started(), counts(not_sent=9), now=at(60)) == [[T0, 0, 0]]

    def test_the_same_second_replaces_the_last_point_but_never_the_start(self):
        timeline = progress_timeline(started(timeline=[[T0, 0, 0], [T0 + 2, 3, 0]]), counts(4), now=at(2))
        assert timeline == [[T0, 0, 0], [T0 + 2, 4, 0]]
        assert progress_timeline(started(), counts(1), now=at(0)) == [[T0, 0, 0], [T0, 1, 0]]

    def test_a_clock_behind_the_last_point_does_not_go_back_in_time(self):
        timeline = progress_timeline(started(timeline=[[T0, 0, 0], [T0 + 10, 3, 0]]), counts(5), now=at(4))
        assert timeline == [[T0, 0, 0], [T0 + 10, 5, 0]]

    @pytest.mark.parametrize(
        "garbled",
        [
            "not a list",
            {"a": 1},
            [None, "x", [1, 2], [1, 2, 3, 4], ["a", 1, 2], [True, 1, 2], [1.5, 1, 2], [-1, 0, 0]],
            42,
        ],
    )
    def test_a_garbled_timeline_starts_afresh(self, garbled):
        assert progress_timeline(started(timeline=garbled), counts(2), now=at(3)) == [
            [T0, 0, 0],
            [T0 + 3, 2, 0],
        ]

    def test_garbled_points_are_dropped_and_good_ones_kept(self):
        timeline = progress_timeline(
            started(timeline=[[T0, 0, 0], "junk", [T0 + 2, 1, 0]]), counts(2), now=at(3)
        )
        assert timeline == [[T0, 0, 0], [T0 + 2, 1, 0], [T0 + 3, 2, 0]]

    def test_capped_by_thinning_the_older_half_keeping_first_and_newest(self):
        data = started()
        for second in range(1, 1000):
            data["timeline"] = progress_timeline(data, counts(sent=second), now=at(second))
            assert len(data["timeline"]) <= TIMELINE_POINTS
        timeline = data["timeline"]
        assert timeline[0] == [T0, 0, 0]
        assert timeline[-1] == [T0 + 999, 999, 0]
        assert timeline == sorted(timeline)
        # The newest stretch is dense, the oldest sparse.
        assert timeline[-2][0] == T0 + 998
        assert timeline[2][0] - timeline[1][0] > 1
        assert len(json.dumps(timeline)) < 8000

    def test_thinning(self):
        points = [[n, n, 0] for n in range(11)]
        assert thinned(points, cap=9) == [[0, 0, 0], [2, 2, 0], [4, 4, 0], *points[5:]]
        assert thinned(points, cap=8) == [[0, 0, 0], [4, 4, 0], *points[6:]]
        assert thinned(points, cap=11) == points
        assert len(thinned([[n, n, 0] for n in range(50)], cap=1)) == 3  # no endless loop
        assert thinned([], cap=5) == []


# roll_up writes it, over a real delivery ------------------------------------------------------------


@pytest.mark.django_db
class TestRollUpTimeline:
    def test_a_delivery_over_smtp_records_its_progress(self, make_user, smtp_mailer, monkeypatch):
        users = [make_user() for _ in range(5)] + [make_user(email="ghost@bounce.example")]
        # Publish progress before every claim of two receivers, one second apart.
        monkeypatch.setattr(delivery, "PROGRESS_INTERVAL", 0)
        monkeypatch.setattr(transitions, "CLAIM_BATCH_SIZE", 2)
        clock = itertools.count(int(time.time()) + 10)
        monkeypatch.setattr(
            transitions.messages,  # where roll_up, which writes the timeline, reads it
            "progress_timeline",
            lambda data, counts: status.progress_timeline(
                data, counts, now=datetime.fromtimestamp(next(clock), tz=OSLO)
            ),
        )
        message = Message.objects.create(virtual_message_receivers={"user_ids": [u.pk for u in users]})
        message.prepare_and_send(LanguageSubject(), **SEND_ARGS)

        message.refresh_from_db()
        assert message.status == Message.Status.ERROR
        assert len(smtp_mailer.received) == 5
        timeline = message.status_data["timeline"]
        start = int(datetime.fromisoformat(message.status_data["sending_started"]).timestamp())
        assert timeline[0] == [start, 0, 0]
        assert [point[1:] for point in timeline] == [[0, 0], [2, 0], [4, 0], [5, 1]]
        assert [a[0] < b[0] for a, b in itertools.pairwise(timeline)] == [True] * 3

    def test_an_unchanged_roll_up_writes_nothing(self, make_user, smtp_mailer):
        message = Message.objects.create(virtual_message_receivers={"user_ids": [make_user().pk]})
        message.prepare_and_send(LanguageSubject(), **SEND_ARGS)
        message.refresh_from_db()
        before = message.status_data
        assert [point[1:] for point in before["timeline"]] == [[0, 0], [1, 0]]
        transitions.roll_up(message.pk)
        message.refresh_from_db()
        assert message.status_data == before

    def test_a_resend_continues_the_timeline(self, make_user, smtp_mailer):
        ok, busy = make_user(), make_user(email="busy@tempfail.example")
        message = Message.objects.create(virtual_message_receivers={"user_ids": [ok.pk, busy.pk]})
        message.prepare_and_send(LanguageSubject(), **SEND_ARGS)
        message.refresh_from_db()
        assert message.status_data["timeline"][-1][1:] == [1, 1]
        transitions.reset_for_resend(message.receivers.filter(user=busy))
        transitions.roll_up(message.pk)
        message.refresh_from_db()
        assert message.status_data["timeline"][-1][1:] == [1, 0]
        assert message.status_data["timeline"][0][1:] == [0, 0]

    def test_no_timeline_before_sending_starts(self):
        message = Message.objects.create(status=Message.Status.SCHEDULED)
        transitions.roll_up(message.pk)
        message.refresh_from_db()
        assert "timeline" not in message.status_data


# Sends per week ---------------------------------------------------------------------------------------


def receiver_sent_at(message, user, when, status=RStatus.SENT):
    return MessageReceiver.objects.create(message=message, user=user, status=status, sent_datetime=when)


@pytest.mark.django_db
class TestSendsPerWeek:
    @pytest.fixture
    def message(self):
        return Message.objects.create(status=Message.Status.SENT)

    def test_twelve_iso_weeks_oldest_first_with_empty_weeks_as_zero(self, message, make_user, settings):
        settings.TIME_ZONE = "Europe/Oslo"
        user = make_user()
        now = datetime(2026, 3, 4, 12, 0, tzinfo=OSLO)  # a Wednesday
        for when in [
            datetime(2026, 3, 2, 0, 0, tzinfo=OSLO),  # this week's Monday, midnight
            datetime(2026, 3, 4, 11, 0, tzinfo=OSLO),
            datetime(2026, 3, 1, 23, 59, tzinfo=OSLO),  # last week's Sunday
            datetime(2025, 12, 15, 8, 0, tzinfo=OSLO),  # the first of the twelve weeks
            datetime(2025, 12, 14, 8, 0, tzinfo=OSLO),  # before it: not counted
            datetime(2026, 3, 4, 13, 0, tzinfo=OSLO),  # after `now`: not counted
        ]:
            receiver_sent_at(message, user, when)
        receiver_sent_at(message, user, None, status=RStatus.NOT_SENT)

        weeks = selectors.sends_per_week(now=now)

        assert [w["week"] for w in weeks] == [
            datetime(2025, 12, 15).date() + timedelta(weeks=i) for i in range(12)
        ]
        assert all(w["week"].isoweekday() == 1 for w in weeks)
        assert [w["sent"] for w in weeks] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]

    def test_weeks_follow_the_current_time_zone(self, message, make_user):
        user = make_user()
        # Sunday 23:30 UTC is Monday 00:30 in Oslo (UTC+1 in winter).
        receiver_sent_at(message, user, datetime(2026, 3, 1, 23, 30, tzinfo=ZoneInfo("UTC")))
        now = datetime(2026, 3, 4, 12, 0, tzinfo=ZoneInfo("UTC"))
        with timezone.override("Europe/Oslo"):
            oslo = selectors.sends_per_week(weeks=2, now=now)
        with timezone.override("UTC"):
            utc = selectors.sends_per_week(weeks=2, now=now)
        assert [w["sent"] for w in oslo] == [0, 1]
        assert [w["sent"] for w in utc] == [1, 0]
        assert oslo[1]["week"] == utc[1]["week"] == datetime(2026, 3, 2).date()

    def test_no_sends_at_all(self, db):
        weeks = selectors.sends_per_week(weeks=3)
        assert len(weeks) == 3 and {w["sent"] for w in weeks} == {0}
        assert weeks[-1]["week"] <= timezone.localdate() < weeks[-1]["week"] + timedelta(weeks=1)


# The pages -------------------------------------------------------------------------------------------


@pytest.fixture
def staff(make_user):
    return grant(make_user(is_staff=True, username="charts-staff"), "view_message")


def json_script(html: str, element_id: str):
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S)
    assert match, f"no json_script {element_id}"
    return json.loads(match.group(1))


@pytest.mark.django_db
class TestPages:
    def test_the_list_hands_the_weekly_figures_to_the_chart(self, staff_client, make_user):
        message = Message.objects.create(status=Message.Status.SENT)
        receiver_sent_at(message, make_user(), timezone.now())
        html = staff_client.get(reverse("messaging:message_list")).content.decode()
        weeks = json_script(html, "sends-per-week")
        assert len(weeks) == 12 and weeks[-1]["sent"] == 1
        assert 'data-chart="weekly"' in html and "vendor/uplot/uPlot.iife.min.js" in html
        assert "messaging/charts.js" in html and 'id="sends-per-week-table"' in html

    def test_filtering_the_list_does_not_count_the_weeks(self, staff_client, monkeypatch):
        calls = []
        monkeypatch.setattr(selectors, "sends_per_week", lambda: calls.append(1) or [])
        url = reverse("messaging:message_list")
        html = staff_client.get(url, {"status": "sent"}, HTTP_HX_REQUEST="true").content.decode()
        assert "sends-per-week" not in html and 'id="message-results"' in html
        assert calls == []
        staff_client.get(url)
        assert calls == [1]

    def test_the_status_page_and_each_poll_carry_the_timeline(self, staff_client):
        timeline = [[T0, 0, 0], [T0 + 2, 3, 1]]
        message = Message.objects.create(
            status=Message.Status.SENDING,
            status_data={
                "sending_started": STARTED.isoformat(),
                "timeline": timeline,
                "summary": {"receiver_counts": counts(sent=3, failed=1, not_sent=6), "total": 10},
            },
        )
        url = reverse("messaging:message_status", args=[message.pk])
        page = staff_client.get(url).content.decode()
        assert json_script(page, "progress-timeline") == timeline
        assert re.search(r'id="progress-chart"[^>]*hx-preserve="true"', page)
        assert "3 sent, 1 failed as of" in page
        poll = staff_client.get(
            url, HTTP_HX_REQUEST="true", HTTP_HX_TRIGGER="receiver-results"
        ).content.decode()
        assert json_script(poll, "progress-timeline") == timeline
        assert 'id="progress-chart"' in poll

    def test_no_chart_without_a_timeline(self, staff_client):
        message = Message.objects.create(status=Message.Status.DRAFT)
        page = staff_client.get(reverse("messaging:message_status", args=[message.pk])).content.decode()
        assert "progress-timeline" not in page and 'id="progress-chart"' not in page
