"""Writes users and operators make: submit and act on jobs, pools, quotas, nodes, GPUs.

Every function is atomic, checks the actor's rights, writes an audit entry and asks for a
scheduling pass once it commits. Commands to agents go out after commit.

Rights: members and workspace admins submit and act on their workspace's jobs (viewers
never); only workspace admins and platform admins use the urgent priority; platform
admins move jobs in the queue and manage pools and quotas; whoever manages a node
(see monitoring) cordons, drains and uncordons it and takes its GPUs out or back.
"""

from apps.scheduler.services.jobs import (
    JobSpec,
    job_cancel,
    job_hold,
    job_move,
    job_priority_set,
    job_release,
    job_requeue,
    job_submit,
)
from apps.scheduler.services.nodes import (
    gpu_put_back,
    gpu_take_out,
    node_cordon,
    node_pool_set,
    node_uncordon,
)
from apps.scheduler.services.pools import (
    pool_create,
    pool_delete,
    pool_update,
    quota_delete,
    quota_set,
)
from apps.scheduler.services.runtime import (
    OutputSource,
    job_changed_show,
    job_checkpoint_mark,
    job_metrics_show,
    job_output_mark,
    job_output_show,
    output_source,
)

__all__ = [
    "JobSpec",
    "OutputSource",
    "gpu_put_back",
    "gpu_take_out",
    "job_cancel",
    "job_changed_show",
    "job_checkpoint_mark",
    "job_hold",
    "job_metrics_show",
    "job_move",
    "job_output_mark",
    "job_output_show",
    "job_priority_set",
    "job_release",
    "job_requeue",
    "job_submit",
    "node_cordon",
    "node_pool_set",
    "node_uncordon",
    "output_source",
    "pool_create",
    "pool_delete",
    "pool_update",
    "quota_delete",
    "quota_set",
]
