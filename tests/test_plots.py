"""The evaluation's figures: PNG and SVG, values on the bars, missing values marked, not drawn as 0."""

from __future__ import annotations

import re

import matplotlib.image

import numpy as np

from b2m.evaluation.plots import DPI, plot_bars, plot_heatmap, plot_per_genre
from b2m.evaluation.results import Result


def svg_texts(path) -> list[str]:
    """The text elements of a matplotlib SVG written with svg.fonttype 'none' (text kept as text)."""
    return [t.strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text())]


def test_bars_show_values_and_mark_missing_ones(tmp_path):
    rows = [Result("decoding", "zero", "id_acc", 0.0, interval=(0.0, 0.0)),
            Result("decoding", "missing", "id_acc", None, interval=(None, None)),
            Result("reconstruction", "generated", "id_acc", 0.7, space="s", interval=(0.6, 0.8), caveat="random")]
    plot_bars(rows, tmp_path / "bars.png", "title", "id_acc", 0.5)
    texts = svg_texts(tmp_path / "bars.svg")
    assert "0.00" in texts and "0.70" in texts  # a 0.0 bar is labelled as a value
    assert texts.count("n/a") == 1  # the missing one, and only it, is marked
    # A set with a caveat is marked, and the caveat is said on the figure itself.
    assert "generated/s †" in texts and "† random" in texts
    png = matplotlib.image.imread(tmp_path / "bars.png")
    assert png.shape[0] >= 4.2 * DPI * 0.8  # drawn at DPI, not the old 100


def test_per_genre_bars_mark_a_missing_genre(tmp_path):
    series = {"a": {"blues": 0.0, "rock": 0.4}, "b": {"blues": 0.5}}
    plot_per_genre(series, tmp_path / "genres.png", "per genre", "accuracy", 0.1)
    # 10 genres x 2 series, 3 values given: 17 placeholders.
    assert svg_texts(tmp_path / "genres.svg").count("n/a") == 17


def test_heatmap_writes_every_value_and_marks_missing_ones(tmp_path):
    values = np.array([[0.1, 0.9, np.nan], [0.0, 1.0, 0.25]])
    plot_heatmap(values, ["pred", "retrieval/acoustic"], ["blues", "jazz", "rock"], tmp_path / "h.png", "t", 0.1)
    texts = svg_texts(tmp_path / "h.svg")
    for v in ("0.10", "0.90", "0.00", "1.00", "0.25"):
        assert v in texts
    assert texts.count("n/a") == 1 and "retrieval/acoustic" in texts and "rock" in texts
