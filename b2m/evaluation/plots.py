"""Figures of an evaluation (matplotlib, Agg backend: no display needed).

Every figure is written twice: `<name>.png` (150 dpi, for the report and summary) and `<name>.svg`
beside it (vector, text kept as text: for papers and slides). Bars carry their values; a missing
value (NaN, None) is drawn as a hatched "n/a" placeholder, never as an empty bar that reads as 0.
Voxel maps are drawn by nilearn over the subject's anatomy (`plot_map`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from b2m.core.clips import GENRES  # noqa: E402
from b2m.core.io import atomic_path  # noqa: E402
from b2m.evaluation.results import CHANCE, Result, Results  # noqa: E402
from b2m.evaluation.tables import genre_rows, label, scored_sets  # noqa: E402


DPI = 150
# SVG text as text (selectable, editable), not as glyph outlines.
matplotlib.rcParams["svg.fonttype"] = "none"


def _save(fig, path: Path) -> None:
    """`path` (PNG) and the same figure as SVG beside it."""
    for target in (path, path.with_suffix(".svg")):
        with atomic_path(target) as tmp:
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format=target.suffix[1:])
    plt.close(fig)


def _mark_missing(ax, x: np.ndarray, values: np.ndarray, width: float) -> None:
    """A hatched full-height placeholder with "n/a" where a value is missing."""
    for xi in x[np.isnan(values)]:
        ax.bar(xi, 1.0, width, color="none", edgecolor="#bbbbbb", hatch="//", linewidth=0.5)
        ax.text(xi, 0.5, "n/a", ha="center", va="center", fontsize=7, rotation=90, color="#666666")


def plot_bars(rows: list[Result], path: Path, title: str, ylabel: str, chance: float | None) -> None:
    """A bar per row (its value and interval; a missing value drawn as n/a; baselines grey), labelled
    by its set, and a dashed chance line."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(rows) + 1.5), 4.2))
    x = np.arange(len(rows))
    table = np.array([(r.value, *(r.interval or (None, None))) for r in rows], dtype=float).reshape(len(rows), 3)
    values = table[:, 0]
    err = np.stack([values - table[:, 1], table[:, 2] - values])
    colours = ["#999999" if r.baseline or r.set == "baseline" else "#4c72b0" for r in rows]
    ax.bar(x, np.nan_to_num(values), color=colours)
    ax.errorbar(x, values, yerr=np.nan_to_num(np.abs(err)), fmt="none", ecolor="black", capsize=4)
    for xi, v, high in zip(x, values, table[:, 2]):
        if np.isfinite(v):
            ax.text(xi, min(np.nanmax([v, high]), 0.93) + 0.02, f"{v:.2f}", ha="center", fontsize=7)
    _mark_missing(ax, x, values, 0.8)
    if chance is not None:
        ax.axhline(chance, color="tab:red", linestyle="--", linewidth=1, label=f"chance {chance:g}")
        ax.legend(loc="lower left", bbox_to_anchor=(1.0, 0.0), fontsize=8)  # outside: never over a bar
    ax.set_xticks(x, [label(r) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    caveats = sorted({r.caveat for r in rows if r.caveat})
    if caveats:  # said on the figure itself: a figure travels without its table
        fig.text(0.01, -0.02, "\n".join(f"† {c}" for c in caveats), fontsize=7, va="top")
    _save(fig, path)


def plot_per_genre(series: dict[str, dict[str, float | None]], path: Path, title: str, ylabel: str,
                   chance: float | None) -> None:
    """Grouped bars: for each genre, one bar per series `{label: {genre: value}}` (None: no bar)."""
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(GENRES))
    for i, (label, values) in enumerate(series.items()):
        y = np.array([np.nan if values.get(g) is None else values[g] for g in GENRES], dtype=float)
        at = x + (i - (len(series) - 1) / 2) * width
        ax.bar(at, np.nan_to_num(y), width, label=label)
        _mark_missing(ax, at, y, width)
    if chance is not None:
        ax.axhline(chance, color="tab:red", linestyle="--", linewidth=1, label=f"chance {chance:g}")
    ax.set_xticks(x, GENRES, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def plot_heatmap(values: np.ndarray, rows: list[str], columns: list[str], path: Path, title: str,
                 chance: float | None) -> None:
    """A `[R, C]` table of values in [0, 1] as colours with the values written in (NaN: `n/a`, grey);
    the colour scale centred on `chance` (blue above it, red below)."""
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(columns), 1.2 + 0.34 * len(rows)))
    centre = 0.5 if chance is None else chance
    norm = matplotlib.colors.TwoSlopeNorm(vcenter=centre, vmin=0.0, vmax=1.0)
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#eeeeee")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="white" if np.isfinite(v) and abs(v - centre) > 0.35 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="" if chance is None else f"chance {chance:g}")
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def plot_confusion(confusion: np.ndarray, path: Path, title: str) -> None:
    """A `[10, 10]` confusion matrix (rows: true genre, columns: decoded genre), counts in the cells."""
    confusion = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(confusion, cmap="Blues")
    for (i, j), n in np.ndenumerate(confusion):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                    color="white" if n > confusion.max() / 2 else "black")
    ax.set_xticks(range(len(GENRES)), GENRES, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(GENRES)), GENRES, fontsize=7)
    ax.set_xlabel("decoded genre")
    ax.set_ylabel("true genre")
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def plot_map(image: nib.Nifti1Image, background: nib.Nifti1Image, path: Path, title: str, n_slices: int = 7) -> None:
    """Axial slices of a voxel map over `background` (the subject's T1w or mean EPI, any grid in the same
    space), through nilearn: symmetric colour scale, zero (outside the mask) transparent, the slices'
    coordinates in mm and the left/right orientation marked."""
    from nilearn import plotting

    values = np.asarray(image.dataobj, dtype=float)
    limit = float(np.nanmax(np.abs(values))) or 1.0
    fig = plt.figure(figsize=(2.0 * n_slices, 2.6))
    plotting.plot_stat_map(image, bg_img=background, display_mode="z", cut_coords=n_slices, figure=fig,
                           threshold=limit * 1e-6, vmax=limit, cmap="RdBu_r", title=title, annotate=True,
                           draw_cross=False, black_bg=False, dim=-0.3)
    _save(fig, path)


