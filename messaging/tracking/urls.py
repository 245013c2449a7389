"""Watching a send: staff pages (included by messaging.urls)."""

from django.urls import path

from messaging.tracking.views import exports, messages, people

urlpatterns = [
    path("", messages.message_list, name="message_list"),
    path("<int:pk>/pause/", messages.message_pause, name="message_pause"),
    path("<int:pk>/resume/", messages.message_resume, name="message_resume"),
    path("<int:pk>/cancel/", messages.message_cancel, name="message_cancel"),
    path("<int:pk>/", messages.message_status, name="message_status"),
    path("<int:pk>/resend-failed/", messages.message_resend_failed, name="message_resend_failed"),
    path("<int:pk>/receivers.csv", exports.receiver_export, name="receiver_export"),
    path("receivers/<int:pk>/", messages.receiver_detail, name="receiver_detail"),
    path("receivers/<int:pk>/resend/", messages.receiver_resend, name="receiver_resend"),
    path("people/", people.person_search, name="person_search"),
    path("people/<int:pk>/", people.person_detail, name="person_detail"),
    path("people/<int:pk>/revoke-links/", people.person_revoke_links, name="person_revoke_links"),
]
