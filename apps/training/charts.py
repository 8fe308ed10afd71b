"""Plotly figures of a job's training as plain dicts: reports and readings in, figure out.

Metrics: one figure per metric name, x = step, one trace per attempt (a resumed attempt
starts again at its checkpoint's step). The timeline's faults, requeues, resumes and
restarts are drawn as dotted vertical lines at the step where they happened: a marker
of an attempt sits at the point that attempt reported nearest in time to it (a resume at
its checkpoint's step when the timeline names it). A loss is drawn on a log axis when
every value allows it; buttons under each chart switch the scale. GPU utilisation: one
trace per GPU of the attempt, over time (epoch milliseconds on a date axis, in UTC).

The job page appends live points with ``Plotly.extendTraces``, keeping at most
``METRIC_MAX_POINTS`` per metric trace and ``GPU_MAX_POINTS`` per GPU trace; a trace's
``meta`` says which attempt or GPU it draws.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

METRIC_MAX_POINTS = 5000
GPU_MAX_POINTS = 600
# Attempt colours, cycled; markers by kind (the first listed wins when several share a step).
ATTEMPT_COLOURS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d")
MARKER_COLOURS = {
    "fault": "#b91c1c",
    "failed": "#b91c1c",
    "drained": "#b91c1c",
    "preempted": "#b45309",
    "requeued": "#b45309",
    "restart": "#7c3aed",
    "resume": "#15803d",
}
MARKER_DEFAULT_COLOUR = "#5d6773"
# Pixels between the labels of neighbouring markers, one above the other.
MARKER_LABEL_STAGGER = 13


@dataclass(frozen=True)
class Report:
    """One metrics point: what an attempt reported at a step."""

    attempt: int
    step: int
    at: datetime
    values: dict[str, float]


@dataclass(frozen=True)
class Marker:
    """A timeline line drawn on the charts; ``step`` when the timeline names it."""

    at: datetime
    attempt: int
    kind: str
    reason: str
    step: int | None = None


@dataclass(frozen=True)
class GpuSeries:
    """One GPU's utilisation readings: ``key`` is ``"<node id>:<gpu index>"``."""

    key: str
    label: str
    times: list[float]  # epoch seconds
    values: list[float | None]


def metric_names(reports: Iterable[Report]) -> list[str]:
    """Every metric name reported, ``loss`` first, the others in the order they appeared."""
    names: dict[str, None] = {}
    for report in reports:
        names.update(dict.fromkeys(report.values))
    return sorted(names, key=lambda name: name != "loss")


def _nearest_step(points: list[Report], at: datetime) -> int:
    return min(points, key=lambda p: abs((p.at - at).total_seconds())).step


def marker_steps(reports: list[Report], markers: list[Marker]) -> list[tuple[int, Marker]]:
    """Each marker with the step it is drawn at; markers no report places are left out."""
    by_attempt: dict[int, list[Report]] = defaultdict(list)
    for report in reports:
        by_attempt[report.attempt].append(report)
    placed = []
    for marker in markers:
        if marker.step is not None:
            placed.append((marker.step, marker))
        elif points := by_attempt.get(marker.attempt) or reports:
            placed.append((_nearest_step(points, marker.at), marker))
    return placed


def _colour(kinds: list[str]) -> str:
    for kind in MARKER_COLOURS:
        if kind in kinds:
            return MARKER_COLOURS[kind]
    return MARKER_DEFAULT_COLOUR


def marker_layout(reports: list[Report], markers: list[Marker]) -> dict[str, list[Any]]:
    """The layout ``shapes`` (dotted lines) and ``annotations`` (labels, reasons on hover)
    of the markers, one per step where something happened."""
    at_step: dict[int, list[Marker]] = defaultdict(list)
    for step, marker in marker_steps(reports, markers):
        at_step[step].append(marker)
    shapes, annotations = [], []
    for number, step in enumerate(sorted(at_step)):
        group = at_step[step]
        kinds = list(dict.fromkeys(m.kind for m in group))
        colour = _colour(kinds)
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": step,
                "x1": step,
                "y0": 0,
                "y1": 1,
                "line": {"color": colour, "width": 1, "dash": "dot"},
            }
        )
        reasons = "<br>".join(
            f"attempt {m.attempt} {m.kind}: {m.reason}"
            if m.reason
            else f"attempt {m.attempt} {m.kind}"
            for m in group
        )
        annotations.append(
            {
                "x": step,
                "xref": "x",
                "y": 1,
                "yref": "paper",
                "yanchor": "bottom",
                "yshift": MARKER_LABEL_STAGGER * (number % 2),
                "text": " · ".join(kinds),
                "showarrow": False,
                "font": {"size": 10, "color": colour},
                "hovertext": f"step {step}<br>{reasons}",
                "captureevents": True,
            }
        )
    return {"shapes": shapes, "annotations": annotations}


def _scale_buttons(log: bool) -> list[dict[str, Any]]:
    """Buttons switching the y axis between linear and log."""
    return [
        {
            "type": "buttons",
            "direction": "right",
            "active": 1 if log else 0,
            "showactive": True,
            "x": 0,
            "xanchor": "left",
            "y": -0.2,
            "yanchor": "top",
            "pad": {"t": 0, "r": 0, "b": 0, "l": 0},
            "font": {"size": 10},
            "buttons": [
                {"label": "linear", "method": "relayout", "args": [{"yaxis.type": "linear"}]},
                {"label": "log", "method": "relayout", "args": [{"yaxis.type": "log"}]},
            ],
        }
    ]


