from django.urls import path

from apps.system import views

app_name = "system"

urlpatterns = [
    path("", views.status_page, name="status"),
]
