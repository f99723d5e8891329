"""PNG figures of an evaluation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from b2m.core.clips import GENRES  # noqa: E402
from b2m.core.io import atomic_path  # noqa: E402
from b2m.evaluation.summary import CHANCE, decoding_prefixes, genre_sets  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_bars(rows: list[tuple[str, float, float, float]], path: Path, title: str, ylabel: str,
              chance: float | None) -> None:
    """A bar per `(label, value, ci_low, ci_high)` (None: not drawn) with its interval (baselines grey),
    and a dashed chance line."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.6))
    x = np.arange(len(rows))
    table = np.array([r[1:] for r in rows], dtype=float).reshape(len(rows), 3)  # None -> NaN
    values = table[:, 0]
    err = np.stack([values - table[:, 1], table[:, 2] - values])
    colours = ["#999999" if ("baseline" in r[0] or "shuffled" in r[0]) else "#4c72b0" for r in rows]
    ax.bar(x, values, color=colours)
    ax.errorbar(x, values, yerr=np.nan_to_num(np.abs(err)), fmt="none", ecolor="black", capsize=4)
    if chance is not None:
        ax.axhline(chance, color="tab:red", linestyle="--", linewidth=1, label=f"chance {chance:g}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(x, [r[0] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def plot_per_genre(series: dict[str, dict[str, float | None]], path: Path, title: str, ylabel: str,
                   chance: float | None) -> None:
    """Grouped bars: for each genre, one bar per series `{label: {genre: value}}` (None: no bar)."""
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(GENRES))
    for i, (label, values) in enumerate(series.items()):
        y = [np.nan if values.get(g) is None else values[g] for g in GENRES]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, y, width, label=label)
    if chance is not None:
        ax.axhline(chance, color="tab:red", linestyle="--", linewidth=1, label=f"chance {chance:g}")
    ax.set_xticks(x, GENRES, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
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


def plot_slices(volume: np.ndarray, path: Path, title: str, n_slices: int = 12, limit: float | None = None) -> None:
    """A montage of axial slices (along the third axis) of a `[X, Y, Z]` map, symmetric colour scale."""
    volume = np.asarray(volume, dtype=float)
    z = np.unique(np.linspace(0, volume.shape[2] - 1, min(n_slices, volume.shape[2])).round().astype(int))
    cols = min(6, len(z))
    rows = int(np.ceil(len(z) / cols))
    limit = limit or float(np.nanmax(np.abs(volume))) or 1.0
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, k in zip(axes.ravel(), z):
        image = ax.imshow(volume[:, :, k].T, origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"z={k}", fontsize=7)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.7)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def confusion_file(genre_set: str) -> str:
    """The confusion matrix PNG of a genre-scored set (`pred`, `retrieval/acoustic`, ...)."""
    return f"confusion_{genre_set.replace('/', '_')}.png"


def write_figures(metrics: dict, out_dir: Path) -> list[str]:
    """The PNGs of an evaluation's tables; returns their file names (relative to `out_dir`)."""
    names = []
    rows = [(p, metrics[f"{p}/id_acc"], metrics[f"{p}/id_acc_ci_low"], metrics[f"{p}/id_acc_ci_high"])
            for p in decoding_prefixes(metrics)]
    plot_bars(rows, out_dir / "identification.png", "identification accuracy (mean over subjects, "
              f"{metrics['ci_level']:.0%} bootstrap CI)", "identification accuracy", CHANCE["id_acc"])
    names.append("identification.png")
    sets = genre_sets(metrics)
    if sets:
        rows = [(s, metrics[f"genre/{s}/acc"], metrics[f"genre/{s}/acc_ci_low"], metrics[f"genre/{s}/acc_ci_high"])
                for s in sets]
        plot_bars(rows, out_dir / "genre_accuracy.png", "genre classification of decoded embeddings",
                  "accuracy", CHANCE["genre"])
        series = {s: {g: metrics.get(f"genre/{s}/acc/{g}") for g in GENRES} for s in sets}
        plot_per_genre(series, out_dir / "genre_per_genre.png", "genre accuracy per genre", "accuracy",
                       CHANCE["genre"])
        names += ["genre_accuracy.png", "genre_per_genre.png"]
        names += [confusion_file(s) for s in sets]
    if any(k.startswith("logo/") for k in metrics):
        series = {f"held-out genre, {w}": {g: metrics.get(f"logo/{g}/{w}") for g in GENRES} for w in ("within", "all")}
        plot_per_genre(series, out_dir / "logo.png", "leave-one-genre-out identification", "id_acc", CHANCE["id_acc"])
        names.append("logo.png")
    return names
