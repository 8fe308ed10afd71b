from django.urls import path

from apps.scheduler.consumers import JobConsumer, PoolConsumer

websocket_urlpatterns = [
    path("ws/scheduler/jobs/<int:job_id>/", JobConsumer.as_asgi()),
    path("ws/scheduler/pools/<int:pool_id>/", PoolConsumer.as_asgi()),
]
