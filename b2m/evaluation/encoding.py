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

Regions: an atlas's regions when `data.rois` names one (`b2m.data.rois`); else, with the demo
dataset's ground truth (`TRUTH_FILE`), its tuning classes; otherwise the `top_k` voxels of highest
explainable variance ("auditory") and the rest.

Computing and rendering are apart: `fit_subject` returns a subject's voxel maps (`SubjectEncoding`),
`subject_rows` their region means as `Result` rows, and `write_encoding` renders both: under
`out_dir/<subject>/` NIfTI maps in the BOLD's space (same affine, 0 outside the kept voxels) and
axial slices over the subject's anatomy (PNG and SVG, `anatomy`); `out_dir/summary.md` with the
region tables, whose values are the rows'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from omegaconf import DictConfig

from b2m.core.clips import Clip
from b2m.core.errors import B2MError
from b2m.core.io import write_text
from b2m.core.log import progress
from b2m.core.ridge import RidgeCV
from b2m.data.bids import Presentation, subject_label
from b2m.data.nifti import mean_volume, open_run, write_map
from b2m.data.samples import build_samples
from b2m.data.subjects import PreprocessedSubject, data_paths, load_preprocessed
from b2m.evaluation import plots
from b2m.evaluation.partition import banded_predictions, partition, r2_columns
from b2m.evaluation.results import Result, Results, subject_means
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


# ----------------------------------------------------------------- one subject
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


@dataclass
class SubjectEncoding:
    """One subject's encoding models: per-voxel maps `[V]` over the kept voxels of `mask` (C order).

    `r`, `normalised` (r / CC_max; NaN where CC_max is 0) and `significant` (BH-FDR) per space, in
    the config's order, with each space's modality in `modalities`; `ev` (explainable variance, a
    fraction) and `cc` (CC_max) the noise ceiling; `differences` r(a) - r(b) per space pair; `parts`
    the test R² per (audio, text) pair and part (`unique_<a>`, `unique_<b>`, `shared`); `regions` a
    region name per voxel and `region_source` where they come from; the maps' grid (`mask`
    `[X, Y, Z]`, `affine` in mm) and the image they are drawn over (`background`, `background_name`).
    """

    subject: str
    modalities: dict[str, str]
    r: dict[str, np.ndarray]
    normalised: dict[str, np.ndarray]
    significant: dict[str, np.ndarray]
    ev: np.ndarray
    cc: np.ndarray
    differences: dict[tuple[str, str], np.ndarray]
    parts: dict[tuple[str, str], dict[str, np.ndarray]]
    regions: np.ndarray
    region_source: str
    mask: np.ndarray
    affine: np.ndarray
    background: nib.Nifti1Image
    background_name: str


def fit_subject(data_cfg: DictConfig, ecfg: DictConfig, subject: str, spaces: dict[str, EmbeddingSpace],
                delays: list[int], seed: int) -> SubjectEncoding:
    """Fit and test the encoding model of every space (FIR `delays` in TRs) for `subject`, the noise
    ceiling, the space differences and, when enabled and the spaces split into audio and text, the
    variance partitions. Writes nothing."""
    pre = load_preprocessed(data_cfg, subject)
    background, background_name = anatomy(pre)
    clips = sorted({p.clip for evs in pre.events.values() for p in evs})
    window, alphas, n_folds = list(data_cfg.delays_tr), list(ecfg.alphas), int(ecfg.n_folds)
    designs: dict[str, dict[str, np.ndarray]] = {}
    r: dict[str, np.ndarray] = {}
    normalised: dict[str, np.ndarray] = {}
    significant: dict[str, np.ndarray] = {}
    r2: dict[str, np.ndarray] = {}
    ev = cc = None
    for name, space in spaces.items():
        designs[name] = run_designs(pre, clip_targets(data_cfg, space, clips), delays)
        pred, repeats = fit_space(pre, designs[name], window, alphas, n_folds)
        n, n_rep, w, v = repeats.shape
        observed = repeats.mean(axis=1)
        if ev is None:  # the BOLD's repeats are the same for every space
            single = repeats.transpose(1, 0, 2, 3).reshape(n_rep, n * w, v)
            ev, cc = explainable_variance(single), correlation_ceiling(single)
        r[name] = pearson_columns(pred.reshape(n * w, v), observed.reshape(n * w, v))
        p = permutation_p(pred, observed, r[name], int(ecfg.n_perm), seed)
        significant[name], _ = fdr_bh(p, float(ecfg.fdr_q))
        normalised[name] = np.divide(r[name], cc, out=np.full(v, np.nan), where=cc > 0)
        r2[name] = r2_columns(pred.reshape(n * w, v), observed.reshape(n * w, v))
    if pre.regions is not None:
        regions, source = pre.regions, "atlas regions (data.rois.atlas)"
    else:
        regions, source = voxel_regions(data_paths(data_cfg)["root"], subject, pre.data.mask, ev, int(ecfg.top_k))
    differences = {(a, b): r[a] - r[b] for a, b in _space_pairs(spaces)}
    parts: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    if ecfg.partition.enabled and _modalities_split(spaces):
        for a, b in _space_pairs(spaces):
            joint = banded_predictions(pre, [designs[a], designs[b]], window, alphas, n_folds,
                                       [float(x) for x in ecfg.partition.ratios])
            shares = partition(r2[a], r2[b], r2_columns(joint.reshape(n * w, v), observed.reshape(n * w, v)))
            parts[a, b] = {f"unique_{a}": shares["unique_a"], f"unique_{b}": shares["unique_b"],
                           "shared": shares["shared"]}
    return SubjectEncoding(subject, {name: s.modality for name, s in spaces.items()}, r, normalised, significant,
                           ev, cc, differences, parts, regions, source, pre.data.mask, pre.data.affine, background,
                           background_name)


