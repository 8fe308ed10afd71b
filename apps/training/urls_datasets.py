"""Dataset pages, under ``/training/datasets/`` (namespace ``datasets``)."""

from django.urls import path

from apps.training import views_datasets as views

app_name = "datasets"

urlpatterns = [
    path("", views.dataset_list, name="dataset_list"),
    path("new/", views.dataset_new, name="dataset_new"),
    path("<int:dataset_id>/", views.dataset_detail, name="dataset_detail"),
    path("<int:dataset_id>/state/", views.dataset_state, name="dataset_state"),
    path("<int:dataset_id>/edit/", views.dataset_edit, name="dataset_edit"),
    path("<int:dataset_id>/delete/", views.dataset_delete, name="dataset_delete"),
    path("<int:dataset_id>/versions/new/", views.version_new, name="version_new"),
    path("<int:dataset_id>/versions/<int:version>/scan/", views.version_scan, name="version_scan"),
    path(
        "<int:dataset_id>/versions/<int:version>/delete/",
        views.version_delete,
        name="version_delete",
    ),
]