def log_scale_suits(name: str, values: Iterable[float]) -> bool:
    """Whether a metric reads best on a log axis: a loss, every value above zero."""
    return "loss" in name.lower() and all(v > 0 for v in values)


def _metric_layout(name: str, markers: dict[str, list[Any]], *, log: bool) -> dict[str, Any]:
    return {
        "title": {
            "text": name,
            "font": {"size": 13},
            "x": 0,
            "xanchor": "left",
            "y": 0.98,
            "yanchor": "top",
            "pad": {"l": 8},
        },
        "height": 270,
        "margin": {"l": 56, "r": 12, "t": 52, "b": 64},
        "xaxis": {"title": {"text": "step", "font": {"size": 11}}, "zeroline": False},
        "yaxis": {"zeroline": False, "automargin": True, "type": "log" if log else "linear"},
        "showlegend": True,
        "legend": {
            "orientation": "h",
            "x": 1,
            "xanchor": "right",
            "y": -0.2,
            "yanchor": "top",
            "font": {"size": 10},
        },
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#fff",
        "hovermode": "closest",
        "uirevision": "keep",
        "shapes": markers["shapes"],
        "annotations": markers["annotations"],
        "updatemenus": _scale_buttons(log),
    }


def attempt_trace(attempt: int, steps: list[int], values: list[float]) -> dict[str, Any]:
    """The trace of one attempt's values of a metric."""
    colour = ATTEMPT_COLOURS[(attempt - 1) % len(ATTEMPT_COLOURS)]
    return {
        "type": "scatter",
        "mode": "lines+markers",
        "name": f"attempt {attempt}",
        "meta": {"attempt": attempt},
        "x": steps,
        "y": values,
        "line": {"color": colour, "width": 1.5},
        "marker": {"color": colour, "size": 3},
        "hovertemplate": f"step %{{x}}<br>%{{y:.4g}}<extra>attempt {attempt}</extra>",
    }


def metric_template(reports: list[Report], markers: list[Marker]) -> dict[str, Any]:
    """An empty figure with the markers, for a metric first reported after the page loaded
    (the browser sets its title)."""
    return {"data": [], "layout": _metric_layout("", marker_layout(reports, markers), log=False)}


def metric_figures(
    reports: list[Report], markers: list[Marker], *, max_points: int = METRIC_MAX_POINTS
) -> dict[str, dict[str, Any]]:
    """One figure per metric name (in ``metric_names`` order), a trace per attempt holding
    its newest ``max_points`` values, with the markers."""
    series: dict[str, dict[int, tuple[list[int], list[float]]]] = defaultdict(dict)
    for report in reports:
        for name, value in report.values.items():
            steps, values = series[name].setdefault(report.attempt, ([], []))
            steps.append(report.step)
            values.append(value)
    layout = marker_layout(reports, markers)
    figures = {}
    for name in metric_names(reports):
        data = [
            attempt_trace(attempt, steps[-max_points:], values[-max_points:])
            for attempt, (steps, values) in sorted(series[name].items())
        ]
        log = log_scale_suits(name, (v for _, values in series[name].values() for v in values))
        figures[name] = {"data": data, "layout": _metric_layout(name, layout, log=log)}
    return figures


def _millis(times: list[float]) -> list[int]:
    """Epoch seconds as the epoch milliseconds of a date axis."""
    return [round(t * 1000) for t in times]


def gpu_points(series: list[GpuSeries]) -> dict[str, dict[str, list[Any]]]:
    """New readings by GPU key, as the page appends them to its traces."""
    return {s.key: {"x": _millis(s.times), "y": s.values} for s in series}


def gpu_figure(series: list[GpuSeries], *, max_points: int = GPU_MAX_POINTS) -> dict[str, Any]:
    """Utilisation of the attempt's GPUs over time, one trace per GPU (its newest
    ``max_points`` readings)."""
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": s.label,
            "meta": {"key": s.key},
            "x": _millis(s.times[-max_points:]),
            "y": s.values[-max_points:],
            "line": {"width": 1.2},
            "hovertemplate": f"%{{y:.0f}} %<extra>{s.label}</extra>",
        }
        for s in series
    ]
    return {
        "data": data,
        "layout": {
            "title": {
                "text": "GPU utilisation",
                "font": {"size": 13},
                "x": 0,
                "xanchor": "left",
                "pad": {"l": 8},
            },
            "height": 240,
            "margin": {"l": 48, "r": 12, "t": 40, "b": 44},
            "xaxis": {"type": "date", "showgrid": False},
            "yaxis": {"title": {"text": "%"}, "range": [0, 100], "fixedrange": True},
            "showlegend": True,
            "legend": {
                "orientation": "h",
                "x": 1,
                "xanchor": "right",
                "y": 1.02,
                "yanchor": "bottom",
                "font": {"size": 10},
            },
            "paper_bgcolor": "rgba(0,0,0,0)",
            "plot_bgcolor": "#fff",
            "uirevision": "keep",
        },
    }


def gpu_series(
    gpus: list[tuple[int, str, int]],
    readings: dict[tuple[int, int], list[dict[str, Any]]],
    *,
    since: float,
) -> list[GpuSeries]:
    """The series of ``gpus`` (node id, node name, GPU index) from their readings (rows
    with ``ts`` and ``util``, by node id and GPU index) taken at ``since`` or later."""
    series = []
    for node_id, node_name, index in gpus:
        rows = [r for r in readings.get((node_id, index), []) if r["ts"] >= since]
        series.append(
            GpuSeries(
                key=f"{node_id}:{index}",
                label=f"{node_name} GPU {index}",
                times=[r["ts"] for r in rows],
                values=[r.get("util") for r in rows],
            )
        )
    return series
