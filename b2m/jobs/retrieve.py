"""The retrieve job: the nearest database music to each decoded test embedding of a training run.

Indexes `database` (any folder of audio, recursively) in the run's target space, resuming an
index in progress, then writes `retrieval_<subject>.json` and the top-k files per test clip
into `out_dir` (`b2m.reconstruction.retrieval`). With `select=brain` the top-k files of each clip are
the candidates of brain-guided selection (`b2m.reconstruction.selection`): `selection_<subject>.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from b2m.core import outputs
from b2m.core.config import check_values
from b2m.core.errors import B2MError
from b2m.core.runs import load_run
from b2m.reconstruction.retrieval import RetrievalIndex, build_index, retrieve_predictions
from b2m.reconstruction.selection import apply_selection, check_selection, clear_selection
from b2m.targets import build_space


def retrieve(cfg: DictConfig) -> dict[str, Any]:
    """Retrieve the top-k files for every subject's test predictions; returns `{subject: manifest}`."""
    check_values(cfg)
    run, out_dir = load_run(cfg.run), Path(cfg.out_dir)
    if cfg.link not in ("symlink", "copy"):
        raise B2MError(f"link: {cfg.link!r} is not 'symlink' or 'copy'")
    space = build_space(run.cfg.target)
    check_selection(cfg.select)
    database = Path(cfg.database)
    if not database.is_dir():
        raise B2MError(f"{database}: database folder not found")
    index_dir = Path(cfg.index_dir) if cfg.get("index_dir") else out_dir / "index"
    outputs.mark(out_dir, "retrieve")
    summary = build_index(database, index_dir, space)
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
