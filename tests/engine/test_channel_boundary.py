"""The channel boundary: a channel gets what it sends (an Outgoing the engine prepared) and
answers with a result, reading no database (that it imports nothing of the engine is checked
with the import graph, tests/test_architecture.py)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from messaging.compose import attachments
from messaging.engine.channels import Outgoing
from messaging.engine.channels.email import EmailChannel
from messaging.engine.outgoing import RECEIVER_METADATA_KEY, OutgoingBuilder, message_id_for
from messaging.feedback import return_path
from messaging.models import Message, MessageReceiver


@pytest.fixture
def prepared_batch(make_user, settings, tmp_path):
    """Outgoing items of a message of a type recipients may turn off (unsubscribe headers and
    footer), with a sender, a reply-to, an attachment and VERP return paths: everything the
    engine prepares, prepared before the channel runs."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MESSAGING_SITE_URL = "https://messaging.example.edu"
    settings.MESSAGING_BOUNCE_ADDRESS = "bounces@bounces.example.edu"
    attachments.part_cache.clear()
    message = Message.objects.create(
        context_type=Message.ContextType.FEEDBACK,
        from_email="Exams <exams@uni.example>",
        reply_to="help@uni.example",
    )
    upload = SimpleUploadedFile("plan.pdf", b"%PDF-1.4 plan", content_type="application/pdf")
    attachments.add(message, [upload])
    receivers = [
        MessageReceiver.objects.create(
            message=message,
            user=make_user(email=f"student{n}@uni.example"),
            send_to=f"student{n}@uni.example",
            language="en",
            subject=f"Grade {n}",
            message_content_plain=f"Hello {n}.",
            message_content_html=f"<html><body><p>Hello {n}.</p></body></html>",
        )
        for n in range(3)
    ]
    builder = OutgoingBuilder()
    # As the engine has them: claimed without their message.
    items = [builder.build(MessageReceiver.objects.get(pk=r.pk)) for r in receivers]
    yield items
    attachments.part_cache.clear()


@pytest.mark.django_db
def test_delivering_a_prepared_batch_reads_no_database(
    prepared_batch, smtp_mailer, django_assert_num_queries
):
    with django_assert_num_queries(0):
        results = list(EmailChannel().deliver(iter(prepared_batch)))
    assert [item for item, _result in results] == prepared_batch  # the items given, in order
    assert all(result.delivered for _item, result in results), results
    assert len(smtp_mailer.received) == 3
    for item, sunk in zip(prepared_batch, smtp_mailer.received, strict=True):
        receiver = item.ref
        assert sunk.rcpt_tos == (receiver.send_to,)
        assert sunk.mail_from == return_path.envelope_sender(receiver)
        email = sunk.message
        assert email["Message-ID"] == message_id_for(receiver)
        assert email["From"] == "Exams <exams@uni.example>" and email["Reply-To"] == "help@uni.example"
        assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert str(email["List-Unsubscribe"]).endswith("/one-click/>")
        assert "Change how you get these messages" in email.get_body(("plain",)).get_content()
        (part,) = email.iter_attachments()
        assert (part.get_filename(), part.get_content()) == ("plan.pdf", b"%PDF-1.4 plan")
    assert prepared_batch[0].metadata == {RECEIVER_METADATA_KEY: str(prepared_batch[0].ref.pk)}


@pytest.mark.django_db
def test_the_channel_takes_the_next_item_only_once_the_last_ones_result_is_out(prepared_batch, smtp_mailer):
    log = []

    def taken():
        for index, item in enumerate(prepared_batch):
            log.append(f"take {index}")
            yield item

    for index, (_item, result) in enumerate(EmailChannel().deliver(taken())):
        assert result.delivered
        log.append(f"result {index}")
    assert log == ["take 0", "result 0", "take 1", "result 1", "take 2", "result 2"]


@pytest.mark.django_db
def test_an_item_without_an_address_fails_for_good_without_a_query(smtp_mailer, django_assert_num_queries):
    item = Outgoing(ref=object(), address="", subject="Hi", plain="x", from_email="a@uni.example")
    with django_assert_num_queries(0):
        ((answered, result),) = EmailChannel().deliver([item])
    assert answered is item
    assert not result.delivered and result.permanent
    assert result.reason == "The user has no email address."
    assert smtp_mailer.received == []
