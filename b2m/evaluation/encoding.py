"""Voxelwise encoding models: which voxels does each embedding space explain?

For each subject and embedding space:

1. Stimulus time course `[T, F]` per run: each TR (acquired at `t * TR` s) carries the
   flattened embedding of the clip playing then (z-scored over the training clips; zeros
   when nothing plays), and FIR copies delayed by `delays_tr` TRs are concatenated.
2. Ridge (`b2m.core.ridge.RidgeCV`, one alpha per voxel by contiguous K-fold CV) from
   that to every voxel's preprocessed BOLD of the Training runs.
3. Test: the model predicts the Test runs' time courses; both prediction and BOLD are cut
   into per-presentation windows (the TRs `onset / TR + d`, d in the data's `delays_tr`,
   as the decoder sees them, with the same row-0 rules), and the 4 presentations of each
   test clip are averaged. Pearson r per voxel over all (clip, window TR) pairs.
4. Noise ceiling per voxel from the 4 single presentations: explainable variance
   (bias-corrected) and the correlation ceiling CC_max; `r / CC_max` is the normalised r.
5. Significance: a one-sided permutation test that shuffles whole clip windows of the
   prediction (`n_perm` times; keeps the autocorrelation within a window), then
   Benjamini-Hochberg FDR over the voxels at `fdr_q`.

6. Variance partitioning (`encoding.partition`), when the spaces include audio and text ones:
   per (audio, text) pair, a banded ridge on both (`b2m.evaluation.partition`) against the
   single-space fits gives each voxel's unique and shared test R².

Outputs under `out_dir/<subject>/`: NIfTI maps in the BOLD's space (same affine, 0 outside
the kept voxels) and axial slices over the subject's anatomy (PNG and SVG, `anatomy`);
`out_dir/summary.md` with the region tables. Regions: an atlas's regions when `data.rois` names one (`b2m.data.rois`); else, with the demo dataset's
ground truth (`TRUTH_FILE`), its tuning classes; otherwise the `top_k` voxels of highest
explainable variance ("auditory") and the rest.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import nibabel as nib
import numpy as np
from omegaconf import DictConfig

from b2m.core.clips import Clip
from b2m.core.errors import B2MError
from b2m.core.io import atomic_path, write_text
from b2m.core.log import progress
from b2m.core.metrics import aggregate_subjects
from b2m.core.ridge import RidgeCV
from b2m.data.bids import Presentation, subject_label
from b2m.data.nifti import mean_volume, open_run
from b2m.data.samples import build_samples
from b2m.data.subjects import PreprocessedSubject, data_paths, load_preprocessed
from b2m.evaluation import plots
from b2m.evaluation.partition import banded_predictions, partition, r2_columns
from b2m.evaluation.stats import correlation_ceiling, explainable_variance, fdr_bh, pearson_columns, zscore_columns
from b2m.targets import EmbeddingSpace, space_by_name
from b2m.targets.dataset import clip_targets

# The demo dataset's ground truth (b2m/demo/build.py, write_truth): per cortex voxel, its tuning
# class and its [X, Y, Z] index; voxels are matched by index, since preprocessing may drop some.
TRUTH_FILE = "derivatives/demo/{subject}/{subject}_desc-truth.npz"
TRUTH_CLASS_KEY, TRUTH_IJK_KEY = "tuning_class", "ijk"
TRUTH_CLASSES = {0: "untuned", 1: "spectrotemporal", 2: "semantic"}


# ----------------------------------------------------------------- design
def stimulus_time_course(events: list[Presentation], emb: dict[Clip, np.ndarray], n_tr: int, tr: float) -> np.ndarray:
    """`[n_tr, F]`: row t is the flattened embedding of the clip playing at `t * tr` seconds, else 0."""
    dim = next(iter(emb.values())).size
    out = np.zeros((n_tr, dim), dtype=np.float32)
    times = np.arange(n_tr) * tr
    for p in events:
        playing = (times >= p.onset) & (times < p.onset + p.duration)
        out[playing] = emb[p.clip].reshape(-1)
    return out


def delayed(x: np.ndarray, delays: list[int]) -> np.ndarray:
    """FIR design `[T, F * len(delays)]`: copies of `x` `[T, F]` shifted later by each delay (TRs), zero-filled."""
    out = np.zeros((len(x), x.shape[1] * len(delays)), dtype=np.float32)
    for i, d in enumerate(delays):
        out[d:, i * x.shape[1]:(i + 1) * x.shape[1]] = x[: len(x) - d]
    return out


# ----------------------------------------------------------------- one subject, one space
def run_designs(pre: PreprocessedSubject, emb: dict[Clip, np.ndarray], delays: list[int]) -> dict[str, np.ndarray]:
    """The FIR design `[T, F * len(delays)]` of every run (by name), embeddings z-scored over the training clips."""
    train_clips = {p.clip for run in pre.runs["Training"] for p in pre.events[run.name]}
    stack = np.stack([emb[c].reshape(-1) for c in sorted(train_clips)])
    mean, sd = stack.mean(axis=0), stack.std(axis=0)
    sd[sd == 0] = 1.0
    scaled = {c: (e.reshape(-1) - mean) / sd for c, e in emb.items()}
    return {run.name: delayed(stimulus_time_course(pre.events[run.name], scaled, len(pre.data.runs[run.name]),
                                                   pre.tr), delays)
            for run in pre.runs["Training"] + pre.runs["Test"]}


def fit_space(pre: PreprocessedSubject, designs: dict[str, np.ndarray], window: list[int], alphas: list[float],
              n_folds: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit on the Training runs, predict the Test runs: `(pred [N, W, V], observed repeats [N, R, W, V])`
    for the N test clips, W window TRs (`window`, TRs after each onset) and R presentations."""
    x = np.concatenate([designs[r.name] for r in pre.runs["Training"]])
    y = np.concatenate([np.asarray(pre.data.runs[r.name]) for r in pre.runs["Training"]])
    ridge = RidgeCV(alphas=alphas, n_folds=n_folds).fit(x, y)
    predicted = {r.name: ridge.predict(designs[r.name]) for r in pre.runs["Test"]}
    test = pre.runs["Test"]
    observed = build_samples("Test", test, pre.events, pre.data.runs, pre.tr, window, average_repeats=True)
    pred = build_samples("Test", test, pre.events, predicted, pre.tr, window, average_repeats=True)
    return pred.x, observed.repeats


