"""Page forms. They parse input only; the selectors and services decide."""

from typing import Any

from django import forms

from apps.scheduler.models import Job, Priority


def env_parse(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as a dict; blank lines and lines starting with ``#`` are skipped."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise forms.ValidationError(f"Line {number} is not KEY=VALUE.")
        env[name.strip()] = value
    return env


def datasets_parse(text: str) -> list[str]:
    """``"corpus, images@2"`` as ``["corpus", "images@2"]``; empty entries are skipped."""
    return [ref.strip() for ref in text.split(",") if ref.strip()]


class JobForm(forms.Form):
    workspace = forms.TypedChoiceField(coerce=int)
    name = forms.CharField(max_length=128)
    kind = forms.TypedChoiceField(
        choices=Job.Kind.choices,
        required=False,
        empty_value=Job.Kind.COMMAND,
        initial=Job.Kind.COMMAND,
        help_text="command: run as is on every node. torchrun: the command is the training "
        "script and its arguments, started by torchrun with the job's rendezvous.",
    )
    command = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text="Run with /bin/sh -c on every node of the job.",
    )
    pool = forms.ChoiceField(required=False, help_text="Empty: the default pool.")
    nodes = forms.IntegerField(initial=1)
    gpus_per_node = forms.IntegerField(initial=1, label="GPUs per node")
    procs_per_node = forms.IntegerField(
        required=False,
        label="Processes per node",
        help_text="torchrun's --nproc-per-node; empty: one per GPU (torchrun) or one (command).",
    )
    cpus = forms.FloatField(
        required=False,
        label="CPU cores per node",
        help_text="Placed only where this many cores are free; empty: not counted.",
    )
    memory_mb = forms.IntegerField(
        required=False,
        label="Memory per node (MB)",
        help_text="Placed only where this much memory is free; empty: not counted.",
    )
    priority = forms.ChoiceField(choices=Priority.choices, initial=Priority.NORMAL)
    max_restarts = forms.IntegerField(
        required=False,
        label="Max restarts",
        help_text="After the job's own failures; node loss and preemption never count.",
    )
    resume = forms.BooleanField(
        required=False,
        initial=True,
        label="Resume from the newest complete checkpoint",
        help_text="When the job is requeued after a fault or preemption; off: from the start.",
    )
    checkpoint_keep = forms.IntegerField(
        required=False,
        label="Checkpoints kept",
        help_text="The newest complete ones (pinned ones are kept too); empty: the default.",
    )
    datasets = forms.CharField(
        required=False,
        max_length=2000,
        help_text="Comma-separated: name (its newest version) or name@version; each path "
        "comes in $PODIUM_DATASET_<NAME>.",
    )
    env = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        label="Environment",
        help_text="One KEY=VALUE per line.",
    )
    workdir = forms.CharField(
        required=False, max_length=1024, label="Working directory", help_text="Absolute path."
    )
    max_duration = forms.FloatField(
        required=False, label="Max duration (s)", help_text="Per attempt; empty: no limit."
    )
    hang_timeout = forms.FloatField(
        required=False,
        label="Hang timeout (s)",
        help_text="Killed and requeued after this long without output.",
    )
    grace_seconds = forms.FloatField(
        required=False,
        label="Grace (s)",
        help_text="From SIGTERM to SIGKILL when stopped or preempted; empty: the default.",
    )

    def __init__(
        self,
        *args: Any,
        workspaces: list[tuple[int, str]],
        pools: list[str],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["workspace"].choices = workspaces  # type: ignore[attr-defined]
        self.fields["pool"].choices = [("", "Default pool"), *((p, p) for p in pools)]  # type: ignore[attr-defined]

    def clean_env(self) -> dict[str, str]:
        return env_parse(self.cleaned_data.get("env") or "")

    def clean_datasets(self) -> list[str]:
        return datasets_parse(self.cleaned_data.get("datasets") or "")


class JobFilterForm(forms.Form):
    q = forms.CharField(max_length=128, required=False, label="Name or command")
    workspace = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    pool = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    state = forms.ChoiceField(choices=[("", "Any"), *Job.State.choices], required=False)

    def __init__(
        self,
        *args: Any,
        workspaces: list[tuple[int, str]],
        pools: list[tuple[int, str]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["workspace"].choices = [("", "All"), *workspaces]  # type: ignore[attr-defined]
        self.fields["pool"].choices = [("", "All"), *pools]  # type: ignore[attr-defined]


class PriorityForm(forms.Form):
    priority = forms.ChoiceField(choices=Priority.choices)


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=200, required=False)


class PoolForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="Letters, digits, '.', '_' or '-'.")
    description = forms.CharField(max_length=200, required=False)


class QuotaForm(forms.Form):
    workspace = forms.TypedChoiceField(coerce=int)
    guaranteed = forms.IntegerField(initial=0, label="Guaranteed GPUs")
    maximum = forms.IntegerField(label="Maximum GPUs")
    weight = forms.FloatField(initial=1.0, help_text="Its share of idle GPUs against others.")

    def __init__(self, *args: Any, workspaces: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["workspace"].choices = workspaces  # type: ignore[attr-defined]


class NodePoolForm(forms.Form):
    node = forms.TypedChoiceField(coerce=int, help_text="Nodes with running jobs cannot move.")

    def __init__(self, *args: Any, nodes: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["node"].choices = nodes  # type: ignore[attr-defined]
