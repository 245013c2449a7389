"""Composing: staff pages (included by messaging.urls)."""

from django.urls import path

from messaging.compose.views import attachments, messages, templates

urlpatterns = [
    path("new/", messages.message_create, name="message_create"),
    path("<int:pk>/edit/", messages.message_edit, name="message_edit"),
    path("<int:pk>/duplicate/", messages.message_duplicate, name="message_duplicate"),
    path("<int:pk>/delete/", messages.message_delete, name="message_delete"),
    path(
        "<int:pk>/save-as-template/",
        templates.message_save_as_template,
        name="message_save_as_template",
    ),
    path("<int:pk>/preview/", messages.message_preview, name="message_preview"),
    path("attachments/<int:pk>/", attachments.attachment_download, name="attachment_download"),
    path("<int:pk>/send-test/", messages.message_send_test, name="message_send_test"),
    path("<int:pk>/send/", messages.message_send, name="message_send"),
    path("<int:pk>/unschedule/", messages.message_unschedule, name="message_unschedule"),
    path("recipients/search/", messages.recipient_search, name="recipient_search"),
    path("recipients/summary/", messages.recipient_summary, name="recipient_summary"),
    path("recipients/groups/<int:pk>/members/", messages.group_members, name="group_members"),
    path("templates/", templates.template_list, name="template_list"),
    path("templates/new/", templates.template_create, name="template_create"),
    path("templates/start/", templates.template_start, name="template_start"),
    path("templates/<int:pk>/edit/", templates.template_edit, name="template_edit"),
    path("templates/<int:pk>/delete/", templates.template_delete, name="template_delete"),
]
