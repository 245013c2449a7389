"""The staff UI's URLs (namespace "messaging"): each package's pages, under one namespace."""

from django.urls import path
from django.views.i18n import set_language

from messaging.compose import urls as compose
from messaging.feedback import urls as feedback
from messaging.operations import urls as operations
from messaging.tracking import urls as tracking

app_name = "messaging"

urlpatterns = [
    *compose.urlpatterns,
    *tracking.urlpatterns,
    *feedback.urlpatterns,
    *operations.urlpatterns,
    # Public on purpose (the login page has a language switcher too): it only sets a cookie.
    path("language/", set_language, name="set_language"),
]
