from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.utils.functional import lazy
from django.views.generic import RedirectView

from messaging.feedback.webhooks import tracking_urlpatterns
from messaging.operations import views as views_operations
from messaging.tracking.views import messages as tracking_views

urlpatterns = [
    path("", tracking_views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("messages/", include("messaging.urls")),
    # Recipients' own pages (any user; signed links from their emails need no login).
    path("preferences/", include("messaging.preferences.urls")),
    # Providers' delivery webhooks (django-anymail), e.g. /anymail/sendgrid/tracking/.
    path("anymail/", include((tracking_urlpatterns(), "anymail"))),
    # Prometheus scrapes this (bearer token or staff login): messaging.operations.views.
    path("metrics", views_operations.metrics, name="metrics"),
    # Browsers ask for it where a page names no icon (the admin's did not; a JSON answer, a
    # download): the site's icon instead of a 404 in the console. Lazy: static() needs settings.
    path(
        "favicon.ico",
        RedirectView.as_view(url=lazy(static, str)("messaging/favicon.svg"), permanent=True),
        name="favicon",
    ),
]