def confusion_file(genre_set: str) -> str:
    """The confusion matrix PNG of a genre-classified set (`pred`, `retrieval/acoustic`, ...)."""
    return f"confusion_{genre_set.replace('/', '_')}.png"


def write_figures(results: Results, confusions: dict[str, np.ndarray], out_dir: Path) -> list[str]:
    """The PNGs of an evaluation's results (and the genre `confusions` per set name); returns their file
    names (relative to `out_dir`)."""
    level = results.value(section="run", metric="ci_level")
    plot_bars(scored_sets(results), out_dir / "identification.png",
              f"identification accuracy (mean over subjects, {level:.0%} bootstrap CI)", "identification accuracy",
              CHANCE["id_acc"])
    names = ["identification.png"]
    sets = genre_rows(results)
    if sets:
        plot_bars(sets, out_dir / "genre_accuracy.png", "genre classification of decoded embeddings", "accuracy",
                  CHANCE["genre"])
        # None (a genre without test clips) -> NaN, drawn as n/a
        per_genre = np.array([[results.value(section="genre", set=r.set, choice=r.choice, space=r.space, metric="acc",
                                             part=g, subject=None) for g in GENRES] for r in sets], dtype=float)
        plot_heatmap(per_genre, [label(r) for r in sets], list(GENRES), out_dir / "genre_per_genre.png",
                     "genre accuracy per genre (mean over subjects)", CHANCE["genre"])
        names += ["genre_accuracy.png", "genre_per_genre.png"]
        for name, confusion in confusions.items():
            plot_confusion(confusion, out_dir / confusion_file(name), f"genre of {name} (all subjects)")
            names.append(confusion_file(name))
    if results.select(section="logo", metric="all", subject=None):
        series = {f"held-out genre, {w}": {g: results.value(section="logo", set=g, metric=w, subject=None)
                                           for g in GENRES} for w in ("within", "all")}
        plot_per_genre(series, out_dir / "logo.png", "leave-one-genre-out identification", "id_acc", CHANCE["id_acc"])
        names.append("logo.png")
    return names
