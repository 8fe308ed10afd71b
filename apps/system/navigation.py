"""The console's navigation: one entry per installed layer, never a placeholder.

Each layer's app lists its own pages here when it lands; an entry whose app is not
installed is left out.
"""

from dataclasses import dataclass

from django.apps import apps


@dataclass(frozen=True)
class NavEntry:
    label: str
    url_name: str
    app_label: str
    section: str
    also: tuple[str, ...] = ()  # other URL namespaces of the same layer

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The URL namespaces whose pages highlight this entry."""
        return (self.app_label, *self.also)


LAYERS = [
    NavEntry("Monitoring", "monitoring:overview", "monitoring", "layers"),
    NavEntry("Deploy", "deploy:node_list", "deploy", "layers"),
    NavEntry("Scheduler", "scheduler:queue", "scheduler", "layers"),
    NavEntry("Training", "training:job_list", "training", "layers", also=("datasets",)),
    NavEntry("Model hub", "modelhub:model_list", "modelhub", "layers"),
]


def layer_entries() -> list[NavEntry]:
    """The layer entries whose apps are installed."""
    return [e for e in LAYERS if apps.is_installed(f"apps.{e.app_label}")]
