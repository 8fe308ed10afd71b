"""Metric reports and marker lines: their format, which ranks speak, what is refused, and
how the console reads them back."""

import json
import math
from fractions import Fraction

import pytest

from podium import sdk
from podium.sdk import markers
from tests.sdk.conftest import sdk_run


def test_a_report_is_one_marker_line(capsys) -> None:
    sdk.report(12, loss=0.25, tokens=4096)

    out = capsys.readouterr().out
    assert out.startswith(
        '@podium {"kind":"report","step":12,"metrics":{"loss":0.25,"tokens":4096},'
    )
    assert out.endswith("}\n")
    assert out.count("\n") == 1
    marker = sdk.marker_parse(out)
    assert marker is not None
    assert marker["metrics"] == {"loss": 0.25, "tokens": 4096}
    assert isinstance(marker["metrics"]["tokens"], int)
    assert marker["ts"] > 1.7e9


def test_numbers_of_any_kind_are_reported_as_json_numbers(capsys) -> None:
    sdk.report(0, lr=Fraction(1, 4), **{"loss/train": 1.5})

    marker = sdk.marker_parse(capsys.readouterr().out)

    assert marker is not None
    assert marker["metrics"] == {"lr": 0.25, "loss/train": 1.5}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (math.nan, "not a finite number"),
        (math.inf, "not a finite number"),
        (-math.inf, "not a finite number"),
        ("0.5", "not a number"),
        (None, "not a number"),
        (True, "not a number"),
        ([1.0], "not a number"),
    ],
)
def test_a_bad_value_is_refused_naming_the_metric(capsys, value: object, why: str) -> None:
    with pytest.raises(ValueError, match=f"metric 'loss' is .*{why}"):
        sdk.report(1, accuracy=0.5, loss=value)  # type: ignore[arg-type]

    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("step", [-1, 2.0, "3", None])
def test_a_report_needs_a_step(step: object) -> None:
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        sdk.report(step, loss=1.0)  # type: ignore[arg-type]


def test_only_rank_0_reports_unless_all_ranks(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("RANK", "3")
    sdk.report(1, loss=1.0)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="metric 'loss'"):
        sdk.report(1, loss=math.nan)

    sdk.report(1, all_ranks=True, loss=1.0)
    assert sdk.marker_parse(capsys.readouterr().out) is not None
    monkeypatch.setenv("RANK", "0")
    sdk.report(2, loss=1.0)
    assert sdk.marker_parse(capsys.readouterr().out) is not None


def test_a_rank_that_is_not_a_number_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "zero")

    with pytest.raises(ValueError, match="RANK is 'zero'"):
        sdk.report(1, loss=1.0)


def test_a_report_flushes_what_was_printed_before_it_and_itself() -> None:
    code = (
        "import os\n"
        "from podium import sdk\n"
        "print('epoch 1 starts')\n"
        "sdk.report(1, loss=0.5)\n"
        "os._exit(0)\n"  # exits without flushing stdout
    )

    result = sdk_run(code)

    first, marker, end = result.stdout.split("\n")
    assert first == "epoch 1 starts"
    assert sdk.marker_parse(marker) is not None
    assert end == ""


def test_marker_format_is_compact_json_on_one_line() -> None:
    line = sdk.marker_format("checkpoint", step=3, path="/data/ckpt\n/3 é")

    assert line == '@podium {"kind":"checkpoint","step":3,"path":"/data/ckpt\\n/3 \\u00e9"}'
    assert sdk.marker_parse(line) == {"kind": "checkpoint", "step": 3, "path": "/data/ckpt\n/3 é"}
    with pytest.raises(ValueError, match="Out of range float"):
        sdk.marker_format("report", value=math.nan)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "loss 0.5 at step 3",
        "@podium",
        "@podium{}",
        ' @podium {"kind":"report"}',
        "@podium not json",
        '@podium {"kind":"report"',
        "@podium []",
        "@podium {}",
        '@podium {"kind":3}',
        "@podium " + "[" * 100_000,
        '@podium {"kind":"report","step":NaN}',
        '@podium {"kind":"report","metrics":{"loss":-Infinity}}',
    ],
)
def test_marker_parse_ignores_other_lines_and_garbage(line: str) -> None:
    assert sdk.marker_parse(line) is None


def test_marker_parse_takes_the_line_ending_with_it() -> None:
    line = sdk.marker_format("report", step=1, metrics={"loss": 1.0}, ts=1.0)

    for ending in ("", "\n", "\r\n"):
        assert sdk.marker_parse(line + ending) == json.loads(line[len(sdk.MARKER) :])


def test_the_marker_prefix_is_stable() -> None:
    assert sdk.MARKER == markers.MARKER == "@podium "
