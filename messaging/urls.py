from django.urls import path

from messaging import views

app_name = "messaging"

urlpatterns = [
    path("", views.message_list, name="message_list"),
]
