"""Training figures: a chart per metric, a trace per attempt, markers at the right steps,
and the GPU chart of a job's attempt."""

from datetime import UTC, datetime, timedelta

from apps.training import charts
from apps.training.charts import GpuSeries, Marker, Report

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reports(attempt: int, steps: range, start: float, **extra: float) -> list[Report]:
    """One report a second from ``start``, with a falling loss."""
    return [
        Report(attempt, step, at(start + n), {"loss": 1.0 / (step + 1), **extra})
        for n, step in enumerate(steps)
    ]


def test_loss_comes_first_then_names_in_the_order_they_appeared() -> None:
    points = [
        Report(1, 1, at(0), {"tokens_per_s": 10.0, "lr": 0.1}),
        Report(1, 2, at(1), {"loss": 2.0, "lr": 0.1}),
        Report(1, 3, at(2), {"eval_loss": 3.0}),
    ]

    assert charts.metric_names(points) == ["loss", "tokens_per_s", "lr", "eval_loss"]


def test_each_attempt_is_a_trace_that_starts_again_at_its_checkpoint() -> None:
    points = reports(1, range(1, 31), 0, lr=0.01) + reports(2, range(21, 41), 50)

    figures = charts.metric_figures(points, [])

    assert list(figures) == ["loss", "lr"]
    loss = figures["loss"]["data"]
    assert [t["name"] for t in loss] == ["attempt 1", "attempt 2"]
    assert [t["meta"] for t in loss] == [{"attempt": 1}, {"attempt": 2}]
    assert loss[0]["x"] == list(range(1, 31))
    assert loss[1]["x"][0] == 21
    assert loss[1]["y"][0] == 1.0 / 22
    assert loss[0]["line"]["color"] != loss[1]["line"]["color"]
    assert [t["meta"]["attempt"] for t in figures["lr"]["data"]] == [1]
    assert figures["loss"]["layout"]["title"]["text"] == "loss"
    assert figures["loss"]["layout"]["xaxis"]["title"]["text"] == "step"


def test_a_trace_keeps_only_its_newest_points() -> None:
    figures = charts.metric_figures(reports(1, range(100), 0), [], max_points=10)

    assert figures["loss"]["data"][0]["x"] == list(range(90, 100))


def test_a_marker_sits_at_its_attempts_point_nearest_in_time() -> None:
    points = reports(1, range(1, 31), 0) + reports(2, range(21, 31), 100)
    markers = [
        Marker(at(29.5), 1, "fault", "node gpu-1 lost"),
        Marker(at(40), 1, "requeued", "node lost"),
        Marker(at(95), 2, "restart", "no complete checkpoint"),
        Marker(at(96), 2, "resume", "resuming from step 20", step=20),
    ]

    placed = charts.marker_steps(points, markers)

    assert [(step, m.kind) for step, m in placed] == [
        (30, "fault"),
        (30, "requeued"),
        (21, "restart"),
        (20, "resume"),
    ]


def test_a_marker_of_an_attempt_without_reports_uses_any_and_none_without_any() -> None:
    points = reports(1, range(1, 11), 0)
    lost = [Marker(at(3.2), 4, "fault", "lost before reporting")]

    assert [step for step, _ in charts.marker_steps(points, lost)] == [4]
    assert charts.marker_steps([], lost) == []


def test_markers_at_one_step_share_a_line_coloured_by_the_worst() -> None:
    points = reports(1, range(1, 31), 0)
    markers = [
        Marker(at(30), 1, "requeued", "node lost"),
        Marker(at(30), 1, "fault", "XID 79"),
        Marker(at(31), 2, "resume", "", step=20),
    ]

    layout = charts.marker_layout(points, markers)

    assert [s["x0"] for s in layout["shapes"]] == [20, 30]
    assert [s["yref"] for s in layout["shapes"]] == ["paper", "paper"]
    resume, fault = layout["annotations"]
    assert resume["text"] == "resume"
    assert resume["font"]["color"] == charts.MARKER_COLOURS["resume"]
    assert fault["text"] == "requeued · fault"
    assert fault["font"]["color"] == charts.MARKER_COLOURS["fault"]
    assert layout["shapes"][1]["line"]["color"] == charts.MARKER_COLOURS["fault"]
    assert "attempt 1 fault: XID 79" in fault["hovertext"]
    assert "step 30" in fault["hovertext"]
    assert [a["yshift"] for a in layout["annotations"]] == [0, charts.MARKER_LABEL_STAGGER]


def test_every_metric_figure_and_the_template_carry_the_markers() -> None:
    points = reports(1, range(1, 11), 0, lr=0.1)
    markers = [Marker(at(5), 1, "preempted", "by job 9")]

    figures = charts.metric_figures(points, markers)
    template = charts.metric_template(points, markers)

    for figure in [*figures.values(), template]:
        assert [s["x0"] for s in figure["layout"]["shapes"]] == [6]
    assert template["data"] == []


def test_a_job_without_reports_has_no_figure() -> None:
    assert charts.metric_figures([], [Marker(at(0), 1, "fault", "lost")]) == {}


def test_gpu_series_keep_each_gpus_readings_since_the_window_start() -> None:
    readings = {
        (7, 0): [{"ts": 100.0, "util": 10.0}, {"ts": 200.0, "util": 20.0}],
        (7, 1): [{"ts": 200.0, "util": 90.0}],
        (8, 0): [{"ts": 200.0, "util": 50.0}],
    }

    series = charts.gpu_series([(7, "gpu-1", 0), (7, "gpu-1", 3)], readings, since=150.0)

    assert series == [
        GpuSeries(key="7:0", label="gpu-1 GPU 0", times=[200.0], values=[20.0]),
        GpuSeries(key="7:3", label="gpu-1 GPU 3", times=[], values=[]),
    ]


def test_the_gpu_figure_draws_a_trace_per_gpu_in_milliseconds_within_its_window() -> None:
    series = [
        GpuSeries("7:0", "gpu-1 GPU 0", [1.0, 2.0, 3.0], [10.0, None, 30.0]),
        GpuSeries("8:1", "gpu-2 GPU 1", [2.5], [55.0]),
    ]

    figure = charts.gpu_figure(series, max_points=2)

    first, second = figure["data"]
    assert first["x"] == [2000, 3000]
    assert first["y"] == [None, 30.0]
    assert first["meta"] == {"key": "7:0"}
    assert second["name"] == "gpu-2 GPU 1"
    assert figure["layout"]["xaxis"]["type"] == "date"
    assert figure["layout"]["yaxis"]["range"] == [0, 100]


def test_a_loss_is_drawn_on_a_log_axis_when_every_value_allows_it() -> None:
    points = reports(1, range(1, 11), 0, lr=0.1, score=-1.0)
    points.append(Report(1, 11, at(11), {"val_loss": 0.0}))

    figures = charts.metric_figures(points, [])

    scales = {name: figure["layout"]["yaxis"]["type"] for name, figure in figures.items()}
    assert scales == {"loss": "log", "lr": "linear", "score": "linear", "val_loss": "linear"}
    assert figures["loss"]["layout"]["updatemenus"][0]["active"] == 1
    assert figures["lr"]["layout"]["updatemenus"][0]["active"] == 0