def permutation_p(pred: np.ndarray, observed: np.ndarray, r: np.ndarray, n_perm: int, seed: int) -> np.ndarray:
    """One-sided p per voxel that r `[V]` exceeds chance: predicted clip windows `pred` `[N, W, V]`
    are shuffled across clips against `observed` `[N, W, V]`; `(1 + #{r_perm >= r}) / (1 + n_perm)`."""
    n, w, v = pred.shape
    zp = zscore_columns(pred.reshape(n * w, v)).reshape(n, w, v)
    zo = zscore_columns(observed.reshape(n * w, v)).reshape(n, w, v)
    rng = np.random.default_rng(seed)
    exceed = np.zeros(v)
    for _ in progress(range(n_perm), "encoding permutations", unit="permutations"):
        r_perm = np.einsum("nwv,nwv->v", zp[rng.permutation(n)], zo) / (n * w)
        exceed += r_perm >= r - 1e-12
    return (1 + exceed) / (1 + n_perm)


# ----------------------------------------------------------------- regions
def voxel_regions(root: Path, subject: str, mask: np.ndarray, ev: np.ndarray, top_k: int) -> tuple[np.ndarray, str]:
    """A region name per kept voxel `[V]` and where the regions come from.

    With the demo's truth file, each voxel's tuning class (matched by [X, Y, Z] index; voxels the
    truth does not list are "untuned"); otherwise "auditory" for the `top_k` voxels of highest
    explainable variance `ev` `[V]` and "other" for the rest.
    """
    path = root / TRUTH_FILE.format(subject=subject)
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            if TRUTH_CLASS_KEY not in f or TRUTH_IJK_KEY not in f:
                raise B2MError(f"{path}: truth file lacks {TRUTH_CLASS_KEY!r} or {TRUTH_IJK_KEY!r}")
            classes, ijk = f[TRUTH_CLASS_KEY], f[TRUTH_IJK_KEY].astype(int)
        index = np.full(mask.shape, -1)
        index[mask] = np.arange(int(mask.sum()))
        inside = np.all((ijk >= 0) & (ijk < mask.shape), axis=1)
        rows = index[tuple(ijk[inside].T)]
        regions = np.full(int(mask.sum()), TRUTH_CLASSES[0], dtype=object)
        kept = rows >= 0
        regions[rows[kept]] = [TRUTH_CLASSES[int(c)] for c in classes[inside][kept]]
        return regions, f"simulation truth ({path.name})"
    regions = np.full(len(ev), "other", dtype=object)
    regions[np.argsort(-ev, kind="stable")[:top_k]] = "auditory"
    return regions, f"top {top_k} voxels by explainable variance"


