"""Training (L3): datasets, checkpoints, stored logs and metrics, goodput of jobs."""
