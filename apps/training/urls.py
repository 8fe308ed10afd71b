"""Training pages under ``/training/`` (namespace ``training``): the overview, and what the
training panels of a job's page fetch and post."""

from django.urls import path

from apps.training import views

app_name = "training"

urlpatterns = [
    path("", views.job_list, name="job_list"),
    path("examples/run/", views.example_run, name="example_run"),
    path("jobs/<int:job_id>/logs/", views.job_logs, name="job_logs"),
    path("jobs/<int:job_id>/metrics/", views.job_metrics, name="job_metrics"),
    path("jobs/<int:job_id>/gpus/", views.job_gpus, name="job_gpus"),
    path("jobs/<int:job_id>/panels/", views.job_panels, name="job_panels"),
    path(
        "jobs/<int:job_id>/checkpoints/refresh/",
        views.checkpoints_refresh,
        name="checkpoints_refresh",
    ),
    path(
        "jobs/<int:job_id>/checkpoints/<int:step>/pin/",
        views.checkpoint_pin,
        name="checkpoint_pin",
    ),
]