# ----------------------------------------------------------------- files
def write_map(path: Path, values: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """Write voxel values `[V]` as a float32 NIfTI on the mask's grid (0 outside); returns the image."""
    volume = np.zeros(mask.shape, dtype=np.float32)
    volume[mask] = np.nan_to_num(values)
    image = nib.Nifti1Image(volume, affine)
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(image.to_bytes(), mtime=0))
    return image


def anatomy(pre: PreprocessedSubject) -> tuple[nib.Nifti1Image, str]:
    """The image the maps are drawn over, and what it is: fMRIPrep's preprocessed T1w in the BOLD's space
    when the derivatives hold one, else the mean EPI of the first Training run (always aligned with
    the maps; a raw BIDS T1w is not registered to the BOLD, so it is never used)."""
    first = pre.runs["Training"][0]
    if first.mask is not None:  # fMRIPrep derivatives: <derivatives>/<subject>/func/<bold>
        space = re.search(r"_space-([a-zA-Z0-9]+)", first.bold.name)
        anat = first.bold.parent.parent / "anat"
        for path in sorted(anat.glob(f"{first.subject}*_desc-preproc_T1w.nii*")):
            found = re.search(r"_space-([a-zA-Z0-9]+)", path.name)
            # In fMRIPrep's T1w space the T1w carries no space entity.
            if (found.group(1) if found else "T1w") == (space.group(1) if space else None):
                return nib.load(path), f"T1w ({path.name})"
    run = open_run(first.bold)
    return nib.Nifti1Image(mean_volume(run), run.affine), f"mean EPI of {first.bold.name}"


