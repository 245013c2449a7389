"""The compose page's recipients (issue 14): people found by full name in any word order, groups
by every word of their name, "N more" when more match, a group's members before sending, and
the form's accessible errors and context type explanations."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from messaging.models import Message
from messaging.preferences import context_types
from messaging.tracking import selectors

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def staff(make_user):
    user = make_user(is_staff=True, username="staffer", first_name="Stella", last_name="Staff")
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="messaging", codename__in=["compose_message"])
    )
    return user


def search(client, q: str) -> str:
    response = client.get(reverse("messaging:recipient_search"), {"q": q}, **HTMX)
    assert response.status_code == 200
    return response.content.decode()


def found_user_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'data-testid="search-user-(\d+)"', html)]


def found_group_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'data-testid="search-group-(\d+)"', html)]


# Users ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["Sam Samsen", "samsen sam", "SAMSEN  Sam", "sa sams", "sam sen"])
def test_a_full_name_is_found_in_any_word_order_and_by_parts_of_words(staff_client, make_user, query):
    sam = make_user(username="ssamsen", first_name="Sam", last_name="Samsen")
    make_user(username="samuel", first_name="Samuel", last_name="Berg")  # "samsen" is not his
    assert found_user_ids(search(staff_client, query)) == [sam.pk]


def test_every_word_must_match_someone(staff_client, make_user):
    make_user(first_name="Sam", last_name="Samsen")
    html = search(staff_client, "Sam Nobody")
    assert found_user_ids(html) == []
    assert 'id="recipient-search-empty"' in html


def test_a_result_shows_full_name_username_and_the_notification_address(staff_client, make_user):
    kari = make_user(
        username="kno",
        first_name="Kari",
        last_name="Nordmann",
        email="old@example.org",
        emails=["kari@uni.example", "other@uni.example"],
        primary="kari@uni.example",
    )
    html = search(staff_client, "nordmann")
    row = re.search(rf'data-testid="search-user-{kari.pk}">(.*?)</button>', html, re.S).group(1)
    assert "Kari Nordmann" in row and "kno" in row
    assert "kari@uni.example" in row and "old@example.org" not in row  # where it would be sent
    nobody = make_user(first_name="Nils", last_name="Adresselaus", email="")
    row = re.search(
        rf'data-testid="search-user-{nobody.pk}">(.*?)</button>', search(staff_client, "adresselaus"), re.S
    )
    assert "no address" in row.group(1)


def test_found_by_username_and_address(staff_client, make_user):
    user = make_user(username="kno42", email="kari.nordmann@uni.example")
    assert found_user_ids(search(staff_client, "kno42")) == [user.pk]
    assert found_user_ids(search(staff_client, "kari.nordmann@uni")) == [user.pk]


def test_an_address_the_user_no_longer_has_is_not_searched_on_every_keystroke(staff_client, make_user):
    """The People page finds someone by an address we once sent to (a scan of the receivers
    table); the compose search, run on every keystroke, looks only at current addresses."""
    from messaging.models import MessageReceiver
    from messaging.tracking import people

    moved = make_user(username="moved", email="new@example.org")
    message = Message.objects.create(status=Message.Status.SENT)
    MessageReceiver.objects.create(message=message, user=moved, send_to="old@example.org")
    assert list(people.matching_users("old@example.org")) == [moved]
    assert found_user_ids(search(staff_client, "old@example.org")) == []
    assert found_user_ids(search(staff_client, "new@example.org")) == [moved.pk]


def test_most_relevant_first_then_by_name_not_by_username(staff_client, make_user):
    # "ann" starts Ann's and Anna's first names; it is only inside Joanna's.
    joanna = make_user(username="a-joanna", first_name="Joanna", last_name="Aasen")
    anna = make_user(username="b-anna", first_name="Anna", last_name="Zahl")
    ann = make_user(username="c-ann", first_name="Ann", last_name="Berg")
    assert found_user_ids(search(staff_client, "ann")) == [ann.pk, anna.pk, joanna.pk]
    # The whole query being a username comes first of all.
    exact = make_user(username="ann", first_name="Zed", last_name="Zulu")
    assert found_user_ids(search(staff_client, "ann"))[0] == exact.pk


def test_inactive_users_are_not_offered_nor_counted(staff_client, make_user):
    active = make_user(first_name="Ola", last_name="Aktiv")
    for _ in range(12):
        make_user(first_name="Ola", last_name="Aktiv", is_active=False)
    html = search(staff_client, "ola aktiv")
    assert found_user_ids(html) == [active.pk]
    assert "recipient-search-more-users" not in html


def test_more_users_than_listed_are_counted_not_loaded(
    staff_client, make_user, django_assert_max_num_queries
):
    for n in range(13):
        make_user(first_name="Eva", last_name=f"Many{n:02}")
    # Session, user, permissions (2); ids, users, addresses, COUNT, groups.
    with django_assert_max_num_queries(9):
        html = search(staff_client, "eva many")
    assert len(found_user_ids(html)) == selectors.SEARCH_LIMIT
    assert re.search(r'id="recipient-search-more-users" data-more="3"', html)
    assert "3 more users match; refine your search." in html


def test_the_number_of_queries_does_not_grow_with_the_matches(make_user, django_assert_num_queries):
    for n in range(11):
        make_user(first_name="Per", last_name=f"Few{n:02}")
    with django_assert_num_queries(5) as few:  # ids, users, addresses, COUNT, groups
        selectors.search_recipients("per")
    for n in range(60):
        make_user(first_name="Per", last_name=f"More{n:02}", emails=[f"per{n}@uni.example"])
    with django_assert_num_queries(len(few.captured_queries)):
        found = selectors.search_recipients("per")
    assert found.more_users == 71 - selectors.SEARCH_LIMIT


def test_no_more_line_when_everything_fits(staff_client, make_user):
    for n in range(selectors.SEARCH_LIMIT):
        make_user(first_name="Exact", last_name=f"Ten{n}")
    html = search(staff_client, "exact")
    assert len(found_user_ids(html)) == selectors.SEARCH_LIMIT
    assert "recipient-search-more-users" not in html


# Groups --------------------------------------------------------------------------------------------


def test_groups_match_every_word_of_the_query_in_any_order(staff_client, make_user):
    spring = Group.objects.create(name="INF1000 Spring 2026")
    autumn = Group.objects.create(name="INF1000 Autumn 2025")
    Group.objects.create(name="MAT1100 Spring 2026")
    assert found_group_ids(search(staff_client, "inf1000 spring")) == [spring.pk]
    assert found_group_ids(search(staff_client, "spring INF1000")) == [spring.pk]
    assert found_group_ids(search(staff_client, "inf1000")) == [autumn.pk, spring.pk]  # by name


def test_a_group_shows_its_active_member_count_and_can_be_expanded(staff_client, make_user):
    group = Group.objects.create(name="INF1000")
    for user in [make_user(), make_user(), make_user(is_active=False)]:
        user.groups.add(group)
    html = search(staff_client, "INF1000")
    assert "(2 members)" in html  # the inactive one is never sent to
    url = reverse("messaging:group_members", args=[group.pk])
    assert f'data-members-url="{url}"' in html
    assert f'aria-controls="search-members-{group.pk}"' in html and 'aria-expanded="false"' in html
    assert f'id="search-members-{group.pk}"' in html


def test_more_groups_than_listed(staff_client):
    Group.objects.bulk_create(Group(name=f"Course {n:02}") for n in range(12))
    html = search(staff_client, "course")
    assert len(found_group_ids(html)) == selectors.SEARCH_LIMIT
    assert "2 more groups match; refine your search." in html


# Bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "\x00",
        "Sam\x00Staff",
        "x" * 20_000,
        " ".join(f"w{n}" for n in range(2_000)),  # only the first words are used
        "%",
        "_",
        "\\",
        "' OR 1=1 --",
        "<script>alert(1)</script>",
        "\u202e\u200b\U0001f600",
        "a@",
    ],
)
def test_hostile_queries_are_no_error(staff_client, make_user, query):
    make_user(first_name="Sam", last_name="Staff")
    html = search(staff_client, query)
    assert "<script>alert(1)</script>" not in html


def test_percent_and_underscore_are_literal(staff_client, make_user):
    make_user(first_name="Plain", last_name="Name")
    assert found_user_ids(search(staff_client, "%")) == []
    assert found_user_ids(search(staff_client, "_")) == []


def test_a_nul_character_is_dropped_not_an_error(staff_client, make_user):
    sam = make_user(first_name="Sam", last_name="Samsen")
    assert found_user_ids(search(staff_client, "Sam\x00 Samsen")) == [sam.pk]


def test_a_blank_query_offers_nothing(staff_client, make_user):
    make_user()
    html = search(staff_client, "   ")
    assert found_user_ids(html) == [] and "recipient-search-empty" not in html


# Group members -------------------------------------------------------------------------------------


def members_url(group) -> str:
    return reverse("messaging:group_members", args=[group.pk])


def test_group_members_lists_active_members_by_name_with_their_address(staff_client, make_user):
    group = Group.objects.create(name="INF1000")
    bea = make_user(
        username="bea",
        first_name="Bea",
        last_name="Aasen",
        emails=["bea@uni.example"],
        primary="bea@uni.example",
    )
    adam = make_user(username="adam", first_name="Adam", last_name="Berg", email="")
    gone = make_user(username="gone", first_name="Gone", last_name="Away", is_active=False)
    group.user_set.add(adam, bea, gone)
    response = staff_client.get(members_url(group), **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert re.findall(r'data-member="(\d+)"', html) == [str(bea.pk), str(adam.pk)]  # last name order
    assert "Bea Aasen" in html and "(bea)" in html and "bea@uni.example" in html
    assert 'data-testid="member-without-address"' in html and html.count("no address") == 1
    assert "gone" not in html
    assert 'data-total="2"' in html


def test_group_members_are_capped_with_how_many_more(staff_client, make_user, django_assert_max_num_queries):
    group = Group.objects.create(name="Big")
    group.user_set.add(*[make_user() for _ in range(selectors.GROUP_MEMBERS_LISTED + 7)])
    # Session, user, permissions (2); group, ids, users, addresses, COUNT.
    with django_assert_max_num_queries(9):
        response = staff_client.get(members_url(group), **HTMX)
    html = response.content.decode()
    assert len(re.findall(r"data-member=", html)) == selectors.GROUP_MEMBERS_LISTED
    assert 'data-more="7"' in html and "and 7 more" in html


def test_a_group_without_active_members_says_so(staff_client, make_user):
    group = Group.objects.create(name="Empty")
    group.user_set.add(make_user(is_active=False))
    html = staff_client.get(members_url(group), **HTMX).content.decode()
    assert "no active members" in html and 'data-total="0"' in html


@pytest.mark.parametrize("pk", [0, 999_999_999, 2**62])
def test_an_unknown_group_is_404(staff_client, pk):
    assert staff_client.get(reverse("messaging:group_members", args=[pk])).status_code == 404


def test_group_members_need_the_compose_permission(client, make_user):
    group = Group.objects.create(name="INF1000")
    group.user_set.add(make_user(first_name="Secret", last_name="Member"))
    anonymous = client.get(members_url(group))
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
    htmx_anonymous = client.get(members_url(group), **HTMX)
    assert htmx_anonymous["HX-Redirect"].startswith(reverse("login"))
    viewer = make_user(is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_message"))
    client.force_login(viewer)
    forbidden = client.get(members_url(group), **HTMX)
    assert forbidden.status_code == 403 and b"Secret" not in forbidden.content


# The compose form: context type explanations and accessible errors ---------------------------------


def test_every_context_type_has_a_one_line_explanation():
    explanations = context_types.explanations()
    engine_made = {Message.ContextType.DIGEST, Message.ContextType.SENDING_REPORT}
    assert set(explanations) == set(Message.ContextType) - engine_made
    assert all(str(text).strip() and "\n" not in str(text) for text in explanations.values())


def test_the_chosen_context_type_is_explained_under_the_select(staff_client, make_user):
    html = staff_client.get(reverse("messaging:message_create")).content.decode()
    select = re.search(r'<select name="context_type"[^>]*>', html).group(0)
    assert 'aria-describedby="context-type-help"' in select and "aria-invalid" not in select
    shown = re.findall(r'<span data-context-type-help="(\w+)">', html)  # not hidden
    assert shown == [Message.ContextType.OTHER]  # a new message's type
    for value in context_types.explanations():
        assert f'data-context-type-help="{value}"' in html
    assert str(context_types.explanations()[Message.ContextType.DEADLINE_MOVED]) in html


def test_invalid_fields_carry_aria_invalid(staff_client):
    response = staff_client.post(
        reverse("messaging:message_create"),
        {
            "context_type": "no-such-type",
            "users": ["999999"],
            "subject_en": "Hello",
            "body_en": "<p>Hi</p>",
            "subject_nb": "Hei",  # a subject without a body on the nb tab
        },
        **HTMX,
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert not Message.objects.exists()
    select = re.search(r'<select name="context_type"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in select and "id_context_type-errors" in select
    search_box = re.search(r'<input type="search" id="recipient-search"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in search_box and "recipient-errors" in search_box
    assert 'id="recipient-errors"' in html
    # The nb tab says it has errors in words, not only with a red "!".
    nb_tab = re.search(r'<button class="nav-link[^"]*" id="tab-nb".*?</button>', html, re.S).group(0)
    assert "data-has-errors" in nb_tab and '<span class="visually-hidden">has errors</span>' in nb_tab
    en_tab = re.search(r'<button class="nav-link[^"]*" id="tab-en".*?</button>', html, re.S).group(0)
    assert "data-has-errors" not in en_tab
    assert 'id="form-errors" tabindex="-1"' in html  # focusable when no field can take the focus
