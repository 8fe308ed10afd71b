"""Plotly figures as plain dicts: readings in, figure out. No database, no request.

Times are epoch milliseconds on a date axis (shown in UTC). The node page's live charts
start from these figures and append points in the browser with ``Plotly.extendTraces``,
keeping at most ``LIVE_MAX_POINTS`` per trace.
"""

from collections import defaultdict
from typing import Any

LIVE_MAX_POINTS = 300
# One chart per metric: key, title, unit, fixed y range (None: automatic).
GPU_METRICS: tuple[tuple[str, str, str, list[float] | None], ...] = (
    ("util", "GPU utilization", "%", [0.0, 100.0]),
    ("mem", "GPU memory used", "%", [0.0, 100.0]),
    ("temp", "GPU temperature", "°C", None),
    ("power", "GPU power", "W", None),
)
# The raw sample field and the rollup prefix of each metric, for history charts.
HISTORY_FIELDS = {
    "util": ("util", "util", "GPU utilization", "%"),
    "mem": ("mem_used_mib", "mem_used", "GPU memory used", "MiB"),
    "temp": ("temp_c", "temp", "GPU temperature", "°C"),
    "power": ("power_w", "power", "GPU power", "W"),
}
BAND_COLOUR = "rgba(37, 99, 235, 0.18)"
LINE_COLOUR = "#2563eb"


def _layout(title: str, unit: str, y_range: list[float] | None = None) -> dict[str, Any]:
    yaxis: dict[str, Any] = {"title": {"text": unit}, "zeroline": False, "fixedrange": True}
    if y_range is not None:
        yaxis["range"] = y_range
    return {
        "title": {"text": title, "font": {"size": 13}, "x": 0, "xanchor": "left"},
        "height": 220,
        "margin": {"l": 48, "r": 12, "t": 28, "b": 28},
        "xaxis": {"type": "date", "showgrid": False},
        "yaxis": yaxis,
        "showlegend": True,
        "legend": {"orientation": "h", "y": -0.2, "font": {"size": 10}},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#fff",
        "uirevision": "keep",
    }


def _ms(ts: float) -> float:
    return round(ts * 1000)


def _pct(used: float | None, total: float | None) -> float | None:
    if used is None or not total:
        return None
    return round(100 * used / total, 1)


# A silence longer than this many steps between points is drawn as a gap, not a slope.
GAP_STEPS = 3


def with_gaps(points: list[dict[str, Any]], step: float) -> list[dict[str, Any]]:
    """``points`` with an empty point inside every silence longer than ``GAP_STEPS`` steps."""
    out: list[dict[str, Any]] = []
    for point in points:
        if out and point["ts"] - out[-1]["ts"] > GAP_STEPS * step:
            out.append({"ts": (out[-1]["ts"] + point["ts"]) / 2})
        out.append(point)
    return out


def history_figures(
    points: list[dict[str, Any]], *, rollup: bool, step: float
) -> dict[str, dict[str, Any]]:
    """One figure per metric over a GPU's history, ``step`` seconds apart when nothing is lost.

    Raw samples give one line; rollups give a min/max band and an average line. Where
    the node was silent (console or agent down) the lines break instead of joining.
    """
    figures = {}
    points = with_gaps(points, step)
    x = [_ms(p["ts"]) for p in points]
    for key, (raw_field, prefix, title, unit) in HISTORY_FIELDS.items():
        if not rollup:
            data = [
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": title,
                    "x": x,
                    "y": [p.get(raw_field) for p in points],
                    "line": {"color": LINE_COLOUR, "width": 1.5},
                    "connectgaps": False,
                }
            ]
        else:
            data = [
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": "min",
                    "x": x,
                    "y": [p.get(f"{prefix}_min") for p in points],
                    "line": {"width": 0},
                    "showlegend": False,
                    "hoverinfo": "skip",
                },
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": "min to max",
                    "x": x,
                    "y": [p.get(f"{prefix}_max") for p in points],
                    "line": {"width": 0},
                    "fill": "tonexty",
                    "fillcolor": BAND_COLOUR,
                },
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": "average",
                    "x": x,
                    "y": [p.get(f"{prefix}_avg") for p in points],
                    "line": {"color": LINE_COLOUR, "width": 1.5},
                },
            ]
        y_range = [0.0, 100.0] if key == "util" else None
        figures[key] = {"data": data, "layout": _layout(title, unit, y_range)}
    return figures


def _gpu_value(key: str, sample: dict[str, Any]) -> float | None:
    if key == "util":
        return sample.get("util")
    if key == "mem":
        return _pct(sample.get("mem_used_mib"), sample.get("mem_total_mib"))
    if key == "temp":
        return sample.get("temp_c")
    return sample.get("power_w")


def live_figures(
    *,
    gpu_indexes: list[int],
    gpu_samples: list[dict[str, Any]],
    host_samples: list[dict[str, Any]],
    max_points: int = LIVE_MAX_POINTS,
) -> dict[str, dict[str, Any]]:
    """The node page's charts: one per GPU metric with a trace per GPU, and the host's.

    ``gpu_samples`` are raw rows with ``gpu_index``; at most ``max_points`` of the newest
    are kept per trace. Trace ``n`` of a GPU chart is the GPU ``gpu_indexes[n]``.
    """
    by_gpu: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for sample in gpu_samples:
        by_gpu[sample["gpu_index"]].append(sample)
    figures = {}
    for key, title, unit, y_range in GPU_METRICS:
        data = []
        for index in gpu_indexes:
            samples = by_gpu.get(index, [])[-max_points:]
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": f"GPU {index}",
                    "x": [_ms(s["ts"]) for s in samples],
                    "y": [_gpu_value(key, s) for s in samples],
                    "line": {"width": 1.2},
                }
            )
        figures[key] = {"data": data, "layout": _layout(title, unit, y_range)}
    host = host_samples[-max_points:]
    host_x = [_ms(s["ts"]) for s in host]
    figures["host"] = {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "CPU",
                "x": host_x,
                "y": [s.get("cpu_percent") for s in host],
                "line": {"width": 1.2},
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": "Memory",
                "x": host_x,
                "y": [_pct(s.get("mem_used_bytes"), s.get("mem_total_bytes")) for s in host],
                "line": {"width": 1.2},
            },
        ],
        "layout": _layout("Host", "%", [0.0, 100.0]),
    }
    return figures