# ----------------------------------------------------------------- the analysis
def encoding_analysis(data_cfg: DictConfig, ecfg: DictConfig, out_dir: Path, seed: int) -> dict:
    """Fit and test the encoding models of every subject and space; write maps and tables.

    Returns metrics: `encoding/<subject>/<space>/{mean_r, mean_r_normalised, fraction_significant}`,
    `encoding/<subject>/<space>/<region>/mean_r`, `encoding/<subject>/noise_ceiling/<region>/mean_ev`,
    `encoding/<subject>/<a>_minus_<b>/<region>/mean_r` for space pairs, and the same keys without
    the subject (means over subjects).
    """
    out_dir = Path(out_dir)
    names = list(ecfg.spaces)
    if not names:
        raise B2MError("encoding.spaces: empty list")
    spaces = {name: space_by_name(name, "encoding.spaces") for name in names}
    delays = [int(d) for d in ecfg.delays_tr]
    if not delays or min(delays) < 0:
        raise B2MError(f"encoding.delays_tr: expected TRs >= 0, got {delays}")
    root = data_paths(data_cfg)["root"]
    per_subject: dict[str, dict[str, float]] = {}
    lines = ["# Encoding models", "", f"Delays {delays} TRs; Pearson r on the test runs (per-presentation windows, "
             f"4 repeats averaged); significance: {int(ecfg.n_perm)} clip permutations, BH-FDR q = {ecfg.fdr_q}.", ""]
    for subject in progress([subject_label(s) for s in data_cfg.subjects], "encoding models", unit="subjects"):
        pre = load_preprocessed(data_cfg, subject)
        background, background_name = anatomy(pre)
        clips = sorted({p.clip for evs in pre.events.values() for p in evs})
        folder = out_dir / subject
        rows: dict[str, float] = {}
        r_by_space: dict[str, np.ndarray] = {}
        ev = cc = regions = None
        designs: dict[str, dict[str, np.ndarray]] = {}
        r2: dict[str, np.ndarray] = {}
        for name, space in spaces.items():
            designs[name] = run_designs(pre, clip_targets(data_cfg, space, clips), delays)
            pred, repeats = fit_space(pre, designs[name], list(data_cfg.delays_tr), list(ecfg.alphas),
                                      int(ecfg.n_folds))
            n, n_rep, w, v = repeats.shape
            observed = repeats.mean(axis=1)
            if ev is None:
                single = repeats.transpose(1, 0, 2, 3).reshape(n_rep, n * w, v)
                ev, cc = explainable_variance(single), correlation_ceiling(single)
                if pre.regions is not None:
                    regions, source = pre.regions, "atlas regions (data.rois.atlas)"
                else:
                    regions, source = voxel_regions(root, subject, pre.data.mask, ev, int(ecfg.top_k))
                for region in _region_names(regions):
                    rows[f"noise_ceiling/{region}/mean_ev"] = float(ev[regions == region].mean())
                write_map(folder / "noise_ceiling_ev.nii.gz", ev, pre.data.mask, pre.data.affine)
                write_map(folder / "noise_ceiling_cc.nii.gz", cc, pre.data.mask, pre.data.affine)
            r = pearson_columns(pred.reshape(n * w, v), observed.reshape(n * w, v))
            p = permutation_p(pred, observed, r, int(ecfg.n_perm), seed)
            significant, _ = fdr_bh(p, float(ecfg.fdr_q))
            normalised = np.divide(r, cc, out=np.full(v, np.nan), where=cc > 0)
            r_by_space[name] = r
            r2[name] = r2_columns(pred.reshape(n * w, v), observed.reshape(n * w, v))
            rows[f"{name}/mean_r"] = float(r.mean())
            rows[f"{name}/mean_r_normalised"] = float(np.nanmean(normalised)) if np.isfinite(normalised).any() else None
            rows[f"{name}/fraction_significant"] = float(significant.mean())
            for region in _region_names(regions):
                rows[f"{name}/{region}/mean_r"] = float(r[regions == region].mean())
            image = write_map(folder / f"{name}_r.nii.gz", r, pre.data.mask, pre.data.affine)
            write_map(folder / f"{name}_r_normalised.nii.gz", normalised, pre.data.mask, pre.data.affine)
            write_map(folder / f"{name}_significant.nii.gz", significant.astype(np.float32), pre.data.mask,
                      pre.data.affine)
            plots.plot_map(image, background, folder / f"{name}_r.png", f"{subject} {name}: Pearson r (test runs)")
        for a, b in _space_pairs(spaces):
            diff = r_by_space[a] - r_by_space[b]
            for region in _region_names(regions):
                rows[f"{a}_minus_{b}/{region}/mean_r"] = float(diff[regions == region].mean())
            image = write_map(folder / f"{a}_minus_{b}_r.nii.gz", diff, pre.data.mask, pre.data.affine)
            plots.plot_map(image, background, folder / f"{a}_minus_{b}_r.png", f"{subject}: r({a}) - r({b})")
        pairs = _space_pairs(spaces) if ecfg.partition.enabled and _modalities_split(spaces) else []
        for a, b in pairs:
            joint = banded_predictions(pre, [designs[a], designs[b]], list(data_cfg.delays_tr), list(ecfg.alphas),
                                       int(ecfg.n_folds), [float(r) for r in ecfg.partition.ratios])
            parts = partition(r2[a], r2[b], r2_columns(joint.reshape(n * w, v), observed.reshape(n * w, v)))
            for part, values in parts.items():
                label = {"unique_a": f"unique_{a}", "unique_b": f"unique_{b}", "shared": "shared"}[part]
                key = f"{a}+{b}/{label}"
                rows[f"{key}/mean"] = float(values.mean())
                for region in _region_names(regions):
                    rows[f"{key}/{region}/mean"] = float(values[regions == region].mean())
                image = write_map(folder / f"{a}+{b}_{label}.nii.gz", values, pre.data.mask, pre.data.affine)
                plots.plot_map(image, background, folder / f"{a}+{b}_{label}.png",
                                  f"{subject}: {label.replace('_', ' ')} variance, {a} + {b} (test R²)")
        per_subject[subject] = rows
        lines += _subject_table(subject, rows, spaces, regions, source) + [f"Maps drawn over the {background_name}.", ""]
        lines += _partition_table(rows, pairs, regions)

    out = aggregate_subjects(per_subject, prefix="encoding/", sd=False)
    write_text(out_dir / "summary.md", "\n".join(lines) + "\n")
    return out


