from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

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
]
