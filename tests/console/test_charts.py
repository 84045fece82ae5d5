"""Server-side SVG charts: well-formed, scaled to their data, gaps where samples are missing (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from mlops.console import charts

SVG = "{http://www.w3.org/2000/svg}"


def test_axis_steps_read_well():
    assert [charts.axis(v) for v in (0, 9, 27.4, 239.5, 0.3)] == [
        (1, 0.25),
        (10, 2.5),
        (30, 10),
        (300, 100),
        (0.3, 0.1),
    ]


def test_nice_max_rounds_up_to_a_readable_axis_top():
    assert [charts.nice_max(v) for v in (0, 0.7, 1, 3, 7.5, 12, 260, 999)] == [1, 1, 1, 5, 10, 20, 500, 1000]


def test_line_chart_is_valid_svg_with_one_polyline_per_unbroken_run():
    times = [0, 2, 4, 6, 8]
    svg = charts.line_chart(
        "Latency",
        {
            "p50": list(zip(times, [1, 2, None, 3, 4], strict=True)),
            "p99": list(zip(times, [5, 6, 7, 8, 9], strict=True)),
        },
        unit="ms",
    )
    root = ET.fromstring(svg)
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 3  # p50 broken in two by the missing sample, p99 whole
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Latency" in texts and "p50" in texts and "p99" in texts and "now" in texts and "-8.0s" in texts
    assert "10" in texts  # the axis top above the largest value, 9


def test_line_chart_without_samples_says_so():
    root = ET.fromstring(charts.line_chart("Throughput", {"answered": [], "in": [(5.0, None)]}))
    assert "no samples yet" in [t.text for t in root.iter(f"{SVG}text")]


def test_bar_chart_scales_bars_to_the_largest_value_and_escapes_labels():
    root = ET.fromstring(charts.bar_chart("Tasks <run>", [("ingest", 10.0), ("train & eval", 40.0)], unit="s"))
    widths = [float(r.get("width")) for r in root.findall(f"{SVG}rect")]
    assert widths[1] == 4 * widths[0] > 0
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Tasks <run>" in texts and "train & eval" in texts and "40s" in texts
