"""Retention: which receivers and messages go, what stays, the audit trail, and flat memory."""

from __future__ import annotations

import gc
import io
import resource
import time
import tracemalloc
from datetime import timedelta

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messaging.models import AuditEvent, DeliveryEvent, Message, MessageReceiver
from messaging.operations import retention

pytestmark = pytest.mark.django_db

M = Message.Status
R = MessageReceiver.Status
DAYS = 30


def ago(days: float):
    return timezone.now() - timedelta(days=days)


def make_message(status=M.SENT, age_days: float = 40, **fields) -> Message:
    return Message.objects.create(status=status, created_datetime=ago(age_days), **fields)


def make_receiver(message, user, status=R.SENT, age_days: float = 40) -> MessageReceiver:
    return MessageReceiver.objects.create(
        message=message, user=user, status=status, created_datetime=ago(age_days)
    )


def statuses(message) -> list[str]:
    return sorted(MessageReceiver.objects.filter(message=message).values_list("status", flat=True))


class TestDeleteOldReceivers:
    @pytest.mark.parametrize("message_status", [M.SENT, M.ERROR])
    def test_only_old_final_receivers_of_finished_messages_go(self, make_user, message_status):
        user = make_user()
        message = make_message(message_status)
        for status in (R.SENT, R.ERROR, R.NOT_SENT, R.FAILED):
            make_receiver(message, user, status)
        new = make_receiver(message, user, R.SENT, age_days=DAYS - 1)

        assert retention.delete_old_receivers(DAYS) == 2

        assert statuses(message) == sorted([R.FAILED, R.NOT_SENT, R.SENT])
        assert MessageReceiver.objects.filter(pk=new.pk).exists()

    @pytest.mark.parametrize("message_status", [M.DRAFT, M.QUEUED, M.PREPARING, M.SENDING, M.BLOCKED])
    def test_every_receiver_of_an_unfinished_message_stays(self, make_user, message_status):
        user = make_user()
        message = make_message(message_status, age_days=400)
        for status in R.values:
            make_receiver(message, user, status, age_days=400)

        assert retention.delete_old_receivers(DAYS) == 0
        assert retention.delete_old_receivers(0) == 0

        assert statuses(message) == sorted(R.values)

    def test_keyset_batches_skip_kept_receivers(self, make_user):
        user = make_user()
        sent, sending = make_message(M.SENT), make_message(M.SENDING)
        kept = []
        for i in range(20):
            make_receiver(sent, user, R.SENT if i % 2 else R.ERROR)
            kept.append(make_receiver(sent, user, R.NOT_SENT if i % 2 else R.FAILED).pk)
            kept.append(make_receiver(sending, user, R.SENT).pk)

        assert retention.delete_old_receivers(DAYS, batch_size=3) == 20

        assert sorted(MessageReceiver.objects.values_list("pk", flat=True)) == sorted(kept)

    def test_audit_events_of_deleted_receivers_stay_unlinked(self, make_user):
        user = make_user()
        message = make_message(M.ERROR)
        receiver = make_receiver(message, user, R.ERROR)
        event = AuditEvent.objects.create(message=message, receiver=receiver, action=AuditEvent.Action.RESENT)

        assert retention.delete_old_receivers(DAYS) == 1

        event.refresh_from_db()
        assert event.receiver_id is None
        assert event.message_id == message.pk

    def test_negative_days_are_refused(self):
        with pytest.raises(ValueError, match="zero or more"):
            retention.delete_old_receivers(-1)

    def test_every_relation_to_a_receiver_is_handled(self):
        # The raw delete skips Django's collector; it unlinks AuditEvent.receiver itself. A new
        # relation to MessageReceiver must be handled in retention.delete_old_receivers too.
        pointing_here = [
            (model, field.name)
            for model in apps.get_models(include_auto_created=True)
            for field in model._meta.concrete_fields
            if field.is_relation and field.related_model is MessageReceiver
        ]
        assert len(pointing_here) == 3
        assert set(pointing_here) == {
            (AuditEvent, "receiver"),
            (DeliveryEvent, "receiver"),
            (MessageReceiver, "digest"),
        }

    def test_queries_per_batch_do_not_grow_with_receivers(self, make_user):
        user = make_user()

        def queries_to_delete(count: int) -> int:
            message = make_message(M.SENT)
            MessageReceiver.objects.bulk_create(
                MessageReceiver(message=message, user=user, status=R.SENT, created_datetime=ago(40))
                for _ in range(count)
            )
            with CaptureQueriesContext(connection) as queries:
                assert retention.delete_old_receivers(DAYS) == count
            return len(queries)

        one, many = queries_to_delete(1), queries_to_delete(1500)
        assert one == many
        # savepoint, select ids, unlink audit events, digest items and suppressions, delete
        # delivery events and receivers, release; then one query for the messages that keep
        # receivers (none here)
        assert many <= 9

    def test_queries_grow_with_batches_only(self, make_user):
        user = make_user()
        message = make_message(M.SENT)
        MessageReceiver.objects.bulk_create(
            MessageReceiver(message=message, user=user, status=R.SENT, created_datetime=ago(40))
            for _ in range(25)
        )
        with CaptureQueriesContext(connection) as queries:
            assert retention.delete_old_receivers(DAYS, batch_size=10) == 25
        assert len(queries) <= 3 * 8 + 1


