"""Saving, finding and checking checkpoints: the three kinds of state, what counts as
complete, errors that leave earlier checkpoints alone, ranks, and the job environment."""

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from podium import sdk
from tests.sdk.conftest import sdk_run


def _save(directory: Path, step: int, **files: bytes) -> sdk.Checkpoint:
    checkpoint = sdk.save(step, files or {"model.pt": b"weights %d" % step}, directory=directory)
    assert checkpoint is not None
    return checkpoint


def _hidden(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if name.startswith(".")]


def _manifest(checkpoint: sdk.Checkpoint) -> dict:
    return json.loads((checkpoint.path / sdk.MANIFEST).read_text())


# Saving


def test_a_mapping_is_saved_with_a_manifest_and_a_marker(directory: Path, capsys) -> None:
    checkpoint = sdk.save(120, {"model.pt": b"w" * 2048, "opt/adam.pt": b"a"}, directory=directory)

    assert checkpoint is not None
    assert checkpoint.path == directory / "120"
    assert (checkpoint.step, checkpoint.size_bytes, checkpoint.file_count) == (120, 2049, 2)
    assert [file.path for file in checkpoint.files] == ["model.pt", "opt/adam.pt"]
    assert (directory / "120" / "opt" / "adam.pt").read_bytes() == b"a"
    assert sdk.validate(checkpoint.path) == checkpoint
    assert _hidden(directory) == []
    marker = sdk.marker_parse(capsys.readouterr().out)
    assert marker == {
        "kind": "checkpoint",
        "step": 120,
        "path": str(directory / "120"),
        "size_bytes": 2049,
        "file_count": 2,
        "ts": checkpoint.written_at,
    }


def test_the_manifest_names_the_job_and_attempt(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODIUM_JOB_ID", "42")
    monkeypatch.setenv("PODIUM_ATTEMPT", "3")

    manifest = _manifest(_save(directory, 7))

    assert {key: manifest[key] for key in ("format", "step", "job", "attempt", "size_bytes")} == {
        "format": 1,
        "step": 7,
        "job": 42,
        "attempt": 3,
        "size_bytes": 9,
    }
    assert manifest["files"] == [
        {"path": "model.pt", "size": 9, "sha256": hashlib.sha256(b"weights 7").hexdigest()}
    ]


def test_a_function_writes_into_the_temp_dir(directory: Path) -> None:
    seen = []

    def write(tmpdir: Path) -> None:
        seen.append(tmpdir)
        (tmpdir / "shards").mkdir()
        (tmpdir / "shards" / "0.bin").write_bytes(b"zero")
        (tmpdir / "config.json").write_text("{}")

    checkpoint = sdk.save(5, write, directory=directory)

    assert checkpoint is not None
    assert seen[0].parent == directory
    assert seen[0].name.startswith(".tmp-5-")
    assert [file.path for file in checkpoint.files] == ["config.json", "shards/0.bin"]
    assert not seen[0].exists()


def test_paths_are_copied_in_under_their_names(directory: Path, tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"tensors")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "vocab.txt").write_text("a b c")

    one = sdk.save(1, tmp_path / "model.safetensors", directory=directory)
    both = sdk.save(
        2, [str(tmp_path / "model.safetensors"), tmp_path / "tokenizer"], directory=directory
    )

    assert one is not None
    assert both is not None
    assert [file.path for file in one.files] == ["model.safetensors"]
    assert [file.path for file in both.files] == ["model.safetensors", "tokenizer/vocab.txt"]


def test_saving_a_step_again_replaces_it(directory: Path) -> None:
    _save(directory, 3, **{"model.pt": b"first", "old.pt": b"gone soon"})

    second = _save(directory, 3, **{"model.pt": b"second"})

    assert sdk.validate(directory / "3") == second
    assert sorted(os.listdir(directory / "3")) == ["model.pt", sdk.MANIFEST]
    assert _hidden(directory) == []


def test_the_default_directory_is_the_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = _save_default(1)
    monkeypatch.setenv("PODIUM_CHECKPOINT_DIR", str(tmp_path / "job"))
    in_job = _save_default(2)

    assert sdk.checkpoint_dir() == tmp_path / "job"
    assert local.path == tmp_path / "checkpoints" / "1"
    assert in_job.path == tmp_path / "job" / "2"
    assert sdk.latest() == in_job


def _save_default(step: int) -> sdk.Checkpoint:
    checkpoint = sdk.save(step, {"model.pt": b"w"})
    assert checkpoint is not None
    return checkpoint


def test_only_rank_0_saves_unless_all_ranks(
    directory: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("RANK", "1")

    skipped = sdk.save(1, {"model.pt": b"w"}, directory=directory)
    assert capsys.readouterr().out == ""
    saved = sdk.save(1, {"model.pt": b"w"}, directory=directory / "rank-1", all_ranks=True)

    assert skipped is None
    assert not directory.joinpath("1").exists()
    assert saved is not None
    assert saved.path == directory / "rank-1" / "1"


@pytest.mark.parametrize("step", [-1, 1.0, True, "3", None])
def test_a_step_is_a_non_negative_integer(directory: Path, step: object) -> None:
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        sdk.save(step, {"model.pt": b"w"}, directory=directory)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../outside", "a/../../b", "./a", "a//b", "", ".", sdk.MANIFEST]
)
def test_file_names_stay_inside_the_checkpoint(directory: Path, name: str) -> None:
    with pytest.raises(ValueError, match="checkpoint file"):
        sdk.save(1, {name: b"x"}, directory=directory)

    assert not directory.exists()


