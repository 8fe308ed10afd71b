from django.urls import path

from apps.monitoring import views

app_name = "monitoring"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("nodes/", views.node_list, name="node_list"),
    path("nodes/<int:node_id>/", views.node_detail, name="node_detail"),
    path("nodes/<int:node_id>/events/", views.node_events, name="node_events"),
    path("nodes/<int:node_id>/revoke/", views.node_revoke, name="node_revoke"),
    path("nodes/<int:node_id>/return/", views.node_return, name="node_return"),
    path("nodes/<int:node_id>/gpus/<int:index>/", views.gpu_history, name="gpu_history"),
    path("nodes/<int:node_id>/gpus/<int:index>/return/", views.gpu_return, name="gpu_return"),
    path("nodes/<int:node_id>/gpus/<int:index>/fault/", views.fault_inject, name="fault_inject"),
    path("events/", views.event_list, name="event_list"),
    path(
        "events/<int:event_id>/acknowledge/",
        views.event_acknowledge,
        name="event_acknowledge",
    ),
    path("alerts/", views.alert_list, name="alert_list"),
    path("alerts/<int:channel_id>/", views.alert_channel_action, name="alert_channel_action"),
    path("join-tokens/", views.join_tokens, name="join_tokens"),
    path("join-tokens/<int:token_id>/revoke/", views.join_token_revoke, name="join_token_revoke"),
]
