"""View tests of the staff UI: every page and endpoint, htmx fragments, the send flow."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.urls import reverse

from messaging.compose import composing
from messaging.engine import maintenance
from messaging.models import AuditEvent, Message, MessageReceiver
from tests.conftest import grant

ALL_PERMS = ["view_message", "compose_message", "send_message", "resend_message"]
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def staff(make_user):
    return grant(
        make_user(is_staff=True, username="staffer", first_name="Sam", last_name="Staff"), *ALL_PERMS
    )


@pytest.fixture
def recipients(make_user):
    en = make_user(language="en")
    nb = make_user(language="nb")
    nobody = make_user(language="en", email="")
    return en, nb, nobody


@pytest.fixture
def draft(staff, recipients):
    en, nb, nobody = recipients
    message = Message(
        context_type=Message.ContextType.OTHER,
        composed_content={
            "en": {"subject": "Hello {{ recipient_name }}", "body": "<p>Hi {{ recipient_first_name }}</p>"}
        },
        virtual_message_receivers={"chosen_user_ids": [en.pk, nb.pk, nobody.pk], "group_ids": []},
    )
    return composing.save_draft(message, staff)


@pytest.fixture
def sent(draft, staff, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        composing.queue_send(draft, staff)  # huey runs inline in tests
    draft.refresh_from_db()
    return draft


def compose_data(**overrides):
    data = {
        "context_type": "other",
        "subject_en": "Subject",
        "body_en": "<p>Body</p>",
        "subject_nb": "",
        "body_nb": "",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


class TestSmoke:
    def test_pages(self, staff_client, sent, draft):
        for name, args in [
            ("message_list", []),
            ("message_create", []),
            ("message_preview", [sent.pk]),
            ("message_status", [sent.pk]),
        ]:
            response = staff_client.get(reverse(f"messaging:{name}", args=args))
            assert response.status_code == 200, name


def is_fragment(response) -> bool:
    return b"<html" not in response.content


class TestMessageList:
    def test_lists_messages_with_counts(self, staff_client, sent):
        response = staff_client.get(reverse("messaging:message_list"))
        assert response.status_code == 200
        row = re.search(rb'<tr [^>]*id="message-%d".*?</tr>' % sent.pk, response.content, re.S).group(0)
        assert b"Hello" in row and b'data-label="sent_partly"' in row and b"Sam Staff" in row
        assert b"Sent, 1 not delivered" in row and b"severity-partial" in row
        assert b'<script src="/static/django_htmx/htmx-2.min.js"' in response.content
        assert b"/static/vendor/bootstrap/css/bootstrap.min.css" in response.content

    def test_filters_and_search(self, staff_client, sent, staff):
        other = composing.save_draft(
            Message(
                composed_content={
                    "en": {"subject": "Other", "body": "<p>x</p>"},
                    "nb": {"subject": "Blåbær", "body": "<p>y</p>"},
                }
            ),
            staff,
        )
        url = reverse("messaging:message_list")
        assert f'id="message-{other.pk}"' not in staff_client.get(url, {"status": "error"}).content.decode()
        content = staff_client.get(url, {"q": "blåbær"}).content.decode()
        assert f'id="message-{other.pk}"' in content and f'id="message-{sent.pk}"' not in content
        content = staff_client.get(url, {"context_type": "other", "created_by": staff.pk}).content.decode()
        assert f'id="message-{other.pk}"' in content and f'id="message-{sent.pk}"' in content
        content = staff_client.get(
            url, {"created_after": "2000-01-01", "created_before": "2000-01-02"}
        ).content.decode()
        assert "message-link" not in content

    def test_htmx_gets_only_the_results_fragment(self, staff_client, sent):
        url = reverse("messaging:message_list")
        response = staff_client.get(url, {"status": "error"}, **HTMX)
        assert is_fragment(response)
        assert b'id="message-results"' in response.content and b'id="message-filter"' not in response.content
        assert "HX-Request" in response["Vary"]
        restore = staff_client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
        assert not is_fragment(restore)

    def test_sorting_and_pagination(self, staff_client, staff):
        for n in range(30):
            composing.save_draft(
                Message(composed_content={"en": {"subject": f"S{n:02}", "body": "<p>b</p>"}}), staff
            )
        url = reverse("messaging:message_list")
        response = staff_client.get(url, {"sort": "created_datetime", "page": 2})
        assert response.status_code == 200
        assert response.content.count(b'data-testid="message-link"') == 5


class TestCompose:
    def test_new_form(self, staff_client):
        response = staff_client.get(reverse("messaging:message_create"))
        content = response.content.decode()
        assert 'id="compose-form"' in content and 'name="subject_nb"' in content
        assert 'data-insert-placeholder="recipient_name"' in content

    def test_create_draft(self, staff_client, staff, recipients, django_user_model):
        en, nb, _nobody = recipients
        group = Group.objects.create(name="Students")
        nb.groups.add(group)
        data = compose_data(
            users=[en.pk], groups=[group.pk], subject_nb="Hei", body_nb="<p>Hei</p><script>x()</script>"
        )
        response = staff_client.post(reverse("messaging:message_create"), data)
        message = Message.objects.get()
        assert response.status_code == 302 and response["Location"] == reverse(
            "messaging:message_edit", args=[message.pk]
        )
        assert message.is_draft and message.created_by == staff
        assert message.virtual_message_receivers == {"chosen_user_ids": [en.pk], "group_ids": [group.pk]}
        assert message.composed_content == {
            "en": {"subject": "Subject", "body": "<p>Body</p>"},
            "nb": {"subject": "Hei", "body": "<p>Hei</p>"},
        }
        assert AuditEvent.objects.filter(message=message, action="created", actor=staff).exists()

    def test_save_and_preview_over_htmx(self, staff_client):
        response = staff_client.post(
            reverse("messaging:message_create"), compose_data(next="preview"), **HTMX
        )
        message = Message.objects.get()
        assert response["HX-Redirect"] == reverse("messaging:message_preview", args=[message.pk])

    def test_errors_in_place_and_nothing_saved(self, staff_client):
        data = compose_data(subject_en="", body_nb="{% load evil %}")
        response = staff_client.post(reverse("messaging:message_create"), data, **HTMX)
        assert response.status_code == 200 and is_fragment(response)
        content = response.content.decode()
        assert 'id="compose-form"' in content and "is-invalid" in content
        assert 'data-testid="tab-error-nb"' in content
        assert not Message.objects.exists()

    def test_edit_draft(self, staff_client, draft, staff):
        url = reverse("messaging:message_edit", args=[draft.pk])
        content = staff_client.get(url).content.decode()
        assert 'value="Hello {{ recipient_name }}"' in content and 'data-recipient="users-' in content
        response = staff_client.post(url, compose_data(subject_en="Changed", users=[staff.pk]))
        assert response.status_code == 302
        draft.refresh_from_db()
        assert draft.composed_content["en"]["subject"] == "Changed"
        assert draft.virtual_message_receivers["chosen_user_ids"] == [staff.pk]

    def test_sent_message_is_read_only(self, staff_client, sent):
        before = dict(sent.composed_content)
        url = reverse("messaging:message_edit", args=[sent.pk])
        response = staff_client.get(url)
        assert response.status_code == 302
        assert response["Location"] == reverse("messaging:message_status", args=[sent.pk])
        # A save posted from a page opened before it was sent: refused, what was typed stays.
        response = staff_client.post(url, compose_data(subject_en="Nope"))
        assert response.status_code == 409
        assert "This message was sent while you were editing it" in response.content.decode()
        assert 'value="Nope"' in response.content.decode()
        sent.refresh_from_db()
        assert sent.composed_content == before

    def test_duplicate(self, staff_client, sent):
        response = staff_client.post(reverse("messaging:message_duplicate", args=[sent.pk]))
        report = Message.ContextType.SENDING_REPORT
        copy = Message.objects.exclude(pk=sent.pk).exclude(context_type=report).get()
        assert response["Location"] == reverse("messaging:message_edit", args=[copy.pk])
        assert copy.is_draft and copy.composed_content == sent.composed_content

    def test_delete_draft(self, staff_client, draft):
        url = reverse("messaging:message_delete", args=[draft.pk])
        assert b'id="confirm-delete"' in staff_client.get(url).content
        assert staff_client.post(url)["Location"] == reverse("messaging:message_list")
        assert not Message.objects.filter(pk=draft.pk).exists()

    def test_sent_message_cannot_be_deleted(self, staff_client, sent):
        response = staff_client.post(reverse("messaging:message_delete", args=[sent.pk]))
        assert response.status_code == 302 and Message.objects.filter(pk=sent.pk).exists()


class TestRecipientEndpoints:
    def test_search_users_and_groups(self, staff_client, make_user):
        alice = make_user(username="alice", first_name="Alice")
        group = Group.objects.create(name="Alice fans")
        make_user(username="inactive-alice", is_active=False)
        response = staff_client.get(reverse("messaging:recipient_search"), {"q": "alice"}, **HTMX)
        content = response.content.decode()
        assert f'data-testid="search-user-{alice.pk}"' in content
        assert f'data-testid="search-group-{group.pk}"' in content
        assert "inactive-alice" not in content
        empty = staff_client.get(reverse("messaging:recipient_search"), {"q": "zzz"}, **HTMX)
        assert b"recipient-search-empty" in empty.content

    def test_summary_counts_distinct_users_languages_and_missing_addresses(self, staff_client, recipients):
        en, nb, nobody = recipients
        group = Group.objects.create(name="G")
        en.groups.add(group)
        nb.groups.add(group)
        response = staff_client.get(
            reverse("messaging:recipient_summary"),
            {"users": [en.pk, nobody.pk], "groups": [group.pk]},
            **HTMX,
        )
        content = response.content.decode()
        assert 'data-count="3"' in content  # distinct: en counted once
        assert '<li data-language="en" data-count="2">' in content
        assert '<li data-language="nb" data-count="1">' in content
        assert 'id="recipients-without-address" data-count="1"' in content and nobody.username in content

    def test_summary_ignores_garbage(self, staff_client):
        response = staff_client.get(reverse("messaging:recipient_summary"), {"users": ["x", "1"]})
        assert response.status_code == 200 and b'data-count="0"' in response.content


class TestPreview:
    def test_side_by_side_with_fallback_and_sample(self, staff_client, draft, recipients):
        en, _nb, nobody = recipients
        url = reverse("messaging:message_preview", args=[draft.pk])
        content = staff_client.get(url).content.decode()
        assert 'id="preview-en"' in content and 'id="preview-nb"' in content
        assert 'data-testid="fallback-warning-nb"' in content
        assert 'data-testid="fallback-warning-en"' not in content
        assert f"Hello {en.get_full_name()}" in content
        assert 'id="without-address-warning"' in content
        switched = staff_client.get(url, {"sample_en": nobody.pk}, **HTMX).content.decode()
        assert f"Hello {nobody.get_full_name()}" in switched
        assert 'data-testid="no-address-warning-en"' in switched
        assert "<html" not in switched.split('id="preview-columns"')[0]

    def test_html_is_sandboxed(self, staff_client, draft):
        draft.composed_content["en"]["body"] = '<p onclick="x()">a</p><script>alert(1)</script>'
        draft.save()
        content = staff_client.get(reverse("messaging:message_preview", args=[draft.pk])).content.decode()
        frames = re.findall(r"<iframe[^>]*>", content)
        assert frames and all(" sandbox " in f and "allow-scripts" not in f for f in frames)
        assert "<script>alert" not in content  # only ever escaped into srcdoc

    def test_send_test_to_me(self, staff_client, draft, staff):
        response = staff_client.post(reverse("messaging:message_send_test", args=[draft.pk]), **HTMX)
        assert b'data-testid="test-sent"' in response.content
        assert [m.to for m in mail.outbox] == [[staff.email]]
        draft.refresh_from_db()
        assert draft.is_draft and not draft.receivers.exists()
        assert "user_ids" not in draft.virtual_message_receivers

    def test_send_test_without_htmx_redirects(self, staff_client, draft):
        response = staff_client.post(reverse("messaging:message_send_test", args=[draft.pk]))
        assert response["Location"] == reverse("messaging:message_preview", args=[draft.pk])


class TestSend:
    def test_confirmation_states_the_count(self, staff_client, draft):
        response = staff_client.get(reverse("messaging:message_send", args=[draft.pk]))
        assert b'id="send-count" data-count="3"' in response.content

    def test_send_queues_and_redirects_to_status(
        self, staff_client, draft, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(reverse("messaging:message_send", args=[draft.pk]))
        assert response["Location"] == reverse("messaging:message_status", args=[draft.pk])
        draft.refresh_from_db()
        assert draft.status == Message.Status.ERROR  # one receiver has no address
        assert draft.receivers.count() == 3
        # Two receivers, and the report to the staff member who sent it.
        assert len(mail.outbox) == 3
        assert mail.outbox[-1].subject == "Sent with failures: Hello [recipient_name]"

    def test_queued_draft_is_live_and_read_only_until_a_worker_starts(self, staff_client, draft, settings):
        # The test's transaction holds the on-commit task back: the message stays queued.
        staff_client.post(reverse("messaging:message_send", args=[draft.pk]))
        draft.refresh_from_db()
        assert draft.is_queued and not draft.is_editable
        page = staff_client.get(reverse("messaging:message_status", args=[draft.pk])).content.decode()
        assert 'id="queued-note"' in page and 'data-polling="true"' in page
        edit = staff_client.get(reverse("messaging:message_edit", args=[draft.pk]))
        assert edit.status_code == 302
        settings.MESSAGING_LEASE_SECONDS = 0
        assert maintenance.lost_queued_messages() == [draft.pk]  # the sweeper re-queues it

    def test_twice_sends_once(self, staff_client, draft, django_capture_on_commit_callbacks):
        url = reverse("messaging:message_send", args=[draft.pk])
        with django_capture_on_commit_callbacks(execute=True):
            staff_client.post(url)
            second = staff_client.post(url)
        assert second.status_code == 302 and draft.receivers.count() == 3

    def test_no_recipients_sends_nothing(self, staff_client, staff):
        empty = composing.save_draft(
            Message(composed_content={"en": {"subject": "s", "body": "<p>b</p>"}}), staff
        )
        response = staff_client.post(reverse("messaging:message_send", args=[empty.pk]))
        assert response["Location"] == reverse("messaging:message_send", args=[empty.pk])
        empty.refresh_from_db()
        assert empty.is_draft


class TestStatus:
    def test_page(self, staff_client, sent):
        content = staff_client.get(reverse("messaging:message_status", args=[sent.pk])).content.decode()
        assert 'id="count-sent">2<' in content and 'id="count-failed">1<' in content
        assert 'id="failure-groups"' in content and "no email address" in content
        assert 'data-action="sent"' in content and 'data-action="created"' in content
        assert 'id="resend-all-failed" data-count="1"' in content
        assert 'data-polling="false"' in content and "every 2s" not in content

    def test_receiver_filter(self, staff_client, sent):
        url = reverse("messaging:message_status", args=[sent.pk])
        content = staff_client.get(url, {"status": "failed"}, **HTMX).content.decode()
        assert content.count('data-receiver-id="') == 1
        assert 'hx-swap-oob="true"' in content  # the summary comes along out of band
        content = staff_client.get(url, {"language": "nb"}).content.decode()
        assert content.count('data-receiver-id="') == 1
        nb_user = sent.receivers.get(language="nb").user
        content = staff_client.get(url, {"q": nb_user.username}).content.decode()
        assert content.count('data-receiver-id="') == 1

    def test_polls_while_sending_and_keeps_the_query(self, staff_client, sent):
        Message.objects.filter(pk=sent.pk).update(status=Message.Status.SENDING)
        MessageReceiver.objects.filter(message=sent, status="failed").update(status="not_sent")
        url = reverse("messaging:message_status", args=[sent.pk])
        response = staff_client.get(
            url, {"status": "sent", "page": 1}, HTTP_HX_REQUEST="true", HTTP_HX_TRIGGER="receiver-results"
        )
        content = response.content.decode()
        assert response.status_code == 200 and is_fragment(response)
        assert 'hx-trigger="every 2s"' in content
        assert f'hx-get="{url}?status=sent&amp;page=1"' in content

    def test_poll_reads_published_counts_without_counting_receivers(self, staff_client, sent):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        published = {"not_sent": 40, "sent": 50, "failed": 7, "error": 3}
        sent.status = Message.Status.SENDING
        sent.status_data["summary"] = {"receiver_counts": published, "total": 100}
        sent.save()
        url = reverse("messaging:message_status", args=[sent.pk])
        with CaptureQueriesContext(connection) as ctx:
            response = staff_client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TRIGGER="receiver-results")
        content = response.content.decode()
        assert 'data-count="10"' in content  # "Resend all failed (10)" from the published counts
        receiver_sql = [q["sql"] for q in ctx.captured_queries if "messaging_messagereceiver" in q["sql"]]
        # No count of all receivers (per status, or for the paginator); only failures are grouped.
        whole_message_counts = [
            q for q in receiver_sql if 'COUNT(*) AS "__count"' in q or 'AS "status", COUNT' in q
        ]
        assert not whole_message_counts

    def test_polling_stops_when_done(self, staff_client, sent):
        url = reverse("messaging:message_status", args=[sent.pk])
        response = staff_client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TRIGGER="receiver-results")
        assert response.status_code == 286
        assert b"every 2s" not in response.content

    def test_rate_and_time_left(self, sent):
        from datetime import timedelta

        from messaging.tracking import selectors

        sent.status = Message.Status.SENDING
        started = sent.created_datetime
        sent.status_data["sending_started"] = started.isoformat()
        progress = selectors.sending_progress(
            sent, {"not_sent": 30, "sent": 10, "failed": 0, "error": 0}, now=started + timedelta(seconds=10)
        )
        assert progress.rate_per_minute == 60.0 and progress.seconds_left == 30 and progress.percent == 25


class TestResend:
    def test_resend_all_failed_is_safe_twice(
        self, staff_client, sent, staff, django_capture_on_commit_callbacks
    ):
        url = reverse("messaging:message_resend_failed", args=[sent.pk])
        sent_before = {r.pk: r.sending_success_count for r in sent.receivers.filter(status="sent")}
        data = {"include_permanent": "on"}  # "no address" is permanent: resent only when asked
        with django_capture_on_commit_callbacks(execute=False) as queued:
            response = staff_client.post(url, data, **HTMX)
            assert staff_client.post(url, data, **HTMX).status_code == 200  # a double click
        assert response.status_code == 200 and response["HX-Redirect"] == reverse(
            "messaging:message_status", args=[sent.pk]
        )
        assert len(queued) == 1
        assert AuditEvent.objects.filter(message=sent, action="resent_all", actor=staff).count() == 1
        for callback in queued:
            callback()
        failed = sent.receivers.get(user__email="")
        assert failed.sending_failed_count == 2  # tried again (and failed again: still no address)
        for pk, count in sent_before.items():
            assert MessageReceiver.objects.get(pk=pk).sending_success_count == count
        assert staff_client.post(url).status_code == 302

    def test_resend_one_row(self, staff_client, sent):
        failed = sent.receivers.get(status="failed")
        url = reverse("messaging:receiver_resend", args=[failed.pk])
        response = staff_client.post(f"{url}?status=not_sent", **HTMX)
        content = response.content.decode()
        # The live region comes back (row, counts, polling), filtered as the page was.
        assert content.strip().startswith('<div id="receiver-results"')
        assert f'id="receiver-{failed.pk}"' in content and 'data-polling="true"' in content
        assert "status=not_sent" in content
        assert AuditEvent.objects.filter(receiver=failed, action="resent").exists()

    def test_sent_receiver_is_not_resent(self, staff_client, sent):
        done = sent.receivers.filter(status="sent").first()
        staff_client.post(reverse("messaging:receiver_resend", args=[done.pk]), **HTMX)
        done.refresh_from_db()
        assert done.sending_success_count == 1 and not AuditEvent.objects.filter(action="resent").exists()

    def test_receiver_detail(self, staff_client, sent):
        failed = sent.receivers.get(status="failed")
        content = staff_client.get(reverse("messaging:receiver_detail", args=[failed.pk])).content.decode()
        assert 'data-testid="receiver-error"' in content and "no email address" in content
        assert 'id="resend-receiver"' in content
        assert re.search(r"<iframe sandbox srcdoc=", content)


class TestChrome:
    def test_login_page(self, client):
        response = client.get(reverse("login"))
        assert response.status_code == 200 and b'id="login-form"' in response.content

    def test_login_works(self, client, staff):
        staff.set_password("pw-123456!")
        staff.save()
        response = client.post(
            reverse("login"), {"username": staff.username, "password": "pw-123456!"}, follow=True
        )
        assert response.redirect_chain[-1][0] == reverse("messaging:message_list")

    def test_language_switch(self, client):
        response = client.post(reverse("messaging:set_language"), {"language": "nb", "next": "/login/"})
        assert response.status_code == 302 and response.cookies["django_language"].value == "nb"

    def test_no_inline_scripts_or_styles(self, staff_client, sent):
        for url in (
            reverse("messaging:message_list"),
            reverse("messaging:message_status", args=[sent.pk]),
            reverse("messaging:message_create"),
            reverse("messaging:message_preview", args=[sent.pk]),
        ):
            content = staff_client.get(url).content.decode()
            # json_script data (type application/json) is not executed, so CSP does not apply.
            assert not re.search(r'<script(?![^>]*\b(src=|type="application/json"))', content), url
            assert " style=" not in content and "<style" not in content and " onclick=" not in content, url
            assert "Content-Security-Policy" in staff_client.get(url).headers

    def test_csrf_header_for_htmx(self, staff_client):
        content = staff_client.get(reverse("messaging:message_list")).content.decode()
        assert re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"[^\"]+\"\}'>", content)
