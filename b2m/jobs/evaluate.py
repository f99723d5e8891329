"""The evaluate job: everything a reviewer needs about one training run.

Writes a folder `.<name>.partial` beside `out_dir` and renames it onto `out_dir` at the end (a
failed or killed evaluation leaves the previous one, or nothing). `out_dir` holds:
  results.json   the results as rows (`b2m.evaluation.results`), which everything below renders
  metrics.json   decoding metrics per subject and across subjects with bootstrap 95% intervals and
                 baselines; reconstruction metrics (retrieved / generated audio) in audio spaces; genre
                 class agreement; tag agreement of reconstructions (musicnn); leave-one-genre-out; encoding-model summaries (when enabled); human
                 identification accuracy of a listening test (when `listening` names its results)
  *.png          metrics with intervals, per genre, confusion matrices
  summary.md     the tables in Markdown
  report/        the listening report (index.html), when `report.enabled`
  encoding/      voxel maps (NIfTI, PNG) and tables, when `encoding.enabled`
"""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import DictConfig

from b2m.core import outputs
from b2m.core.config import check_values, choices
from b2m.core.errors import B2MError
from b2m.core.io import write_json
from b2m.core.runs import Run, load_run
from b2m.data.bids import subject_label
from b2m.jobs import tracking
from b2m.evaluation.decoding import decoding_sets, score_sets
from b2m.evaluation.encoding import encoding_analysis
from b2m.evaluation.genre import genre_section
from b2m.evaluation.listening import read_listening
from b2m.evaluation.logo import logo_section
from b2m.evaluation.plots import write_figures
from b2m.evaluation.reconstruction import (ReconSet, read_reconstructions, reconstruction_sets, reconstruction_space,
                                           selection_differences)
from b2m.evaluation.report import write_report
from b2m.evaluation.results import Result, Results
from b2m.evaluation.summary import write_summary
from b2m.evaluation.tags import TagResults, tag_section, tagger
from b2m.evaluation.tables import tables
from b2m.targets import EmbeddingSpace, build_space


def evaluate(cfg: DictConfig) -> Results:
    """Score the run `cfg.run`; writes `cfg.out_dir` (see the module doc) and returns the results."""
    check_values(cfg)
    run = load_run(cfg.run)
    final = Path(cfg.out_dir)
    work = final.parent / f".{final.name}.partial"
    for p in run.subjects.values():
        if len(p.pred) < 2:
            raise B2MError(f"{run.path / 'predictions' / (p.subject + '.npz')}: {len(p.pred)} test clip(s); "
                           f"identification needs at least 2")
    unknown = [name for name in cfg.spaces if name not in choices("target")]
    if unknown:
        raise B2MError(f"config: spaces: unknown space {unknown[0]!r}; known: {choices('target')}")
    shown = [subject_label(s) for s in cfg.report.subjects or []]
    if any(s not in run.subjects for s in shown):
        raise B2MError(f"config: report.subjects: {[s for s in shown if s not in run.subjects][0]} is not a subject "
                       f"of {run.path} (it has {', '.join(run.subjects)})")
    # Listening-test results are read now: a bad file is an error before anything is written.
    test_clips = {subject: p.clip_ids for subject, p in run.subjects.items()}
    listening = read_listening(Path(str(cfg.listening)), float(cfg.ci_level), test_clips) if cfg.listening else []
    recon = read_reconstructions(cfg, run)
    outputs.remove_output(work, "evaluate")  # left by a killed evaluation
    # One object per space for the whole evaluation: a model space loads its weights once.
    own = build_space(run.cfg.target)
    spaces = {name: reconstruction_space(name, run, own) for name in cfg.spaces} if recon else {}
    # Built before anything is written: without the musicnn wheel this is the one-line error.
    tag_space = tagger(str(cfg.tags.weights)) if cfg.tags.enabled and recon else None

    try:
        outputs.mark(work, "evaluate")
        results = _write(cfg, run, recon, own, spaces, tag_space, listening, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    outputs.replace_output(work, final, "evaluate")
    if cfg.wandb:
        tracking.log_evaluation(run.cfg, run.path, results.flat())
    return results


def _write(cfg: DictConfig, run: Run, recon: list[ReconSet], own: EmbeddingSpace, spaces: dict[str, EmbeddingSpace],
           tag_space: EmbeddingSpace | None, listening: list[Result], out_dir: Path) -> Results:
    """Everything the evaluation writes, into `out_dir`; returns the results."""
    seed, n_boot, level = int(cfg.seed), int(cfg.n_boot), float(cfg.ci_level)
    results = Results([Result("run", "", "n_test_clips", len(next(iter(run.subjects.values())).clip_ids)),
                       Result("run", "", "n_boot", n_boot), Result("run", "", "ci_level", level)])
    sets = decoding_sets(run, seed)
    recon_sets = reconstruction_sets(run, recon, spaces, int(cfg.max_draws), seed)
    for subject, extra in recon_sets.items():
        sets[subject] += extra
    results.add(score_sets(sets, n_boot, seed, level, selection_differences(recon_sets)))
    notes: list[str] = []
    decoded_genres: dict[str, dict[str, str]] = {}
    confusions = {}
    if cfg.genre:
        genre = genre_section(run, own, recon_sets, spaces, n_boot, seed, level)
        results.add(genre.rows)
        decoded_genres, confusions = genre.decoded, genre.confusions
    tags = TagResults([])
    if tag_space is not None:
        tags = tag_section(run, recon, tag_space, cfg.tags, int(cfg.max_draws), n_boot, seed, level)
        results.add(tags.rows)
    if cfg.logo:
        rows, note = logo_section(run, own)
        results.add(rows)
        notes.append(note)
    if cfg.encoding.enabled:
        results.add(encoding_analysis(run.cfg.data, cfg.encoding, out_dir / "encoding", seed))
    results.add(listening)
    write_json(out_dir / "metrics.json", results.flat())
    results.write(out_dir / "results.json")

    figures = write_figures(results, confusions, out_dir)
    write_summary(out_dir / "summary.md", results, figures, notes)
    if cfg.report.enabled:
        write_report(out_dir / "report", run, tables(results), figures, recon, decoded_genres, cfg.report, out_dir,
                     seed, level, tags)
    return results
