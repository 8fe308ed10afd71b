"""The training SDK: what a job's script imports to work with Podium (standard library only).

    from podium import sdk

    sdk.handle_preemption()
    start = 0
    if (resume := sdk.resume_from()) is not None:
        start = sdk.validate(resume).step + 1
        load_state(resume)
    for step in range(start, total_steps):
        loss = train_one_step()
        sdk.report(step, loss=loss)
        if step % 100 == 0 or sdk.stop_requested():
            sdk.save(step, save_state)  # save_state(tmpdir) writes the files into tmpdir
            if sdk.stop_requested():
                sys.exit(0)

Checkpoints are complete or never offered (see ``podium.sdk.writing`` and
``podium.sdk.checkpoints``); metrics and checkpoints reach the console as marker lines on
stdout (``podium.sdk.markers``); SIGTERM asks the script to stop (``podium.sdk.preemption``).
Outside Podium the same script runs as it is, checkpointing to ``./checkpoints``.
"""

from podium.sdk.checkpoints import (
    MANIFEST,
    Checkpoint,
    CheckpointError,
    Found,
    ManifestFile,
    latest,
    scan,
    validate,
)
from podium.sdk.environment import checkpoint_dir, resume_from
from podium.sdk.markers import MARKER, marker_format, marker_parse, report
from podium.sdk.preemption import handle_preemption, stop_requested
from podium.sdk.writing import save

__all__ = [
    "MANIFEST",
    "MARKER",
    "Checkpoint",
    "CheckpointError",
    "Found",
    "ManifestFile",
    "checkpoint_dir",
    "handle_preemption",
    "latest",
    "marker_format",
    "marker_parse",
    "report",
    "resume_from",
    "save",
    "scan",
    "stop_requested",
    "validate",
]
