"""Job files: YAML to the body of ``POST /api/jobs``, and errors that name the line."""

import re
import textwrap
from pathlib import Path

import pytest

from podium.client.spec import SpecError, job_file_parse, job_file_read

COMMAND_JOB = """\
name: sweep
command: python sweep.py --lr 3e-4
workspace: Vision
"""

TORCHRUN_JOB = """\
# A two-node run that reads two datasets.
workspace: 3
name: llama-7b
kind: torchrun
command: |
  train.py --config 7b.yaml
nodes: 2
gpus_per_node: 8
procs_per_node:
pool: a100
priority: high
max_restarts: 3
env:
  LR: 3e-4
  DEBUG: true
  STEPS: 1000
workdir: /scratch/llama
cpus: 32
memory_mb: 256000
grace_seconds: 30
max_duration: 86400
hang_timeout: 600.5
resume: false
checkpoint_keep: 5
datasets:
  - tokens
  - eval@2
"""


def parse(text: str) -> object:
    return job_file_parse(textwrap.dedent(text), source="job.yaml")


def refusal(text: str) -> str:
    with pytest.raises(SpecError) as caught:
        parse(text)
    return str(caught.value)


def test_a_command_job_needs_only_a_name_and_a_command() -> None:
    job_file = job_file_parse(COMMAND_JOB, source="job.yaml")

    assert job_file.workspace == "Vision"
    assert job_file.payload(7) == {
        "workspace_id": 7,
        "name": "sweep",
        "command": "python sweep.py --lr 3e-4",
    }


def test_every_field_of_a_torchrun_job_reaches_the_payload() -> None:
    job_file = job_file_parse(TORCHRUN_JOB, source="job.yaml")

    assert job_file.workspace == 3
    assert job_file.payload(3) == {
        "workspace_id": 3,
        "name": "llama-7b",
        "kind": "torchrun",
        "command": "train.py --config 7b.yaml\n",
        "nodes": 2,
        "gpus_per_node": 8,
        "pool": "a100",
        "priority": "high",
        "max_restarts": 3,
        "env": {"LR": "3e-4", "DEBUG": "true", "STEPS": "1000"},
        "workdir": "/scratch/llama",
        "cpus": 32,
        "memory_mb": 256000,
        "grace_seconds": 30,
        "max_duration": 86400,
        "hang_timeout": 600.5,
        "resume": False,
        "checkpoint_keep": 5,
        "datasets": ["tokens", "eval@2"],
    }


def test_scalars_in_text_fields_keep_the_text_written() -> None:
    job_file = parse("""\
        name: 2024.10
        command: "true"
        datasets: [1.0]
    """)

    assert job_file.payload(1)["name"] == "2024.10"
    assert job_file.payload(1)["datasets"] == ["1.0"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\ncommand: b\n  bad: [\n", "job.yaml:3:6: mapping values are not allowed here"),
        ('name: "open\ncommand: b\n', "job.yaml:3:1: found unexpected end of stream"),
        ("name: a\n\tcommand: b\n", "job.yaml:2:1: found character '\\t'"),
        ("name: a\n---\nname: b\n", "job.yaml:2:1: found another document"),
        ("name: a\ncommand: !shell rm\n", "job.yaml:2:10: could not determine a constructor"),
    ],
)
def test_yaml_syntax_errors_name_the_line_and_column(text: str, expected: str) -> None:
    assert refusal(text).startswith(expected)