class TestDeleteMessagesWithoutReceivers:
    @pytest.mark.parametrize("status", [M.DRAFT, M.QUEUED, M.PREPARING, M.SENDING, M.BLOCKED])
    def test_drafts_and_messages_in_progress_stay(self, status):
        message = make_message(status, age_days=400)

        assert retention.delete_messages_without_receivers() == 0

        assert Message.objects.filter(pk=message.pk).exists()
        assert not AuditEvent.objects.filter(action=AuditEvent.Action.DELETED).exists()

    def test_finished_messages_with_receivers_stay(self, make_user):
        message = make_message(M.SENT)
        make_receiver(message, make_user(), R.SENT)

        assert retention.delete_messages_without_receivers() == 0
        assert Message.objects.filter(pk=message.pk).exists()

    @pytest.mark.parametrize("status", [M.SENT, M.ERROR])
    def test_finished_messages_without_receivers_go(self, status):
        messages = [make_message(status) for _ in range(7)]

        assert retention.delete_messages_without_receivers(batch_size=3) == 7

        assert not Message.objects.exists()
        assert sorted(
            AuditEvent.objects.filter(action=AuditEvent.Action.DELETED).values_list(
                "message_number", flat=True
            )
        ) == sorted(m.pk for m in messages)

    def test_age_limit(self):
        old, recent = make_message(M.ERROR, age_days=DAYS + 1), make_message(M.ERROR, age_days=1)

        assert retention.delete_messages_without_receivers(older_than_days=DAYS) == 1

        assert list(Message.objects.values_list("pk", flat=True)) == [recent.pk]
        assert AuditEvent.objects.get(action=AuditEvent.Action.DELETED).message_number == old.pk


class TestAuditTrail:
    def test_trail_outlives_the_message(self, make_user, settings):
        settings.MESSAGING_RECEIVER_RETENTION_DAYS = DAYS
        staff, user = make_user(), make_user()
        counts = {"not_sent": 0, "sent": 2, "failed": 0, "error": 1}
        message = make_message(
            M.ERROR,
            context_type=Message.ContextType.COMMENT,
            composed_content={"en": {"subject": "Exam moved", "body": "To Friday."}},
            status_data={"summary": {"receiver_counts": counts, "total": 3}},
        )
        number, created = message.pk, message.created_datetime
        for status in (R.SENT, R.SENT, R.ERROR):
            make_receiver(message, user, status)
        AuditEvent.objects.create(message=message, actor=staff, action=AuditEvent.Action.CREATED)
        AuditEvent.objects.create(message=message, actor=staff, action=AuditEvent.Action.SENT)

        retention.apply_retention()

        assert not Message.objects.filter(pk=number).exists()
        assert not MessageReceiver.objects.exists()
        events = {e.action: e for e in AuditEvent.objects.all()}
        assert set(events) == {AuditEvent.Action.CREATED, AuditEvent.Action.SENT, AuditEvent.Action.DELETED}
        for event in events.values():
            assert event.message_id is None
            assert event.message_number == number
            assert event.message_subject == "Exam moved"
        assert events[AuditEvent.Action.CREATED].actor == staff
        deleted = events[AuditEvent.Action.DELETED]
        assert deleted.actor is None
        assert deleted.details == {
            "status": M.ERROR,
            "context_type": Message.ContextType.COMMENT,
            "created_datetime": created.isoformat(),
            "receiver_counts": counts,
            "receivers": 3,
        }

    def test_deleted_event_without_published_counts(self):
        message = make_message(M.ERROR)

        assert retention.delete_messages_without_receivers() == 1

        event = AuditEvent.objects.get()
        assert event.message_number == message.pk
        assert event.message_subject == "Other"  # the context type stands in for a subject
        assert event.details["receiver_counts"] == {}
        assert event.details["receivers"] == 0


