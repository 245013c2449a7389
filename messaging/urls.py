from django.urls import path
from django.views.i18n import set_language

from messaging import views
from messaging.compose.views import attachments as views_attachments
from messaging.compose.views import templates as views_templates
from messaging.feedback import views as views_suppressions
from messaging.operations import views as views_operations
from messaging.tracking.views import exports as views_exports
from messaging.tracking.views import people as views_people

app_name = "messaging"

urlpatterns = [
    path("", views.message_list, name="message_list"),
    path("new/", views.message_create, name="message_create"),
    path("<int:pk>/edit/", views.message_edit, name="message_edit"),
    path("<int:pk>/duplicate/", views.message_duplicate, name="message_duplicate"),
    path("<int:pk>/delete/", views.message_delete, name="message_delete"),
    path(
        "<int:pk>/save-as-template/",
        views_templates.message_save_as_template,
        name="message_save_as_template",
    ),
    path("<int:pk>/preview/", views.message_preview, name="message_preview"),
    path("attachments/<int:pk>/", views_attachments.attachment_download, name="attachment_download"),
    path("<int:pk>/send-test/", views.message_send_test, name="message_send_test"),
    path("<int:pk>/send/", views.message_send, name="message_send"),
    path("<int:pk>/unschedule/", views.message_unschedule, name="message_unschedule"),
    path("<int:pk>/pause/", views.message_pause, name="message_pause"),
    path("<int:pk>/resume/", views.message_resume, name="message_resume"),
    path("<int:pk>/cancel/", views.message_cancel, name="message_cancel"),
    path("<int:pk>/", views.message_status, name="message_status"),
    path("<int:pk>/resend-failed/", views.message_resend_failed, name="message_resend_failed"),
    path("<int:pk>/receivers.csv", views_exports.receiver_export, name="receiver_export"),
    path("receivers/<int:pk>/", views.receiver_detail, name="receiver_detail"),
    path("receivers/<int:pk>/resend/", views.receiver_resend, name="receiver_resend"),
    path("recipients/search/", views.recipient_search, name="recipient_search"),
    path("recipients/summary/", views.recipient_summary, name="recipient_summary"),
    path("recipients/groups/<int:pk>/members/", views.group_members, name="group_members"),
    path("templates/", views_templates.template_list, name="template_list"),
    path("templates/new/", views_templates.template_create, name="template_create"),
    path("templates/start/", views_templates.template_start, name="template_start"),
    path("templates/<int:pk>/edit/", views_templates.template_edit, name="template_edit"),
    path("templates/<int:pk>/delete/", views_templates.template_delete, name="template_delete"),
    path("operations/", views_operations.operations, name="operations"),
    path("people/", views_people.person_search, name="person_search"),
    path("people/<int:pk>/", views_people.person_detail, name="person_detail"),
    path("people/<int:pk>/revoke-links/", views_people.person_revoke_links, name="person_revoke_links"),
    path("suppressions/", views_suppressions.suppression_list, name="suppression_list"),
    path("suppressions/<int:pk>/lift/", views_suppressions.suppression_lift, name="suppression_lift"),
    path(
        "suppressions/bounces/<int:pk>/",
        views_suppressions.unmatched_bounce_download,
        name="unmatched_bounce_download",
    ),
    path(
        "suppressions/bounces/<int:pk>/dismiss/",
        views_suppressions.unmatched_bounce_dismiss,
        name="unmatched_bounce_dismiss",
    ),
    # Public on purpose (the login page has a language switcher too): it only sets a cookie.
    path("language/", set_language, name="set_language"),
]
