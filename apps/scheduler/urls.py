from django.urls import path

from apps.scheduler import views

app_name = "scheduler"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/new/", views.job_new, name="job_new"),
    path("jobs/<int:job_id>/", views.job_detail, name="job_detail"),
    path("jobs/<int:job_id>/state/", views.job_state, name="job_state"),
    path("jobs/<int:job_id>/action/", views.job_action, name="job_action"),
    path("pools/", views.pool_list, name="pool_list"),
    path("pools/<int:pool_id>/", views.pool_detail, name="pool_detail"),
    path("pools/<int:pool_id>/usage/", views.pool_usage, name="pool_usage"),
    path("pools/<int:pool_id>/queue/", views.queue_pool, name="queue_pool"),
    path("quotas/<int:quota_id>/delete/", views.quota_delete, name="quota_delete"),
    path("nodes/<int:node_id>/", views.node_scheduling, name="node_scheduling"),
    path("nodes/<int:node_id>/action/", views.node_action, name="node_action"),
    path("nodes/<int:node_id>/gpus/<int:index>/action/", views.gpu_action, name="gpu_action"),
]
