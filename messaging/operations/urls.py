"""Operations: staff pages (included by messaging.urls)."""

from django.urls import path

from messaging.operations import views

urlpatterns = [
    path("operations/", views.operations, name="operations"),
]
