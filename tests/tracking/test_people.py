"""People (issue 13): finding a person by name, username or address, and the page listing every
message they were sent, with links to what exactly they received."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from messaging.models import Message, MessageReceiver
from messaging.tracking import people
from tests.conftest import grant

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def staff(make_user):
    user = make_user(is_staff=True, username="staffer", first_name="Stella", last_name="Staff")
    return grant(user, "view_message")


@pytest.fixture
def kari(make_user):
    return make_user(
        language="nb", username="kano", first_name="Kari", last_name="Nordmann", email="kari@uni.example"
    )


@pytest.fixture
def ola(make_user):
    return make_user(
        username="olan",
        first_name="Ola",
        last_name="Nordmann",
        email="ola@uni.example",
        emails=["ola.private@home.example", "ola.work@job.example"],
        primary="ola.private@home.example",
    )


@pytest.fixture
def former(make_user):
    """A former student: no longer active, still someone staff must answer for."""
    return make_user(username="gammel", first_name="Kari", last_name="Gammel", is_active=False)


def message(context_type=Message.ContextType.OTHER, subject="Hello", status=Message.Status.SENT) -> Message:
    return Message.objects.create(
        context_type=context_type,
        status=status,
        composed_content={"en": {"subject": subject, "body": "<p>B</p>"}},
    )


def receiver(msg: Message, user, **fields) -> MessageReceiver:
    fields.setdefault("send_to", user.email)
    fields.setdefault("status", MessageReceiver.Status.SENT)
    return MessageReceiver.objects.create(message=msg, user=user, **fields)


def found(query: str) -> set[str]:
    return set(people.matching_users(query).values_list("username", flat=True))


# Search ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestMatchingUsers:
    @pytest.mark.parametrize(
        "query", ["Kari Nordmann", "Nordmann Kari", "nordmann KARI", "  kari   nordmann  "]
    )
    def test_full_name_in_any_order_and_case(self, kari, ola, former, query):
        assert found(query) == {"kano"}

    @pytest.mark.parametrize("query", ["kar nord", "nord ka", "ari ordm"])
    def test_partial_words(self, kari, ola, former, query):
        assert found(query) == {"kano"}

    def test_every_word_must_match(self, kari, ola, former):
        assert found("Nordmann") == {"kano", "olan"}
        assert found("Kari") == {"kano", "gammel"}
        assert found("Kari Nordmann Smith") == set()

    def test_username(self, kari, ola):
        assert found("olan") == {"olan"}

    def test_user_email(self, kari, ola):
        assert found("kari@uni") == {"kano"}
        assert found("uni.example") == {"kano", "olan"}

    def test_notification_addresses(self, kari, ola):
        assert found("private@home") == {"olan"}
        assert found("work@job.example") == {"olan"}

    def test_an_address_the_engine_sent_to_before_it_changed(self, kari, ola):
        receiver(message(), kari, send_to="kari.old@gone.example")
        assert found("kari.old@gone.example") == {"kano"}
        assert found("@gone") == {"kano"}

    def test_a_word_with_a_name_and_an_address(self, kari, ola):
        assert found("ola home.example") == {"olan"}

    def test_each_user_once(self, ola):
        # Two of Ola's addresses match "ola", and so do his name and username.
        assert list(people.matching_users("ola").values_list("username", flat=True)) == ["olan"]

    def test_inactive_users_are_found(self, former):
        assert found("gammel") == {"gammel"}

    @pytest.mark.parametrize("query", ["", "   ", "\0", "\0 \0"])
    def test_blank_finds_nobody(self, kari, query):
        assert found(query) == set()

    def test_nul_characters_are_removed(self, kari):
        assert found("Ka\0ri Nord\0mann") == {"kano"}

    @pytest.mark.parametrize("query", ["zzz", "%", "_", "kari zzz"])
    def test_no_match(self, kari, ola, query):
        assert found(query) == set()

    def test_many_words_are_cut(self, kari):
        assert found(" ".join(["kari"] * 500)) == {"kano"}
        assert len(people.query_words(" ".join(str(n) for n in range(500)))) == people.MAX_WORDS


@pytest.mark.django_db
class TestSearchPeople:
    def test_rows_have_address_and_count(self, kari, ola):
        msg = message()
        receiver(msg, kari)
        receiver(message(), kari)
        result = people.search_people("nordmann")
        assert [(p.user.username, p.address, p.received_count) for p in result.people] == [
            ("kano", "kari@uni.example", 2),
            ("olan", "ola.private@home.example", 0),
        ]
        assert result.total == 2 and result.more == 0

    def test_capped_with_the_number_left(self, make_user):
        for n in range(5):
            make_user(first_name="Anna", last_name=f"Many{n}")
        result = people.search_people("anna many", limit=3)
        assert [p.user.last_name for p in result.people] == ["Many0", "Many1", "Many2"]
        assert result.total == 5 and result.more == 2

    def test_the_query_is_kept_without_nul(self):
        assert people.search_people(" a\0b ").query == "ab"


@pytest.mark.django_db
class TestPersonSearchView:
    url = reverse("messaging:person_search")

    def test_empty_page(self, staff_client):
        response = staff_client.get(self.url)
        assert response.status_code == 200
        content = response.content.decode()
        assert 'id="person-search"' in content and 'id="person-table"' not in content
        assert 'id="person-search-empty"' not in content
        assert 'id="nav-people"' in content

    def test_full_name_reversed(self, staff_client, kari, ola):
        receiver(message(), kari)
        content = staff_client.get(self.url, {"q": "Nordmann Kari"}).content.decode()
        assert f'href="{reverse("messaging:person_detail", args=[kari.pk])}"' in content
        assert f'data-person-id="{ola.pk}"' not in content
        row = re.search(rf'<tr data-person-id="{kari.pk}".*?</tr>', content, re.S).group(0)
        assert "Kari Nordmann" in row and "kano" in row and "kari@uni.example" in row
        assert re.search(r'data-testid="received-count">1<', row)
        assert 'value="Nordmann Kari"' in content  # the box keeps what was typed

    def test_htmx_gets_only_the_results(self, staff_client, kari):
        response = staff_client.get(self.url, {"q": "kari"}, **HTMX)
        content = response.content.decode()
        assert content.lstrip().startswith('<div id="person-results"')
        assert "<html" not in content and f'data-person-id="{kari.pk}"' in content
        assert "HX-Request" in response["Vary"]

    def test_inactive_are_marked(self, staff_client, kari, former):
        content = staff_client.get(self.url, {"q": "kari"}).content.decode()
        inactive = re.search(rf'<tr data-person-id="{former.pk}".*?</tr>', content, re.S).group(0)
        active = re.search(rf'<tr data-person-id="{kari.pk}".*?</tr>', content, re.S).group(0)
        assert 'data-testid="inactive"' in inactive and 'data-testid="inactive"' not in active

    def test_no_match(self, staff_client, kari):
        content = staff_client.get(self.url, {"q": "nobody-like-this"}).content.decode()
        assert 'id="person-search-empty"' in content and 'id="person-table"' not in content

    def test_nul_in_the_query(self, staff_client, kari):
        response = staff_client.get(self.url, {"q": "ka\0ri"})
        assert response.status_code == 200 and f'data-person-id="{kari.pk}"' in response.content.decode()

    def test_more_than_listed(self, staff_client, make_user):
        for n in range(people.PEOPLE_LISTED + 2):
            make_user(first_name="Anna", last_name=f"Many{n:02}")
        content = staff_client.get(self.url, {"q": "anna"}).content.decode()
        assert content.count("data-person-id=") == people.PEOPLE_LISTED
        assert 'data-more="2"' in content and "2 more people match; refine your search." in content

    def test_query_count_is_bounded(self, staff_client, make_user, django_assert_max_num_queries):
        for n in range(people.PEOPLE_LISTED + 5):
            user = make_user(first_name="Anna", last_name=f"Many{n:02}", emails=[f"anna{n}@x.example"])
            receiver(message(), user)
        # session, user, permissions, the listed people, their addresses, the total
        with django_assert_max_num_queries(7):
            response = staff_client.get(self.url, {"q": "anna many"})
        assert response.content.decode().count("data-person-id=") == people.PEOPLE_LISTED


# One person --------------------------------------------------------------------------------------------


def person_url(user, **params) -> str:
    return reverse("messaging:person_detail", args=[user.pk])


def rows(content: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr[^>]*data-receiver-id="(\d+)"', content)]


@pytest.mark.django_db
class TestPersonDetailView:
    def test_facts(self, staff_client, kari):
        content = staff_client.get(person_url(kari)).content.decode()
        assert re.search(r'id="person-name">\s*Kari Nordmann', content)
        assert 'id="person-username">kano<' in content
        assert 'id="person-address">kari@uni.example<' in content
        assert re.search(r'id="person-language" data-language="nb">Norwegian Bokmål<', content)
        assert 'id="person-inactive"' not in content

    def test_language_name_in_the_staff_members_language(self, staff_client, kari):
        staff_client.cookies["django_language"] = "nb"
        content = staff_client.get(person_url(kari)).content.decode()
        assert re.search(r'id="person-language" data-language="nb">Norsk bokmål<', content)

    def test_the_address_the_engine_would_use(self, staff_client, ola):
        assert (
            'id="person-address">ola.private@home.example<'
            in staff_client.get(person_url(ola)).content.decode()
        )

    def test_inactive(self, staff_client, former):
        assert 'id="person-inactive"' in staff_client.get(person_url(former)).content.decode()

    def test_unknown_person(self, staff_client):
        assert staff_client.get(reverse("messaging:person_detail", args=[999_999])).status_code == 404

    def test_only_their_receivers_newest_first(self, staff_client, kari, ola):
        now = timezone.now()
        older = receiver(message(subject="Older"), kari, created_datetime=now - timedelta(days=2))
        newer = receiver(message(subject="Newer"), kari, created_datetime=now - timedelta(days=1))
        same_time = receiver(message(subject="Same time"), kari, created_datetime=now - timedelta(days=1))
        receiver(message(subject="Not hers"), ola)
        content = staff_client.get(person_url(kari)).content.decode()
        assert rows(content) == [same_time.pk, newer.pk, older.pk]
        assert "Not hers" not in content
        assert 'data-count="3"' in content

    def test_row_shows_what_they_got_with_a_link_to_it(self, staff_client, kari):
        msg = message(context_type=Message.ContextType.DEADLINE_MOVED, subject="Deadline moved for {{ x }}")
        sent_at = timezone.now().replace(month=3, day=1, hour=10, minute=5, second=0, microsecond=0)
        got = receiver(
            msg, kari, subject="Fristen er flyttet, Kari", sent_datetime=sent_at, sending_success_count=1
        )
        content = staff_client.get(person_url(kari)).content.decode()
        row = re.search(rf'<tr[^>]*data-receiver-id="{got.pk}".*?</tr>', content, re.S).group(0)
        assert "Fristen er flyttet, Kari" in row and "Deadline moved" in row
        assert 'data-status="sent"' in row and "status-badge" in row
        assert f'href="{reverse("messaging:receiver_detail", args=[got.pk])}"' in row
        local = timezone.localtime(sent_at)
        assert f"{local:%H:%M}" in row  # local time, not UTC
        assert "1 / 0" in row

    def test_subject_falls_back_to_the_messages(self, staff_client, kari):
        got = receiver(
            message(subject="Exam moved"), kari, subject="", status=MessageReceiver.Status.NOT_SENT
        )
        content = staff_client.get(person_url(kari)).content.decode()
        row = re.search(rf'<tr[^>]*data-receiver-id="{got.pk}".*?</tr>', content, re.S).group(0)
        assert "Exam moved" in row

    def test_filters(self, staff_client, kari):
        feedback = receiver(message(context_type=Message.ContextType.FEEDBACK), kari)
        failed = receiver(
            message(context_type=Message.ContextType.FEEDBACK), kari, status=MessageReceiver.Status.FAILED
        )
        other = receiver(message(), kari)
        url = person_url(kari)
        assert set(rows(staff_client.get(url, {"context_type": "feedback"}).content.decode())) == {
            feedback.pk,
            failed.pk,
        }
        assert rows(staff_client.get(url, {"status": "failed"}).content.decode()) == [failed.pk]
        assert (
            rows(staff_client.get(url, {"context_type": "other", "status": "failed"}).content.decode()) == []
        )
        assert set(rows(staff_client.get(url, {"context_type": "", "status": ""}).content.decode())) == {
            feedback.pk,
            failed.pk,
            other.pk,
        }
        form = staff_client.get(url).content.decode()
        assert form.count(">Any</option>") == 2

    def test_htmx_filter_gets_only_the_table(self, staff_client, kari):
        got = receiver(message(), kari)
        content = staff_client.get(person_url(kari), {"status": "sent"}, **HTMX).content.decode()
        assert content.lstrip().startswith('<div id="person-receivers"')
        assert "<html" not in content and rows(content) == [got.pk]

    def test_pagination(self, staff_client, kari):
        now = timezone.now()
        msg = message()
        made = [
            receiver(msg, kari, created_datetime=now - timedelta(minutes=n)).pk for n in range(30)
        ]  # newest first
        first = rows(staff_client.get(person_url(kari)).content.decode())
        second = rows(staff_client.get(person_url(kari), {"page": 2}).content.decode())
        assert first == made[:25] and second == made[25:]
        assert rows(staff_client.get(person_url(kari), {"page": 10**20}).content.decode()) == made[25:]

    def test_query_count_is_bounded_and_no_content_is_loaded(
        self, staff_client, kari, django_assert_max_num_queries
    ):
        for n in range(30):
            msg = message(context_type=Message.ContextType.FEEDBACK, subject=f"S{n}")
            receiver(msg, kari, message_content_html="<p>BIG</p>" * 100, message_content_plain="BIG" * 100)
        # session, user, permissions, the person, their addresses, their preferences and the
        # staff's context type settings, the count, the page
        with django_assert_max_num_queries(10) as captured:
            response = staff_client.get(person_url(kari), {"context_type": "feedback"})
        assert len(rows(response.content.decode())) == 25
        receiver_table = connection.ops.quote_name(MessageReceiver._meta.db_table)
        for query in captured.captured_queries:
            if receiver_table in query["sql"]:
                assert (
                    "message_content_html" not in query["sql"] and "message_content_plain" not in query["sql"]
                )
