"""The environment of a job process: what the agent adds, hides and puts first."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from podium.agent.jobenv import job_environment, sdk_path_prepare


def environment(tmp_path: Path, **base: str) -> dict[str, str]:
    return job_environment(
        base={"PATH": "/usr/bin:/bin", **base},
        secrets=["s3cret"],
        extra={"PODIUM_JOB_ID": "7"},
        gpus=[2, 3],
        alloc=11,
        sdk_path=sdk_path_prepare(tmp_path),
    )


def test_the_agents_python_comes_first_and_its_secrets_stay_behind(tmp_path: Path) -> None:
    env = environment(tmp_path, PODIUM_AGENT_TOKEN="pdn_x", OTHER="s3cret", HOME="/root")

    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert "PODIUM_AGENT_TOKEN" not in env
    assert "OTHER" not in env
    assert env["HOME"] == "/root"
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert env["PODIUM_ALLOCATION_ID"] == "11"
    assert env["PODIUM_JOB_ID"] == "7"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_any_python_of_the_node_imports_the_sdk_and_nothing_else_of_the_agents(
    tmp_path: Path,
) -> None:
    env = environment(tmp_path, PYTHONPATH="/opt/lib")
    entries = env["PYTHONPATH"].split(":")
    assert entries == [str(tmp_path / "pythonpath"), "/opt/lib"]
    assert sorted(p.name for p in (tmp_path / "pythonpath").iterdir()) == ["podium"]

    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]);"
            "from podium import sdk; print(sdk.MANIFEST)",
            entries[0],
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert done.stdout.strip() == "podium-manifest.json"


def test_the_link_is_made_once_and_mended_when_it_points_elsewhere(tmp_path: Path) -> None:
    link = sdk_path_prepare(tmp_path) / "podium"
    link.unlink()
    link.symlink_to(tmp_path)

    sdk_path_prepare(tmp_path)

    assert (link / "sdk").is_dir()


def test_agents_sharing_a_state_directory_make_the_link_side_by_side(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(lambda _: sdk_path_prepare(tmp_path), range(32)))

    assert set(made) == {tmp_path / "pythonpath"}
    assert [p.name for p in (tmp_path / "pythonpath").iterdir()] == ["podium"]
