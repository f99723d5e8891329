"""The retrieve job: the nearest database music to each decoded test embedding of a training run.

Indexes `database` (any folder of audio, recursively) in the run's target space, resuming an
index in progress, then writes `retrieval_<subject>.json` and the top-k files per test clip
into `out_dir` (`b2m.reconstruction.retrieval`). With `select=brain` the top-k files of each clip
are the candidates of brain-guided selection (`b2m.reconstruction.selection`): `selection_<subject>.json`.
With `shards` > 1 the command line runs `index_shard` instead: it builds shard `shard` of the index
in `index_dir` and writes nothing to `out_dir`, so that n such jobs (a Hydra multirun on a cluster
launcher) build one index, which a run without shards completes and retrieves from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from b2m.core import outputs
from b2m.core.config import check_values
from b2m.core.errors import B2MError
from b2m.core.runs import Run, load_run
from b2m.reconstruction.retrieval import RetrievalIndex, Shard, build_index, retrieve_predictions
from b2m.reconstruction.selection import apply_selection, check_selection, clear_selection
from b2m.targets import build_space
from b2m.targets.base import EmbeddingSpace


def retrieve(cfg: DictConfig) -> dict[str, Any]:
    """Retrieve the top-k files for every subject's test predictions; returns `{subject: manifest}`."""
    run, space, database, index_dir = _inputs(cfg)
    out_dir = Path(cfg.out_dir)
    check_selection(cfg.select)
    outputs.mark(out_dir, "retrieve")
    summary = build_index(database, index_dir, space, workers=_workers(cfg.workers))
    if summary["files"] == 0:
        raise B2MError(f"{database}: no readable audio file to retrieve from")
    index = RetrievalIndex.load(index_dir, precision=cfg.precision)
    clear_selection(out_dir, list(run.subjects))
    manifests = {}
    for subject, predictions in run.subjects.items():
        # The stimulus track itself is never a reconstruction of its own clip.
        exclude = [c.track_name for c in run.test_clips(subject)] if cfg.exclude_stimulus else None
        manifests[subject] = retrieve_predictions(predictions, index, int(cfg.k), out_dir, exclude, cfg.link)
    candidates = {subject: {clip_id: [out_dir / e["file"] for e in clip["ranks"]] for clip_id, clip in m["clips"].items()}
                  for subject, m in manifests.items()}
    apply_selection(run, candidates, cfg.select, out_dir, {s: out_dir / f"retrieval_{s}.json" for s in manifests})
    return manifests


def index_shard(cfg: DictConfig) -> dict[str, Any]:
    """Build shard `cfg.shard` of `cfg.shards` of the run's index in `cfg.index_dir`; returns
    `build_index`'s summary. Writes nothing to out_dir."""
    if not cfg.get("index_dir"):
        raise B2MError("index_dir: a sharded build needs the index folder its shards share; give index_dir")
    _, space, database, index_dir = _inputs(cfg)
    return build_index(database, index_dir, space, workers=_workers(cfg.workers),
                       shard=Shard(int(cfg.shard), int(cfg.shards)))


def _inputs(cfg: DictConfig) -> tuple[Run, EmbeddingSpace, Path, Path]:
    """The checked config's run, its target space, the database folder and the index folder."""
    check_values(cfg)
    if cfg.link not in ("symlink", "copy"):
        raise B2MError(f"link: {cfg.link!r} is not 'symlink' or 'copy'")
    if not int(cfg.shard) < int(cfg.shards):
        raise B2MError(f"shard: {cfg.shard} is not one of the shards 0 to {int(cfg.shards) - 1}")
    run = load_run(cfg.run)
    database = Path(cfg.database)
    if not database.is_dir():
        raise B2MError(f"{database}: database folder not found")
    index_dir = Path(cfg.index_dir) if cfg.get("index_dir") else Path(cfg.out_dir) / "index"
    return run, build_space(run.cfg.target), database, index_dir


def _workers(workers: int | str) -> int:
    """Decoding processes: `auto` is one per CPU this process may use."""
    return len(os.sched_getaffinity(0)) if workers == "auto" else int(workers)
