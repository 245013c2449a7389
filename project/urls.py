from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from messaging import views_operations
from messaging.feedback.webhooks import tracking_urlpatterns

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="messaging:message_list"), name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("messages/", include("messaging.urls")),
    # Providers' delivery webhooks (django-anymail), e.g. /anymail/sendgrid/tracking/.
    path("anymail/", include((tracking_urlpatterns(), "anymail"))),
    # Prometheus scrapes this (bearer token or staff login): messaging.views_operations.
    path("metrics", views_operations.metrics, name="metrics"),
]
