"""Recipients' pages, at /preferences/ (views_preferences): public, the signed token in the
path says whose; only the signed-in page needs a login."""

from django.urls import path

from messaging.preferences import views as views_preferences

app_name = "preferences"

urlpatterns = [
    path("", views_preferences.manage, name="manage"),
    path("read/<str:token>/", views_preferences.read, name="read"),
    path("<str:token>/", views_preferences.manage_signed, name="manage_signed"),
    path("<str:token>/one-click/", views_preferences.one_click, name="one_click"),
    # A link a mail program cut, broke or added to: the "not valid" page, not a bare 404.
    path("<path:rest>", views_preferences.invalid_link, name="invalid_link"),
]