def _region_names(regions: np.ndarray) -> list[str]:
    return sorted(set(regions.tolist()))


def _modalities_split(spaces: dict[str, EmbeddingSpace]) -> bool:
    return {s.modality for s in spaces.values()} == {"audio", "text"}


def _partition_table(rows: dict, pairs: list[tuple[str, str]], regions: np.ndarray) -> list[str]:
    """Markdown: unique and shared test R² per region for each (audio, text) pair."""
    lines = []
    for a, b in pairs:
        labels = [f"unique_{a}", f"unique_{b}", "shared"]
        lines += [f"Variance partitioning, {a} + {b} (banded ridge; test R²):", "",
                  "| region | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for region in _region_names(regions) + ["all"]:
            key = "" if region == "all" else f"/{region}"
            lines.append(f"| {region} | " + " | ".join(f"{rows[f'{a}+{b}/{label}{key}/mean']:.4f}"
                                                     for label in labels) + " |")
        lines.append("")
    return lines


def _space_pairs(spaces: dict[str, EmbeddingSpace]) -> list[tuple[str, str]]:
    """(audio space, text space) pairs to compare; every pair when the modalities do not split."""
    audio = [n for n, s in spaces.items() if s.modality == "audio"]
    text = [n for n, s in spaces.items() if s.modality == "text"]
    if audio and text:
        return [(a, t) for a in audio for t in text]
    names = list(spaces)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def _subject_table(subject: str, rows: dict, spaces: dict[str, EmbeddingSpace], regions: np.ndarray,
                   source: str) -> list[str]:
    """Markdown: mean r per region (rows) and space (columns), with voxel counts and the noise ceiling."""
    names = _region_names(regions)
    header = ["region", "voxels", "mean EV"] + [f"{n} ({spaces[n].modality})" for n in spaces]
    lines = [f"## {subject}", "", f"Regions: {source}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for region in names:
        cells = [region, str(int((regions == region).sum())), f"{rows[f'noise_ceiling/{region}/mean_ev']:.3f}"]
        cells += [f"{rows[f'{n}/{region}/mean_r']:.3f}" for n in spaces]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["all", str(len(regions)), ""] + [f"{rows[f'{n}/mean_r']:.3f} ({rows[f'{n}/fraction_significant']:.0%} "
                                              f"significant)" for n in spaces]
    lines += ["| " + " | ".join(cells) + " |", ""]
    return lines
