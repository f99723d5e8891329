"""The evaluation job behind `evaluate.py`: everything a reviewer needs about one training run.

Writes into `out_dir`:
  metrics.json   decoding metrics per subject and across subjects with bootstrap 95% intervals and
                 baselines; reconstruction metrics (retrieved / generated audio) in audio spaces; genre
                 class agreement; leave-one-genre-out; encoding-model summaries (when enabled)
  *.png          metrics with intervals, per genre, confusion matrices
  summary.md     the tables in Markdown
  report/        the listening report (index.html), when `report.enabled`
  encoding/      voxel maps (NIfTI, PNG) and tables, when `encoding.enabled`
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from b2m.config import CONFIG_DIR
from b2m.data.clips import GENRES
from b2m.data.datamodule import clip_targets, load_subject
from b2m.errors import B2MError
from b2m.evaluation import plots
from b2m.evaluation.decoding import ScoredSet, proportion_ci, score_sets
from b2m.evaluation.encoding import encoding_analysis
from b2m.evaluation.genre import fit_genre_classifier, genre_probabilities, genre_scores
from b2m.evaluation.logo import leave_one_genre_out
from b2m.evaluation.metrics import baseline_predictions, derange
from b2m.evaluation.reconstruction import Reconstructions, read_generated, read_retrieval, reconstruction_draws
from b2m.evaluation.report import write_report
from b2m.evaluation.run import TrainingRun, load_run
from b2m.evaluation.summary import decoding_prefixes, genre_sets, write_summary
from b2m.io import write_json
from b2m.targets import EmbeddingSpace, build_space

CHANCE = {"id_acc": 0.5, "genre": 1 / len(GENRES)}


def evaluate(cfg: DictConfig) -> dict:
    """Score the run `cfg.run`; writes `cfg.out_dir` (see the module doc) and returns the metrics."""
    run = load_run(cfg.run)
    out_dir = Path(cfg.out_dir)
    seed, n_boot, level = int(cfg.seed), int(cfg.n_boot), float(cfg.ci_level)
    if n_boot < 1 or not 0 < level < 1:
        raise B2MError(f"n_boot / ci_level: need n_boot >= 1 and 0 < ci_level < 1, got {n_boot}, {level}")
    recon = read_reconstructions(cfg, run)
    spaces = {name: reconstruction_space(name, run) for name in cfg.spaces} if recon else {}

    sets = decoding_sets(run, seed)
    draws = reconstruction_sets(run, recon, spaces, int(cfg.max_draws), seed, sets)
    metrics: dict = {"n_test_clips": len(next(iter(run.subjects.values())).clip_ids), "n_boot": n_boot,
                     "ci_level": level, **score_sets(sets, n_boot, seed, level)}
    notes: list[str] = []
    decoded_genres: dict[str, dict[str, str]] = {}
    if cfg.genre:
        metrics.update(genre_section(run, draws, spaces, out_dir, n_boot, seed, level, decoded_genres))
    if cfg.logo:
        rows, note = logo_section(run)
        metrics.update(rows)
        notes.append(note)
    if cfg.encoding.enabled:
        metrics.update(encoding_analysis(run.cfg.data, cfg.encoding, out_dir / "encoding", seed))
    # Strict JSON: an undefined value (e.g. an interval with no finite resample) is null, not NaN.
    metrics = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
    write_json(out_dir / "metrics.json", metrics)

    figures = write_figures(metrics, out_dir)
    write_summary(out_dir / "summary.md", metrics, figures, notes)
    if cfg.report.enabled:
        write_report(out_dir / "report", run, metrics, figures, recon, decoded_genres, cfg.report, out_dir)
    return metrics


# ----------------------------------------------------------------- inputs
def read_reconstructions(cfg: DictConfig, run: TrainingRun) -> dict[str, Reconstructions]:
    """The retrieval and generation outputs named in the config, checked against the predictions."""
    recon: dict[str, Reconstructions] = {}
    if cfg.retrieval:
        recon["retrieval"] = read_retrieval(cfg.retrieval, sorted(run.subjects))
    if cfg.generated:
        recon["generated"] = read_generated(cfg.generated)
    for kind, per_subject in recon.items():
        source = cfg.retrieval if kind == "retrieval" else cfg.generated
        for subject, per_clip in per_subject.items():
            if subject not in run.subjects:
                raise B2MError(f"{source}: subject {subject} has no predictions in {run.path / 'predictions'}")
            unknown = sorted(set(per_clip) - set(run.subjects[subject].clip_ids))
            if unknown:
                raise B2MError(f"{source}: clip {unknown[0]} of {subject} is not among its test predictions")
    return recon


def reconstruction_space(name: str, run: TrainingRun) -> EmbeddingSpace:
    """An audio space by name: the run's own target config if it is that space, else configs/target/<name>.yaml."""
    if run.cfg.target.name == name:
        return run.space()
    path = CONFIG_DIR / "target" / f"{name}.yaml"
    if not path.is_file():
        raise B2MError(f"spaces: no config {path} for space {name!r}")
    params = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    space = build_space(params.pop("name"), **params)
    if space.modality != "audio":
        raise B2MError(f"spaces: {name!r} embeds {space.modality}, reconstructions need an audio space")
    return space