class TestApplyRetention:
    def test_nothing_happens_without_the_setting(self, make_user, settings):
        settings.MESSAGING_RECEIVER_RETENTION_DAYS = None
        message = make_message(M.SENT, age_days=4000)
        make_receiver(message, make_user(), R.SENT, age_days=4000)
        make_message(M.ERROR, age_days=4000)

        retention.apply_retention()

        assert Message.objects.count() == 2
        assert MessageReceiver.objects.count() == 1

    def test_receivers_then_emptied_messages(self, make_user, settings):
        settings.MESSAGING_RECEIVER_RETENTION_DAYS = DAYS
        user = make_user()
        emptied, partly, recent_error = make_message(M.SENT), make_message(M.ERROR), make_message(M.ERROR, 1)
        make_receiver(emptied, user, R.SENT)
        make_receiver(partly, user, R.ERROR)
        make_receiver(partly, user, R.FAILED)

        retention.apply_retention()

        assert sorted(Message.objects.values_list("pk", flat=True)) == sorted([partly.pk, recent_error.pk])
        assert statuses(partly) == [R.FAILED]

    def test_the_periodic_task_runs_it(self, make_user, settings):
        from messaging import tasks

        settings.MESSAGING_RECEIVER_RETENTION_DAYS = DAYS
        message = make_message(M.SENT)
        make_receiver(message, make_user(), R.SENT)

        tasks.apply_retention.call_local()

        assert not Message.objects.exists()


class TestCommands:
    def test_delete_old_receivers(self, make_user):
        user = make_user()
        message = make_message(M.SENT)
        make_receiver(message, user, R.SENT)
        make_receiver(message, user, R.FAILED)
        out = io.StringIO()

        call_command("messaging_delete_old_receivers", str(DAYS), stdout=out)

        assert out.getvalue().strip() == f"Deleted 1 receiver(s) older than {DAYS} day(s)."
        assert statuses(message) == [R.FAILED]

    def test_delete_old_receivers_refuses_negative_days(self):
        with pytest.raises(CommandError, match="zero or more"):
            call_command("messaging_delete_old_receivers", "-1")

    def test_delete_messages_without_receivers(self):
        make_message(M.SENT)
        draft = make_message(M.DRAFT)
        out = io.StringIO()

        call_command("messaging_delete_messages_without_receivers", stdout=out)

        assert out.getvalue().strip() == "Deleted 1 message(s) without receivers."
        assert list(Message.objects.values_list("pk", flat=True)) == [draft.pk]


def test_memory_stays_flat_for_100000_receivers(make_user, capsys):
    total, chunk = 100_000, 5_000
    user = make_user()
    messages = [make_message(M.SENT if i % 2 else M.ERROR) for i in range(10)]
    created = ago(40)
    for start in range(0, total, chunk):
        MessageReceiver.objects.bulk_create(
            [
                MessageReceiver(
                    message=messages[(start + i) % len(messages)],
                    user=user,
                    status=R.SENT if i % 3 else R.ERROR,
                    created_datetime=created,
                )
                for i in range(chunk)
            ]
        )
    assert MessageReceiver.objects.count() == total
    gc.collect()

    tracemalloc.start()
    started = time.monotonic()
    try:
        deleted = retention.delete_old_receivers(DAYS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    seconds = time.monotonic() - started

    assert deleted == total
    assert not MessageReceiver.objects.exists()
    peak_mb = peak / 2**20
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    with capsys.disabled():
        print(
            f"\nretention: deleted={deleted} peak_traced_mb={peak_mb:.2f} "
            f"ru_maxrss_mb={maxrss_mb:.0f} seconds={seconds:.1f}"
        )
    assert peak_mb < 40
