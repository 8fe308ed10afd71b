"""Chart builders: silences break the lines instead of drawing a slope across them."""

from apps.monitoring.charts import history_figures, with_gaps


def test_a_silence_longer_than_three_steps_becomes_a_gap() -> None:
    points = [{"ts": 100.0, "util": 10.0}, {"ts": 101.0, "util": 20.0}, {"ts": 160.0, "util": 5.0}]

    filled = with_gaps(points, step=1.0)

    assert [p["ts"] for p in filled] == [100.0, 101.0, 130.5, 160.0]
    assert "util" not in filled[2]


def test_regular_points_are_left_alone() -> None:
    points = [{"ts": float(t), "util": 1.0} for t in range(0, 300, 60)]

    assert with_gaps(points, step=60.0) == points


def test_raw_history_draws_the_gap_as_a_missing_value() -> None:
    points = [{"ts": 0.0, "power_w": 100.0}, {"ts": 10.0, "power_w": 200.0}]

    figures = history_figures(points, rollup=False, step=1.0)

    assert figures["power"]["data"][0]["y"] == [100.0, None, 200.0]
    assert figures["power"]["data"][0]["connectgaps"] is False
