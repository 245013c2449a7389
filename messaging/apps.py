from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = _("Messaging")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from messaging import checks  # noqa: F401 (registers the system checks)
        from messaging.engine import channels
        from messaging.engine.channels.email import EmailChannel

        channels.register(EmailChannel())

        from messaging.operations import reporting
        from messaging.signals import message_status_changed

        message_status_changed.connect(reporting.on_status_changed, dispatch_uid="messaging.reporting")

        from django.db.models.signals import post_delete

        from messaging.engine import recounting
        from messaging.models import MessageReceiver

        post_delete.connect(
            recounting.on_receiver_deleted, sender=MessageReceiver, dispatch_uid="messaging.recounting"
        )

        from messaging.compose import attachments
        from messaging.models import MessageAttachment

        post_delete.connect(
            attachments.on_attachment_deleted, sender=MessageAttachment, dispatch_uid="messaging.attachments"
        )

        # tasks registers the huey tasks with messaging.engine.queue, through which services
        # queue work: run_huey autodiscovers tasks modules, but web processes, other commands and
        # tests queue work too.
        from messaging import (
            sign_in,  # noqa: F401 (audits failed sign-ins and lockouts)
            tasks,  # noqa: F401
        )
        from messaging.feedback import webhooks  # noqa: F401 (connects anymail's tracking signal)