def test_an_unknown_field_is_refused_on_its_line_with_a_suggestion() -> None:
    assert refusal("name: a\ncommand: b\ngpus: 4\n") == (
        "job.yaml:3: unknown field 'gpus'; did you mean gpus_per_node?"
    )
    assert refusal("name: a\ncommand: b\nnode: 4\n") == (
        "job.yaml:3: unknown field 'node'; did you mean nodes?"
    )
    assert refusal("name: a\nworkspace_id: 2\n").endswith("did you mean workspace?")
    assert "the fields are: workspace, name, command" in refusal("name: a\nzzz: 1\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpus_per_node: two", "job.yaml:3: gpus_per_node: must be a whole number, not 'two'"),
        ("nodes: 1.5", "job.yaml:3: nodes: must be a whole number, not '1.5'"),
        ("nodes: true", "job.yaml:3: nodes: must be a whole number, not 'true'"),
        ("cpus: [1]", "job.yaml:3: cpus: must be a number, not a list"),
        ("resume: maybe", "job.yaml:3: resume: must be true or false, not 'maybe'"),
        ("pool: {a: 1}", "job.yaml:3: pool: must be text, not a mapping"),
        ("env: [A]", "job.yaml:3: env: must be a mapping of NAME: value, not a list"),
        ("env:\n  A: 1\n  B:\n", "job.yaml:5: env: the value of B must be text"),
        ("datasets: tokens", 'job.yaml:3: datasets: must be a list such as ["name"'),
        ("datasets:\n  - a\n  - [b]\n", "job.yaml:5: datasets: must be text, not a list"),
        ("nodes:", "job.yaml:3: nodes: must not be empty"),
        ("name: b", "job.yaml:3: name: given twice (first on line 1)"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_on_its_line(text: str, expected: str) -> None:
    assert refusal(f"name: a\ncommand: b\n{text}\n").startswith(expected)


def test_optional_fields_left_empty_take_the_consoles_default() -> None:
    job_file = parse("name: a\ncommand: b\nmax_restarts:\ncpus: ~\n")

    assert job_file.payload(1) == {"workspace_id": 1, "name": "a", "command": "b"}


def test_the_file_must_be_a_mapping_with_a_name_and_a_command() -> None:
    assert (
        refusal("") == "job.yaml: the file is empty; write the job's fields as `name: value` lines"
    )
    assert (
        refusal("- a\n")
        == "job.yaml:1: a job file is a mapping of `field: value` lines, not a list"
    )
    assert refusal("name: a\n") == "job.yaml: command is required"
    assert refusal("command: a\n") == "job.yaml: name is required"


def test_the_consoles_refusals_are_placed_on_the_fields_line() -> None:
    job_file = job_file_parse(TORCHRUN_JOB, source="job.yaml")

    assert str(job_file.error("gpus_per_node must be between 1 and 64.", "gpus_per_node")) == (
        "job.yaml:8: gpus_per_node must be between 1 and 64."
    )
    assert str(job_file.error("There is no pool named 'a100'.", "pool")) == (
        "job.yaml:10: pool: There is no pool named 'a100'."
    )
    assert str(job_file.error("Unknown dataset eval@2.", "datasets.1")) == (
        "job.yaml:27: datasets.1: Unknown dataset eval@2."
    )
    assert str(job_file.error("eval@2: eval has no such version.", "datasets")) == (
        "job.yaml:27: datasets: eval@2: eval has no such version."
    )
    assert str(job_file.error("A job reads at most 8 datasets.", "datasets")) == (
        "job.yaml:25: datasets: A job reads at most 8 datasets."
    )
    assert str(job_file.error("Not yours.", "workspace_id")) == "job.yaml:2: workspace: Not yours."
    assert str(job_file.error("Bad LR.", "env.LR")) == "job.yaml:14: env.LR: Bad LR."
    assert str(job_file.error("Too slow.", None)) == "job.yaml: Too slow."


def test_a_refused_field_the_file_leaves_out_has_no_line() -> None:
    job_file = job_file_parse(COMMAND_JOB, source="job.yaml")

    assert str(job_file.error("nodes must be between 1 and 64.", "nodes")) == (
        "job.yaml: nodes must be between 1 and 64."
    )


def test_a_file_is_read_by_path_and_named_as_given(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: a\ncommand: b\nnodes: x\n")

    with pytest.raises(SpecError) as caught:
        job_file_read(path)

    assert str(caught.value) == f"{path}:3: nodes: must be a whole number, not 'x'"


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        job_file_read(tmp_path / "nope.yaml")

    assert str(caught.value).startswith(f"{tmp_path / 'nope.yaml'}: cannot read the file:")


def test_the_job_files_of_the_docs_are_valid() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", docs, flags=re.DOTALL)

    payloads = [job_file_parse(block, source="docs").payload(1) for block in blocks]

    assert [p["name"] for p in payloads] == ["lr-sweep", "llama-7b"]
    assert payloads[1]["datasets"] == ["tokens", "eval@2"]