def subject_rows(enc: SubjectEncoding) -> list[Result]:
    """The subject's results: the noise ceiling's mean EV per region; per space the mean r (all voxels and
    per region), the mean normalised r (None where no voxel has a ceiling) and the fraction of
    significant voxels; the mean r difference per space pair and region; the mean test R² of each
    partition part (all voxels and per region)."""
    names = _region_names(enc.regions)

    def by_region(values: np.ndarray, **fields) -> list[Result]:
        return [Result("encoding", subject=enc.subject, part=region, value=float(values[enc.regions == region].mean()),
                       **fields) for region in names]

    rows = by_region(enc.ev, set="noise_ceiling", metric="mean_ev")
    for name, r in enc.r.items():
        normalised = enc.normalised[name]
        rows += [Result("encoding", name, "mean_r", float(r.mean()), enc.subject),
                 Result("encoding", name, "mean_r_normalised",
                        float(np.nanmean(normalised)) if np.isfinite(normalised).any() else None, enc.subject),
                 Result("encoding", name, "fraction_significant", float(enc.significant[name].mean()), enc.subject)]
        rows += by_region(r, set=name, metric="mean_r")
    for (a, b), diff in enc.differences.items():
        rows += by_region(diff, set=f"{a}_minus_{b}", metric="mean_r")
    for (a, b), parts in enc.parts.items():
        for label, values in parts.items():
            rows.append(Result("encoding", f"{a}+{b}", "mean", float(values.mean()), enc.subject, choice=label))
            rows += by_region(values, set=f"{a}+{b}", choice=label, metric="mean")
    return rows


# ----------------------------------------------------------------- files
def write_encoding(out_dir: Path, encodings: list[SubjectEncoding], rows: list[Result], ecfg: DictConfig) -> None:
    """Write each subject's maps under `out_dir/<subject>/` (NIfTI; PNG and SVG slices of the r, difference
    and partition maps) and `out_dir/summary.md`, whose tables show `rows`."""
    results = Results(rows)
    lines = ["# Encoding models", "", f"Delays {[int(d) for d in ecfg.delays_tr]} TRs; Pearson r on the test runs "
             f"(per-presentation windows, 4 repeats averaged); significance: {int(ecfg.n_perm)} clip permutations, "
             f"BH-FDR q = {ecfg.fdr_q}.", ""]
    for enc in encodings:
        _write_maps(out_dir / enc.subject, enc)
        lines += _subject_table(enc, results) + [f"Maps drawn over the {enc.background_name}.", ""]
        lines += _partition_table(enc, results)
    write_text(out_dir / "summary.md", "\n".join(lines) + "\n")


def _write_maps(folder: Path, enc: SubjectEncoding) -> None:
    """One subject's NIfTI maps and their figures."""
    def nifti(name: str, values: np.ndarray) -> nib.Nifti1Image:
        return write_map(folder / f"{name}.nii.gz", values, enc.mask, enc.affine)

    nifti("noise_ceiling_ev", enc.ev)
    nifti("noise_ceiling_cc", enc.cc)
    for name, r in enc.r.items():
        nifti(f"{name}_r_normalised", enc.normalised[name])
        nifti(f"{name}_significant", enc.significant[name].astype(np.float32))
        plots.plot_map(nifti(f"{name}_r", r), enc.background, folder / f"{name}_r.png",
                       f"{enc.subject} {name}: Pearson r (test runs)")
    for (a, b), diff in enc.differences.items():
        plots.plot_map(nifti(f"{a}_minus_{b}_r", diff), enc.background, folder / f"{a}_minus_{b}_r.png",
                       f"{enc.subject}: r({a}) - r({b})")
    for (a, b), parts in enc.parts.items():
        for label, values in parts.items():
            plots.plot_map(nifti(f"{a}+{b}_{label}", values), enc.background, folder / f"{a}+{b}_{label}.png",
                           f"{enc.subject}: {label.replace('_', ' ')} variance, {a} + {b} (test R²)")


