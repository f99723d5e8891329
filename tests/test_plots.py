"""The evaluation's figures: PNG and SVG, values on the bars, missing values marked, not drawn as 0."""

from __future__ import annotations

import re

import matplotlib.image

from b2m.evaluation.plots import DPI, plot_bars, plot_per_genre


def svg_texts(path) -> list[str]:
    """The text elements of a matplotlib SVG written with svg.fonttype 'none' (text kept as text)."""
    return [t.strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text())]


def test_bars_show_values_and_mark_missing_ones(tmp_path):
    rows = [("zero", 0.0, 0.0, 0.0), ("missing", None, None, None), ("set", 0.7, 0.6, 0.8)]
    plot_bars(rows, tmp_path / "bars.png", "title", "id_acc", 0.5)
    texts = svg_texts(tmp_path / "bars.svg")
    assert "0.00" in texts and "0.70" in texts  # a 0.0 bar is labelled as a value
    assert texts.count("n/a") == 1  # the missing one, and only it, is marked
    png = matplotlib.image.imread(tmp_path / "bars.png")
    assert png.shape[0] >= 4.2 * DPI * 0.8  # drawn at DPI, not the old 100


def test_per_genre_bars_mark_a_missing_genre(tmp_path):
    series = {"a": {"blues": 0.0, "rock": 0.4}, "b": {"blues": 0.5}}
    plot_per_genre(series, tmp_path / "genres.png", "per genre", "accuracy", 0.1)
    # 10 genres x 2 series, 3 values given: 17 placeholders.
    assert svg_texts(tmp_path / "genres.svg").count("n/a") == 17
