from django.urls import path

from apps.scheduler.views import jobs, nodes, pools

app_name = "scheduler"

urlpatterns = [
    path("", pools.queue, name="queue"),
    path("jobs/", jobs.job_list, name="job_list"),
    path("jobs/new/", jobs.job_new, name="job_new"),
    path("jobs/<int:job_id>/", jobs.job_detail, name="job_detail"),
    path("jobs/<int:job_id>/state/", jobs.job_state, name="job_state"),
    path("jobs/<int:job_id>/action/", jobs.job_action, name="job_action"),
    path("pools/", pools.pool_list, name="pool_list"),
    path("pools/<int:pool_id>/", pools.pool_detail, name="pool_detail"),
    path("pools/<int:pool_id>/usage/", pools.pool_usage, name="pool_usage"),
    path("pools/<int:pool_id>/queue/", pools.queue_pool, name="queue_pool"),
    path("quotas/<int:quota_id>/delete/", pools.quota_delete, name="quota_delete"),
    path("nodes/<int:node_id>/", nodes.node_scheduling, name="node_scheduling"),
    path("nodes/<int:node_id>/action/", nodes.node_action, name="node_action"),
    path("nodes/<int:node_id>/gpus/<int:index>/action/", nodes.gpu_action, name="gpu_action"),
]