def test_a_state_that_is_not_files_is_refused(directory: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="must be bytes"):
        sdk.save(1, {"model.pt": "text"}, directory=directory)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="state must be"):
        sdk.save(1, 3.5, directory=directory)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not exist"):
        sdk.save(1, tmp_path / "missing.pt", directory=directory)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("1")
    (tmp_path / "b" / "x").write_text("2")
    with pytest.raises(ValueError, match="would both be x"):
        sdk.save(1, [tmp_path / "a" / "x", tmp_path / "b" / "x"], directory=directory)


def test_a_function_may_write_only_regular_files(directory: Path) -> None:
    def with_link(tmpdir: Path) -> None:
        (tmpdir / "model.pt").write_bytes(b"w")
        (tmpdir / "latest.pt").symlink_to(tmpdir / "model.pt")

    def with_manifest(tmpdir: Path) -> None:
        (tmpdir / sdk.MANIFEST).write_text("{}")

    with pytest.raises(ValueError, match=r"latest\.pt is not a regular file"):
        sdk.save(1, with_link, directory=directory)
    with pytest.raises(ValueError, match=r"named podium-manifest\.json"):
        sdk.save(1, with_manifest, directory=directory)

    assert os.listdir(directory) == []


def test_a_failing_function_leaves_nothing_behind(directory: Path, capsys) -> None:
    first = _save(directory, 1)
    capsys.readouterr()

    def broken(tmpdir: Path) -> None:
        (tmpdir / "model.pt").write_bytes(b"half")
        raise RuntimeError("CUDA error")

    with pytest.raises(RuntimeError, match="CUDA error"):
        sdk.save(2, broken, directory=directory)

    assert sdk.latest(directory, verify=True) == first
    assert _hidden(directory) == []
    assert capsys.readouterr().out == ""


# Errors of the disk