# ----------------------------------------------------------------- the analysis
def encoding_analysis(data_cfg: DictConfig, ecfg: DictConfig, out_dir: Path, seed: int) -> list[Result]:
    """Fit and test the encoding models of every subject and space (`fit_subject`); write maps and tables
    under `out_dir` (`write_encoding`).

    Returns the rows of every subject (`subject_rows`) and their means over subjects (no sd), flat
    keys `encoding/[<subject>/]<space>/{mean_r, mean_r_normalised, fraction_significant}`,
    `.../<space>/<region>/mean_r`, `.../noise_ceiling/<region>/mean_ev`,
    `.../<a>_minus_<b>/<region>/mean_r` and `.../<a>+<b>/<part>[/<region>]/mean`.
    """
    names = list(ecfg.spaces)
    if not names:
        raise B2MError("encoding.spaces: empty list")
    spaces = {name: space_by_name(name, "encoding.spaces") for name in names}
    delays = [int(d) for d in ecfg.delays_tr]
    if not delays or min(delays) < 0:
        raise B2MError(f"encoding.delays_tr: expected TRs >= 0, got {delays}")
    encodings = [fit_subject(data_cfg, ecfg, subject, spaces, delays, seed)
                 for subject in progress([subject_label(s) for s in data_cfg.subjects], "encoding models",
                                         unit="subjects")]
    rows = subject_means([row for enc in encodings for row in subject_rows(enc)], sd=False)
    write_encoding(Path(out_dir), encodings, rows, ecfg)
    return rows


def _region_names(regions: np.ndarray) -> list[str]:
    return sorted(set(regions.tolist()))


def _modalities_split(spaces: dict[str, EmbeddingSpace]) -> bool:
    return {s.modality for s in spaces.values()} == {"audio", "text"}


def _space_pairs(spaces: dict[str, EmbeddingSpace]) -> list[tuple[str, str]]:
    """(audio space, text space) pairs to compare; every pair when the modalities do not split."""
    audio = [n for n, s in spaces.items() if s.modality == "audio"]
    text = [n for n, s in spaces.items() if s.modality == "text"]
    if audio and text:
        return [(a, t) for a in audio for t in text]
    names = list(spaces)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def _subject_table(enc: SubjectEncoding, results: Results) -> list[str]:
    """Markdown: the subject's mean r per region (rows) and space (columns), with voxel counts and the
    noise ceiling, from `results`."""
    def value(**fields) -> float:
        return results.value(subject=enc.subject, section="encoding", **fields)

    header = ["region", "voxels", "mean EV"] + [f"{n} ({m})" for n, m in enc.modalities.items()]
    lines = [f"## {enc.subject}", "", f"Regions: {enc.region_source}.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for region in _region_names(enc.regions):
        cells = [region, str(int((enc.regions == region).sum())),
                 f"{value(set='noise_ceiling', part=region, metric='mean_ev'):.3f}"]
        cells += [f"{value(set=n, part=region, metric='mean_r'):.3f}" for n in enc.modalities]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["all", str(len(enc.regions)), ""] + [
        f"{value(set=n, part='', metric='mean_r'):.3f} ({value(set=n, metric='fraction_significant'):.0%} "
        f"significant)" for n in enc.modalities]
    lines += ["| " + " | ".join(cells) + " |", ""]
    return lines


def _partition_table(enc: SubjectEncoding, results: Results) -> list[str]:
    """Markdown: the subject's unique and shared test R² per region for each (audio, text) pair, from `results`."""
    lines = []
    for (a, b), parts in enc.parts.items():
        labels = list(parts)
        lines += [f"Variance partitioning, {a} + {b} (banded ridge; test R²):", "",
                  "| region | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for region in _region_names(enc.regions) + ["all"]:
            part = "" if region == "all" else region
            cells = [results.value(subject=enc.subject, section="encoding", set=f"{a}+{b}", choice=label, part=part,
                                   metric="mean") for label in labels]
            lines.append(f"| {region} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
        lines.append("")
    return lines
