"""Reconstructed audio (retrieved or generated) of each test clip, embedded and scored.

The manifests are read by the modules that write them (`b2m.reconstruction.retrieval`,
`b2m.reconstruction.musicgen.batch`): a reconstruction set maps subject -> clip id ->
audio files (best rank / sample 0 first). Here they are held to the run (`Manifest.check`: every
subject and test clip, made from its predictions, files unchanged) and embedded in audio spaces, to be
identified against the stimuli.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from b2m.core.config import group_config
from b2m.core.errors import B2MError
from b2m.core.metrics import Standardiser, derange
from b2m.core.runs import Run
from b2m.evaluation.decoding import ScoredSet
from b2m.reconstruction import Reconstructions
from b2m.reconstruction.musicgen.batch import read_generated
from b2m.reconstruction.retrieval import read_retrieval
from b2m.reconstruction.selection import read_selection
from b2m.targets import EmbeddingSpace, build_space, space_by_name
from b2m.targets.dataset import clip_targets, embed_files


def reconstruction_draws(space: EmbeddingSpace, per_clip: dict[str, list[Path]], clip_ids: list[str],
                         max_draws: int) -> np.ndarray:
    """Embeddings `[K, N, L, D]`: draw k is each clip's k-th file (rank k+1 or sample k), for the
    `N` clips `clip_ids`; K is the smallest file count over the clips, capped at `max_draws`."""
    k = min(max_draws, min(len(per_clip[c]) for c in clip_ids))
    files = [per_clip[c][j] for j in range(k) for c in clip_ids]
    return embed_files(space, files).reshape(k, len(clip_ids), *space.shape)


def read_reconstructions(cfg: DictConfig, run: Run) -> dict[str, Reconstructions]:
    """The retrieval and generation outputs named in the evaluate config, checked against the predictions.

    Kinds: `retrieval`, `generated` (every rank / sample) and, where brain-guided selection was made,
    `<kind>/brain`, `<kind>/first` and `<kind>/random` (one file per clip: the selected candidate, the
    first and a random one, `b2m.reconstruction.selection`)."""
    recon: dict[str, Reconstructions] = {}
    for kind, folder in (("retrieval", cfg.retrieval), ("generated", cfg.generated)):
        if not folder:
            continue
        manifest = read_retrieval(folder, sorted(run.subjects)) if kind == "retrieval" else read_generated(folder)
        manifest.check(run)
        recon[kind] = manifest.files
        for choice, per_subject in read_selection(manifest).items():
            recon[f"{kind}/{choice}"] = per_subject
    return recon


def reconstruction_space(name: str, run: Run) -> EmbeddingSpace:
    """An audio space by config name: the run's own target config if it builds that space's class
    (with the run's settings), else `b2m/conf/target/<name>.yaml`."""
    packaged = space_by_name(name, "spaces")
    same_class = run.cfg.target.get("_target_") == group_config("target", name)._target_
    space = build_space(run.cfg.target) if same_class else packaged
    if space.modality != "audio":
        raise B2MError(f"spaces: {name!r} embeds {space.modality}, reconstructions need an audio space")
    return space


def reconstruction_sets(run: Run, recon: dict[str, Reconstructions], spaces: dict[str, EmbeddingSpace],
                        max_draws: int, seed: int) -> dict[str, dict[str, ScoredSet]]:
    """`sets[subject]["<kind>/<space>"]` (and its `.../shuffled` baseline) for every reconstruction kind
    and audio space, standardised by the subject's training clips embedded in that space."""
    sets: dict[str, dict[str, ScoredSet]] = {}
    for kind, per_subject in recon.items():
        for subject, per_clip in per_subject.items():
            by_id = {c.clip_id: c for c in run.test_clips(subject)}
            ids = [c for c in run.subjects[subject].clip_ids if c in per_clip]
            for name, space in spaces.items():
                true = np.stack([v for v in clip_targets(run.cfg.data, space, [by_id[c] for c in ids]).values()])
                training = clip_targets(run.cfg.data, space, run.training_clips(subject))
                scale = Standardiser.fit(np.stack(list(training.values())))
                emb = reconstruction_draws(space, per_clip, ids, max_draws)
                shuffled = ScoredSet(np.stack([derange(d, seed) for d in emb]), true, ids, scale)
                sets.setdefault(subject, {})[f"{kind}/{name}"] = ScoredSet(emb, true, ids, scale)
                # The first and random candidates are comparisons for the selected one, not sets of their own.
                if not kind.endswith(("/first", "/random")):
                    sets[subject][f"{kind}/{name}/shuffled"] = shuffled
    return sets


def selection_differences(recon_sets: dict[str, dict[str, ScoredSet]]) -> dict[str, tuple[str, str]]:
    """The paired differences that show what brain-guided selection buys: for every selected set
    `<kind>/brain/<space>`, `<kind>/brain_minus_first/<space>` and `<kind>/brain_minus_random/<space>`."""
    prefixes = {p for per_subject in recon_sets.values() for p in per_subject}
    out = {}
    for prefix in sorted(prefixes):
        kind, _, rest = prefix.partition("/brain/")
        if rest and "/" not in rest:
            for other in ("first", "random"):
                out[f"{kind}/brain_minus_{other}/{rest}"] = (prefix, f"{kind}/{other}/{rest}")
    return out
