"""Training writes: datasets (``datasets``) and checkpoints of jobs (``runs``)."""

from apps.training.services.runs import checkpoint_pin

__all__ = ["checkpoint_pin"]