def test_a_full_disk_is_a_checkpoint_error_and_harms_nothing(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _save(directory, 1)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(sdk.CheckpointError) as error:
        sdk.save(2, {"model.pt": b"w" * 4096}, directory=directory)
    monkeypatch.undo()

    assert str(error.value) == (
        f"checkpoint at step 2 could not be written to {directory}: No space left on device"
    )
    assert sdk.latest(directory, verify=True) == first
    assert [found.step for found in sdk.scan(directory)] == [1]
    assert _hidden(directory) == []
    assert _save(directory, 2).step == 2


def test_a_real_write_error_is_a_checkpoint_error(directory: Path) -> None:
    _save(directory, 1)
    code = (
        "import resource, signal, sys\n"
        "from podium import sdk\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
        "try:\n"
        "    sdk.save(2, {'model.pt': b'w' * 200000}, directory=sys.argv[1])\n"
        "except sdk.CheckpointError as error:\n"
        "    print(error)\n"
    )

    result = sdk_run(code, str(directory))

    assert result.stdout.strip() == (
        f"checkpoint at step 2 could not be written to {directory}: File too large"
    )
    assert [(found.step, found.complete) for found in sdk.scan(directory, verify=True)] == [
        (1, True)
    ]
    assert _hidden(directory) == []


def test_a_file_where_the_directory_should_be(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a directory")

    with pytest.raises(sdk.CheckpointError, match=r"to .*/taken: Not a directory"):
        sdk.save(1, {"model.pt": b"w"}, directory=tmp_path / "taken")
    with pytest.raises(sdk.CheckpointError, match=r"to .*/taken/ckpt: Not a directory"):
        sdk.save(1, {"model.pt": b"w"}, directory=tmp_path / "taken" / "ckpt")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_is_a_checkpoint_error(directory: Path) -> None:
    first = _save(directory, 1)
    directory.chmod(0o500)
    try:
        with pytest.raises(sdk.CheckpointError, match="Permission denied"):
            sdk.save(2, {"model.pt": b"w"}, directory=directory)
    finally:
        directory.chmod(0o700)

    assert sdk.latest(directory) == first


def test_permission_denied_is_named(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _save(directory, 1)

    def denied(path: object, mode: int = 0o777) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(os, "mkdir", denied)
    with pytest.raises(sdk.CheckpointError) as error:
        sdk.save(2, {"model.pt": b"w"}, directory=directory)
    monkeypatch.undo()

    assert str(error.value).endswith(f"to {directory}: Permission denied")
    assert sdk.latest(directory) == first


def test_a_failed_replacement_puts_the_old_step_back(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _save(directory, 2)
    rename = os.rename

    def failing_into_place(source: str | Path, target: str | Path) -> None:
        if Path(target).name == "2" and not Path(source).name.endswith("-replaced"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        rename(source, target)

    monkeypatch.setattr(os, "rename", failing_into_place)
    with pytest.raises(sdk.CheckpointError, match="Input/output error"):
        sdk.save(2, {"model.pt": b"new"}, directory=directory)
    monkeypatch.undo()

    assert sdk.validate(directory / "2") == old
    assert _hidden(directory) == []


# Reading


def _break_no_manifest(path: Path) -> None:
    (path / sdk.MANIFEST).unlink()


def _break_truncated(path: Path) -> None:
    (path / "model.pt").write_bytes(b"w" * 10)


def _break_missing(path: Path) -> None:
    (path / "model.pt").unlink()


def _break_not_json(path: Path) -> None:
    (path / sdk.MANIFEST).write_text('{"format": 1, "step": ')


def _edit_manifest(path: Path, **changes: object) -> None:
    manifest = json.loads((path / sdk.MANIFEST).read_text())
    manifest.update(changes)
    (path / sdk.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("breakage", "problem"),
    [
        (_break_no_manifest, "no manifest (the write did not finish)"),
        (_break_truncated, "model.pt is 10 bytes, the manifest says 2048"),
        (_break_missing, "model.pt is missing"),
        (_break_not_json, "the manifest is not valid JSON"),
        (lambda path: _edit_manifest(path, format=2), "the manifest has format 2, not 1"),
        (lambda path: _edit_manifest(path, step=3), "the manifest is for step 3"),
        (lambda path: _edit_manifest(path, files=None), "the manifest has no list of files"),
        (lambda path: _edit_manifest(path, written_at="noon"), "has no valid written_at"),
        (lambda path: _edit_manifest(path, size_bytes=1), "size_bytes is not the sum"),
        (
            lambda path: _edit_manifest(
                path, files=[{"path": "../1/model.pt", "size": 2048, "sha256": "0" * 64}]
            ),
            "the manifest lists '../1/model.pt', which is not a relative path inside",
        ),
    ],
)
def test_latest_never_offers_an_incomplete_checkpoint(
    directory: Path, breakage, problem: str
) -> None:
    first = _save(directory, 1, **{"model.pt": b"w" * 2048})
    second = _save(directory, 2, **{"model.pt": b"w" * 2048})

    breakage(second.path)

    assert sdk.latest(directory) == first
    found = sdk.scan(directory)
    assert [(entry.step, entry.complete) for entry in found] == [(2, False), (1, True)]
    assert problem in found[0].problem
    with pytest.raises(sdk.CheckpointError) as error:
        sdk.validate(second.path)
    assert str(error.value) == f"checkpoint {second.path}: {found[0].problem}"


def test_a_corrupted_file_is_caught_by_verifying(directory: Path) -> None:
    first = _save(directory, 1)
    second = _save(directory, 2, **{"model.pt": b"w" * 2048})
    (second.path / "model.pt").write_bytes(b"x" * 2048)

    assert sdk.latest(directory) == second
    assert sdk.validate(second.path, verify=False) == second
    assert sdk.latest(directory, verify=True) == first
    with pytest.raises(sdk.CheckpointError, match=r"model\.pt does not match its sha256"):
        sdk.validate(second.path)
    assert [entry.complete for entry in sdk.scan(directory, verify=True)] == [False, True]


def test_an_incomplete_step_is_listed_with_what_it_holds(directory: Path) -> None:
    _save(directory, 1)
    (directory / "2").mkdir()
    (directory / "2" / "model.pt").write_bytes(b"w" * 100)

    found = sdk.scan(directory)[0]

    assert (found.step, found.complete, found.size_bytes, found.file_count) == (2, False, 100, 1)
    assert found.problem == "no manifest (the write did not finish)"
    assert found.written_at > 0


def test_only_step_directories_are_listed(directory: Path) -> None:
    _save(directory, 10)
    _save(directory, 9)
    for name in (".tmp-11-1-abcd", "007", "latest", "1e3", "٣"):
        (directory / name).mkdir()
    (directory / "12").write_text("a file, not a directory")

    assert [found.step for found in sdk.scan(directory)] == [10, 9]


def test_nothing_is_found_where_nothing_was_saved(tmp_path: Path) -> None:
    assert sdk.scan(tmp_path / "none") == []
    assert sdk.latest(tmp_path / "none") is None
    with pytest.raises(sdk.CheckpointError, match="there is no such directory"):
        sdk.validate(tmp_path / "none")


def test_resume_from_is_the_given_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sdk.resume_from() is None
    monkeypatch.setenv("PODIUM_RESUME_FROM", "")
    assert sdk.resume_from() is None
    monkeypatch.setenv("PODIUM_RESUME_FROM", "/data/ckpt/120")
    assert sdk.resume_from() == Path("/data/ckpt/120")


def test_the_sdk_needs_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from podium import sdk\n"
        "added = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(added - set(sys.stdlib_module_names)))\n"
    )

    result = sdk_run(code)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['podium']"
