"""Reconstructed audio (retrieved or generated) of each test clip, embedded and scored.

The manifests are read by the modules that write them (`b2m.reconstruction.retrieval`,
`b2m.reconstruction.musicgen.batch`): a reconstruction set maps subject -> clip id ->
audio files (best rank / sample 0 first). Here they are held to the run (`Manifest.check`: every
subject and test clip, made from its predictions, files unchanged) and embedded in audio spaces, to be
identified against the stimuli.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from b2m.core.config import group_config
from b2m.core.errors import B2MError
from b2m.core.metrics import Standardiser, derange
from b2m.core.runs import Run
from b2m.evaluation.decoding import Difference, ScoredSet
from b2m.evaluation.results import RANDOM_GENERATOR
from b2m.reconstruction import Reconstructions
from b2m.reconstruction.musicgen.batch import read_generated
from b2m.reconstruction.retrieval import read_retrieval
from b2m.reconstruction.selection import read_selection
from b2m.targets import EmbeddingSpace, space_by_name
from b2m.targets.dataset import clip_targets, embed_files


class FileEmbeddings:
    """Audio files embedded in one space, each file once: a selection's brain, first and random
    candidates are files of the full set too, and several subjects share files."""

    def __init__(self, space: EmbeddingSpace) -> None:
        self.space = space
        self.done: dict[Path, np.ndarray] = {}

    def __call__(self, files: list[Path]) -> np.ndarray:
        """Embeddings `[len(files), L, D]` (see `embed_files`)."""
        todo = [f for f in dict.fromkeys(files) if f not in self.done]
        self.done.update(zip(todo, embed_files(self.space, todo)))
        return np.stack([self.done[f] for f in files]) if files else np.zeros((0, *self.space.shape), np.float32)


def reconstruction_draws(embed: FileEmbeddings, per_clip: dict[str, list[Path]], clip_ids: list[str],
                         max_draws: int) -> np.ndarray:
    """Embeddings `[K, N, L, D]`: draw k is each clip's k-th file (rank k+1 or sample k), for the
    `N` clips `clip_ids`; K is the smallest file count over the clips, capped at `max_draws`."""
    k = min(max_draws, min(len(per_clip[c]) for c in clip_ids))
    files = [per_clip[c][j] for j in range(k) for c in clip_ids]
    return embed(files).reshape(k, len(clip_ids), *embed.space.shape)


@dataclass(frozen=True)
class ReconSet:
    """One set of reconstructions: `kind` (retrieval, generated), brain-guided selection's `choice`
    (brain, first, random; "" for every rank / sample), the files per subject and clip, and a `caveat`
    said wherever they are shown (a random-weight generator's audio)."""

    kind: str
    choice: str
    files: Reconstructions
    caveat: str = ""

    @property
    def label(self) -> str:
        """`retrieval`, `generated/brain`, ...: the report's folder and column for these files."""
        return f"{self.kind}/{self.choice}" if self.choice else self.kind


def read_reconstructions(cfg: DictConfig, run: Run) -> list[ReconSet]:
    """The retrieval and generation outputs named in the evaluate config, checked against the predictions.

    Kinds: `retrieval`, `generated` (every rank / sample) and, where brain-guided selection was made,
    the choices `brain`, `first` and `random` (one file per clip: the selected candidate, the first and a
    random one, `b2m.reconstruction.selection`)."""
    recon: list[ReconSet] = []
    for kind, folder in (("retrieval", cfg.retrieval), ("generated", cfg.generated)):
        if not folder:
            continue
        manifest = read_retrieval(folder, sorted(run.subjects)) if kind == "retrieval" else read_generated(folder)
        manifest.check(run)
        caveat = RANDOM_GENERATOR if manifest.random_weights else ""
        recon.append(ReconSet(kind, "", manifest.files, caveat))
        recon += [ReconSet(kind, choice, per_subject, caveat)
                  for choice, per_subject in read_selection(manifest).items()]
    return recon


def reconstruction_space(name: str, run: Run, own: EmbeddingSpace) -> EmbeddingSpace:
    """An audio space by config name: the run's own target space `own` if its config builds that space's
    class (with the run's settings), else `b2m/conf/target/<name>.yaml`."""
    same_class = run.cfg.target.get("_target_") == group_config("target", name)._target_
    space = own if same_class else space_by_name(name, "spaces")
    if space.modality != "audio":
        raise B2MError(f"spaces: {name!r} embeds {space.modality}, reconstructions need an audio space")
    return space


def reconstruction_sets(run: Run, recon: list[ReconSet], spaces: dict[str, EmbeddingSpace],
                        max_draws: int, seed: int) -> dict[str, list[ScoredSet]]:
    """Per subject, a scored set for every reconstruction set and audio space (and its `shuffled`
    baseline), standardised by the subject's training clips embedded in that space."""
    sets: dict[str, list[ScoredSet]] = {}
    embedded = {name: FileEmbeddings(space) for name, space in spaces.items()}
    for rec in recon:
        for subject, per_clip in rec.files.items():
            by_id = {c.clip_id: c for c in run.test_clips(subject)}
            ids = [c for c in run.subjects[subject].clip_ids if c in per_clip]
            for name, space in spaces.items():
                true = np.stack([v for v in clip_targets(run.cfg.data, space, [by_id[c] for c in ids]).values()])
                training = clip_targets(run.cfg.data, space, run.training_clips(subject))
                scale = Standardiser.fit(np.stack(list(training.values())))
                emb = reconstruction_draws(embedded[name], per_clip, ids, max_draws)
                fields = dict(section="reconstruction", set=rec.kind, choice=rec.choice, space=name,
                              caveat=rec.caveat)
                sets.setdefault(subject, []).append(ScoredSet(emb, true, ids, scale, **fields))
                # The first and random candidates are comparisons for the selected one, not sets of their own.
                if rec.choice not in ("first", "random"):
                    shuffled = np.stack([derange(d, seed) for d in emb])
                    sets[subject].append(ScoredSet(shuffled, true, ids, scale, **fields, baseline="shuffled"))
    return sets


def selection_differences(recon_sets: dict[str, list[ScoredSet]]) -> list[Difference]:
    """The paired differences that show what brain-guided selection buys: for every selected set,
    `brain_minus_first` and `brain_minus_random` (section `selection`)."""
    selected = {s.name: s for per_subject in recon_sets.values() for s in per_subject
                if s.choice == "brain" and not s.baseline}
    out = []
    for name, brain in selected.items():
        for other in ("first", "random"):
            like = replace(brain, section="selection", choice=f"brain_minus_{other}")
            out.append(Difference(like, name, replace(brain, choice=other).name))
    return out
