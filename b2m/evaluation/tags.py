"""Reconstructions judged by a trained music tagger: do they carry the stimulus's genre, instruments, mood?

musicnn (Pons & Serra 2019, trained on MagnaTagATune or the Million Song Dataset; `b2m.targets.musicnn`)
tags each stimulus excerpt and each reconstruction: its taggram, 50 tag probabilities averaged over the
clip's 3 s patches. Per test clip, a reconstruction agrees with the stimulus by
- `taggram_r`: the Pearson r of the two taggrams across the 50 tags;
- `top<k>_overlap`: the share of the stimulus's k most probable tags among the reconstruction's k;
- `genre_tag`: the same most probable genre tag (among the model's genre tags, `GENRE_TAGS`);
averaged over the reconstruction's draws (ranks or samples), then over clips, with bootstrap intervals
over clips as the other sections (the same draws of clips for every subject). Beside each set: its
`shuffled` baseline (the reconstructions given to the wrong clips), and a ceiling, `stimulus_track`:
the whole track each excerpt was cut from, what retrieving the exact track would reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from b2m.core.config import group_config
from b2m.core.metrics import derange
from b2m.core.runs import Run
from b2m.data.stimuli import StimulusSet
from b2m.data.subjects import data_paths
from b2m.evaluation.decoding import proportion_ci
from b2m.evaluation.reconstruction import FileEmbeddings, ReconSet, reconstruction_draws
from b2m.evaluation.results import Result, subject_means
from b2m.targets import EmbeddingSpace, build_space
from b2m.targets.dataset import clip_targets

# The tags of each model that name a genre (the rest name instruments, voices, moods, eras).
GENRE_TAGS = {
    "mtt": ("classical", "techno", "electronic", "rock", "ambient", "indian", "opera", "pop", "new age", "dance",
            "country", "metal", "choral"),
    "msd": ("rock", "pop", "alternative", "indie", "electronic", "dance", "jazz", "metal", "soul", "folk", "punk",
            "blues", "ambient", "Hip-Hop", "country", "funk", "rnb", "House", "electronica", "electro", "hard rock",
            "classic rock", "heavy metal", "Progressive rock", "indie rock", "alternative rock", "indie pop"),
}


def tagger(weights: str) -> EmbeddingSpace:
    """The musicnn space that gives taggrams (`target/musicnn.yaml` with `layer: taggram`), one window per
    clip."""
    cfg = OmegaConf.merge(group_config("target", "musicnn"), {"layer": "taggram", "weights": weights})
    return build_space(cfg)


def taggrams(emb: np.ndarray) -> np.ndarray:
    """Taggram embeddings `[..., L, 50]` -> `[..., 50]`, the mean over windows."""
    return np.asarray(emb, dtype=np.float64).mean(axis=-2)


def agreement(rec: np.ndarray, stim: np.ndarray, k: int, genre_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Per-clip agreement of reconstruction taggrams `rec` `[N, 50]` with stimulus taggrams `stim` `[N, 50]`:
    `{taggram_r, top<k>_overlap, genre_tag}`, each `[N]` (see the module doc)."""
    a = rec - rec.mean(axis=1, keepdims=True)
    b = stim - stim.mean(axis=1, keepdims=True)
    r = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    top_rec = np.argsort(-rec, axis=1, kind="stable")[:, :k]
    top_stim = np.argsort(-stim, axis=1, kind="stable")[:, :k]
    overlap = np.array([len(set(x) & set(y)) / k for x, y in zip(top_rec, top_stim)])
    genre = (rec[:, genre_idx].argmax(axis=1) == stim[:, genre_idx].argmax(axis=1)).astype(np.float64)
    return {"taggram_r": r, f"top{k}_overlap": overlap, "genre_tag": genre}


@dataclass
class TagResults:
    """The tag section's result `rows`, and the top-k tags of each stimulus excerpt (`stimuli[clip_id]`)
    and of each scored reconstruction file (`files[path]`), for the report."""

    rows: list[Result]
    stimuli: dict[str, list[str]] = field(default_factory=dict)
    files: dict[Path, list[str]] = field(default_factory=dict)


def tag_section(run: Run, recon: list[ReconSet], space: EmbeddingSpace, tcfg: DictConfig, max_draws: int,
                n_boot: int, seed: int, level: float) -> TagResults:
    """Rows (section `tags`) of every reconstruction set, its shuffled baseline and the `stimulus_track`
    ceiling, per subject and mean over subjects (with intervals), tagged in `space` (`tagger`) for the
    checked tag config `tcfg` (`weights`: mtt | msd, `top_k`); and the top tags of what was tagged."""
    k = int(tcfg.top_k)
    names = list(space.tags)
    genre_idx = np.array([names.index(t) for t in GENRE_TAGS[str(tcfg.weights)]])
    stimuli = StimulusSet(data_paths(run.cfg.data)["stimuli"])
    embed = FileEmbeddings(space)  # tracks and files shared by subjects and sets are tagged once

    out = TagResults([])

    def top(taggram: np.ndarray) -> list[str]:
        return [names[i] for i in np.argsort(-taggram, kind="stable")[:k]]

    rows: list[Result] = []
    items: dict[str, dict[str, list]] = {}  # set name -> metric -> per subject (values [1, N], clip ids)

    def add(subject: str, template: Result, per_draw: list[dict[str, np.ndarray]], ids: list[str]) -> None:
        for metric in per_draw[0]:
            values = np.mean([d[metric] for d in per_draw], axis=0)  # [N]
            row = replace(template, metric=metric, value=float(values.mean()), subject=subject, n=len(ids))
            rows.append(row)
            items.setdefault(row.name, {}).setdefault(metric, []).append((values[None], ids))

    for subject in run.subjects:
        clips = run.test_clips(subject)
        ids = [c.clip_id for c in clips]
        stim = taggrams(np.stack(list(clip_targets(run.cfg.data, space, clips).values())))  # [N, 50]
        out.stimuli.update({c: top(t) for c, t in zip(ids, stim)})
        tracks = taggrams(embed([stimuli.track_path(c) for c in clips]))
        add(subject, Result("tags", "stimulus_track", "", None), [agreement(tracks, stim, k, genre_idx)], ids)
        for rec in recon:
            if subject not in rec.files:
                continue
            draws = taggrams(reconstruction_draws(embed, rec.files[subject], ids, max_draws))  # [K, N, 50]
            for j, draw in enumerate(draws):  # draw j is each clip's j-th file
                out.files.update({rec.files[subject][c][j]: top(t) for c, t in zip(ids, draw)})
            template = Result("tags", rec.kind, "", None, choice=rec.choice, caveat=rec.caveat)
            add(subject, template, [agreement(d, stim, k, genre_idx) for d in draws], ids)
            if rec.choice not in ("first", "random"):
                shuffled = [agreement(derange(d, seed), stim, k, genre_idx) for d in draws]
                add(subject, replace(template, baseline="shuffled"), shuffled, ids)
    rows = subject_means(rows)
    for i, row in enumerate(rows):
        if row.subject is None:
            rows[i] = replace(row, interval=proportion_ci(items[row.name][row.metric], n_boot, seed, level))
    out.rows = rows
    return out
