"""The suppression list and the reports to look at: staff pages (included by messaging.urls)."""

from django.urls import path

from messaging.feedback import views

urlpatterns = [
    path("suppressions/", views.suppression_list, name="suppression_list"),
    path("suppressions/<int:pk>/lift/", views.suppression_lift, name="suppression_lift"),
    path(
        "suppressions/bounces/<int:pk>/",
        views.unmatched_bounce_download,
        name="unmatched_bounce_download",
    ),
    path(
        "suppressions/bounces/<int:pk>/dismiss/",
        views.unmatched_bounce_dismiss,
        name="unmatched_bounce_dismiss",
    ),
]