# ----------------------------------------------------------------- decoding and reconstruction metrics
def decoding_sets(run: TrainingRun, seed: int) -> dict[str, dict[str, ScoredSet]]:
    """`test` and the two baselines of every subject as scored sets."""
    sets: dict[str, dict[str, ScoredSet]] = {}
    for subject, p in run.subjects.items():
        base = baseline_predictions(p.pred, p.train_mean, seed)
        sets[subject] = {"test": ScoredSet(p.pred[None], p.true, p.clip_ids)}
        for name, pred in base.items():
            sets[subject][f"baseline/{name}"] = ScoredSet(pred[None], p.true, p.clip_ids)
    return sets


def reconstruction_sets(run: TrainingRun, recon: dict[str, Reconstructions], spaces: dict[str, EmbeddingSpace],
                        max_draws: int, seed: int, sets: dict[str, dict[str, ScoredSet]]) -> dict:
    """Add `<kind>/<space>` (and its `shuffled` baseline) to `sets`; returns the scored sets by
    `(subject, kind, space)` for the genre classifier."""
    draws: dict[tuple[str, str, str], ScoredSet] = {}
    for kind, per_subject in recon.items():
        for subject, per_clip in per_subject.items():
            by_id = {c.clip_id: c for c in run.test_clips(subject)}
            ids = [c for c in run.subjects[subject].clip_ids if c in per_clip]
            for name, space in spaces.items():
                true = np.stack([v for v in clip_targets(run.cfg.data, space, [by_id[c] for c in ids]).values()])
                emb = reconstruction_draws(space, per_clip, ids, max_draws)
                scored = ScoredSet(emb, true, ids)
                shuffled = ScoredSet(np.stack([derange(d, seed) for d in emb]), true, ids)
                sets[subject][f"{kind}/{name}"] = scored
                sets[subject][f"{kind}/{name}/shuffled"] = shuffled
                draws[(subject, kind, name)] = scored
    return draws


# ----------------------------------------------------------------- genre class agreement
def genre_section(run: TrainingRun, draws: dict, spaces: dict[str, EmbeddingSpace], out_dir: Path, n_boot: int,
                  seed: int, level: float, decoded: dict[str, dict[str, str]]) -> dict:
    """`genre/<set>/{acc,top3,agreement,acc/<genre>}` for set = true (ceiling), pred and each reconstruction;
    confusion PNGs; fills `decoded[subject][clip_id]` with the genre decoded from the prediction."""
    per_subject: dict[str, dict] = {}
    correct: dict[str, list] = {}
    confusions: dict[str, np.ndarray] = {}
    classifiers: dict[tuple, object] = {}

    def classifier(space: EmbeddingSpace, subject: str):
        train = run.clips(subject, "Training")
        key = (space.cache_key(), tuple(train))
        if key not in classifiers:
            emb = np.stack(list(clip_targets(run.cfg.data, space, train).values()))
            classifiers[key] = fit_genre_classifier(emb, [c.genre for c in train], seed)
        return classifiers[key]

    def add(subject: str, name: str, scores: dict, ok: np.ndarray, ids: list[str]) -> None:
        confusions[name] = confusions.get(name, 0) + scores.pop("confusion")
        per_subject.setdefault(subject, {}).update({f"genre/{name}/{k}": v for k, v in scores.items()})
        correct.setdefault(name, []).append((ok, ids))

    own = run.space()
    for subject, p in run.subjects.items():
        clf = classifier(own, subject)
        genres = [c.genre for c in run.test_clips(subject)]
        truth = np.array([GENRES.index(g) for g in genres])
        ref = genre_probabilities(clf, p.true)
        proba = genre_probabilities(clf, p.pred)
        add(subject, "true", genre_scores(ref, genres), (ref.argmax(1) == truth)[None], p.clip_ids)
        add(subject, "pred", genre_scores(proba, genres, ref), (proba.argmax(1) == truth)[None], p.clip_ids)
        decoded[subject] = {c: GENRES[g] for c, g in zip(p.clip_ids, proba.argmax(1))}
    for (subject, kind, name), scored in draws.items():
        clf = classifier(spaces[name], subject)
        genres = [c.genre for c in run.test_clips(subject) if c.clip_id in set(scored.clip_ids)]
        truth = np.array([GENRES.index(g) for g in genres])
        ref = genre_probabilities(clf, scored.true)
        proba = np.stack([genre_probabilities(clf, d) for d in scored.draws])  # [K, N, 10]
        scores = genre_scores(proba.reshape(-1, len(GENRES)), genres * len(proba), np.tile(ref, (len(proba), 1)))
        add(subject, f"{kind}/{name}", scores, proba.argmax(2) == truth, scored.clip_ids)

    rows = mean_over_subjects(per_subject)
    rows["genre/chance"] = CHANCE["genre"]
    for name, items in correct.items():
        rows[f"genre/{name}/acc_ci_low"], rows[f"genre/{name}/acc_ci_high"] = proportion_ci(items, n_boot, seed, level)
    for name, confusion in confusions.items():
        plots.plot_confusion(confusion, out_dir / confusion_file(name), f"genre of {name} (all subjects)")
    return rows


