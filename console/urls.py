"""URL map: pages per app, the API under /api/."""

from django.urls import include, path

from apps.monitoring.metrics import metrics_view
from apps.system.views import home
from console.api import api

urlpatterns = [
    path("", home, name="home"),
    path("", include("apps.accounts.urls")),
    path("audit/", include("apps.audit.urls")),
    path("status/", include("apps.system.urls")),
    path("monitoring/", include("apps.monitoring.urls")),
    path("scheduler/", include("apps.scheduler.urls")),
    path("training/datasets/", include("apps.training.urls_datasets")),
    path("training/", include("apps.training.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("api/", api.urls),
]