def confusion_file(genre_set: str) -> str:
    """The confusion matrix PNG of a genre-scored set (`pred`, `retrieval/acoustic`, ...)."""
    return f"confusion_{genre_set.replace('/', '_')}.png"


def mean_over_subjects(per_subject: dict[str, dict]) -> dict:
    """`<subject>/<key>` for every row, `<key>` (mean over the subjects that have a value) and `<key>_sd`."""
    out: dict = {}
    keys: list[str] = []
    for subject, rows in per_subject.items():
        out.update({f"{subject}/{k}": v for k, v in rows.items()})
        keys += [k for k in rows if k not in keys]
    for key in keys:
        values = [rows[key] for rows in per_subject.values() if rows.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
        out[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)
    return out


# ----------------------------------------------------------------- leave one genre out
def logo_section(run: TrainingRun) -> tuple[dict, str]:
    """`logo/<genre>/{within,all}` per subject and mean; the ridge refit uses the run's ridge settings
    when the run is a ridge run, else configs/decoder/ridge.yaml (noted in the returned note)."""
    decoder = run.cfg.get("decoder", {})
    if decoder.get("name") == "ridge":
        ridge, note = decoder, "leave-one-genre-out: the run's ridge decoder refit without each genre"
    else:
        ridge = OmegaConf.load(CONFIG_DIR / "decoder" / "ridge.yaml")
        note = (f"leave-one-genre-out: the run's decoder is {decoder.get('name', 'unknown')!r}, not ridge; "
                f"a ridge decoder (configs/decoder/ridge.yaml) was refit instead, not the run's decoder")
    space = run.space()
    per_subject = {}
    for subject in run.subjects:
        splits = load_subject(run.cfg.data, subject, space, int(run.cfg.get("seed", 0)))
        rows = leave_one_genre_out(splits, list(ridge.alphas), int(ridge.n_folds))
        per_subject[subject] = {f"logo/{k}": v for k, v in rows.items()}
    out = mean_over_subjects(per_subject)
    out["logo/decoder"] = note
    return out, note


# ----------------------------------------------------------------- figures
def write_figures(metrics: dict, out_dir: Path) -> list[str]:
    """The PNGs of the tables; returns their file names (relative to `out_dir`)."""
    names = []
    rows = [(p, metrics[f"{p}/id_acc"], metrics[f"{p}/id_acc_ci_low"], metrics[f"{p}/id_acc_ci_high"])
            for p in decoding_prefixes(metrics)]
    plots.plot_bars(rows, out_dir / "identification.png", "identification accuracy (mean over subjects, "
                    f"{metrics['ci_level']:.0%} bootstrap CI)", "identification accuracy", CHANCE["id_acc"])
    names.append("identification.png")
    sets = genre_sets(metrics)
    if sets:
        rows = [(s, metrics[f"genre/{s}/acc"], metrics[f"genre/{s}/acc_ci_low"], metrics[f"genre/{s}/acc_ci_high"])
                for s in sets]
        plots.plot_bars(rows, out_dir / "genre_accuracy.png", "genre classification of decoded embeddings",
                        "accuracy", CHANCE["genre"])
        series = {s: {g: metrics.get(f"genre/{s}/acc/{g}") for g in GENRES} for s in sets}
        plots.plot_per_genre(series, out_dir / "genre_per_genre.png", "genre accuracy per genre", "accuracy",
                             CHANCE["genre"])
        names += ["genre_accuracy.png", "genre_per_genre.png"]
        names += [confusion_file(s) for s in sets]
    if any(k.startswith("logo/") for k in metrics):
        series = {f"held-out genre, {w}": {g: metrics.get(f"logo/{g}/{w}") for g in GENRES} for w in ("within", "all")}
        plots.plot_per_genre(series, out_dir / "logo.png", "leave-one-genre-out identification", "id_acc",
                             CHANCE["id_acc"])
        names.append("logo.png")
    return names
