"""Brain-guided selection: of a test clip's N candidate reconstructions, keep the one whose predicted
brain response best matches the brain response measured while the subject heard the clip.

Per subject (nothing of a test clip's stimulus is used, only its BOLD, as by the decoder):

1. Encoding model, fitted on the Training runs only: a ridge (`b2m.core.ridge.RidgeCV`, one alpha per
   voxel by K-fold CV) from a clip's embedding `[F]` (each selection space's `[L, D]` flattened,
   z-scored with the training clips' mean and sd, the spaces side by side) to each voxel's response to
   one presentation: the mean of its window `[W, V]` over the decoder's delays (`data.delays_tr`),
   `[V]`.
2. Voxel weights `w_v = sqrt(max(R^2_v, 0))`, R^2_v the voxel's best CV R^2 on the training
   presentations: the voxels the model predicts well weigh, the rest (most of cortex) drop out.
3. The measured response of a test clip: the mean window of its presentations, averaged over the
   delays, `[V]`. A candidate's score is the `w`-weighted Pearson correlation across voxels between
   its predicted response and the measured one; the candidate with the highest score is selected.

For the comparison, each clip's `first` candidate (the decoder's nearest retrieved file, or sample 0)
and a `random` one (seeded per subject and clip) are recorded beside the selected one, in
`<out_dir>/selection_<subject>.json`:

```
{"subject", "method": "brain", "spaces", "seed", "manifest": {"file", "sha256"},
 "clips": {clip_id: {"candidates": [file, ...], "scores": [float, ...], "selected": i, "first": 0,
                     "random": j}}}
```

with files relative to `out_dir`; `manifest` is the retrieval or generation manifest the candidates
came from, as it was when they were scored. `read_selection` gives the choices back as reconstruction
sets, and refuses a selection file that does not describe the manifest beside it (a newer retrieval or
generation, a kill between the two writes, an edited file).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from omegaconf import DictConfig

from b2m.core.errors import B2MError
from b2m.core.io import file_digest, write_json
from b2m.core.log import progress
from b2m.core.ridge import RidgeCV
from b2m.core.runs import Run
from b2m.data.samples import build_samples
from b2m.data.subjects import load_preprocessed
from b2m.reconstruction import Manifest, Reconstructions, inside
from b2m.targets import EmbeddingSpace, space_by_name
from b2m.targets.dataset import clip_targets, embed_files

METHODS = ("none", "brain")
# The sets `read_selection` returns (the selected candidate and the two it is compared with), by the
# field of the selection file that names each.
CHOICES = {"brain": "selected", "first": "first", "random": "random"}


@dataclass
class EncodingModel:
    """One subject's encoding model: embeddings `[C, F]` -> predicted responses `[C, V]`, and the voxel
    weights `[V]` of the match."""

    ridge: RidgeCV
    mean: np.ndarray  # [F] of the training presentations' embeddings
    std: np.ndarray  # [F]
    weight: np.ndarray  # [V]

    @classmethod
    def fit(cls, emb: np.ndarray, windows: np.ndarray, alphas: Sequence[float], n_folds: int) -> "EncodingModel":
        """Fit on training presentations: embeddings `emb` `[N, F]` and their windows `[N, W, V]`."""
        emb = np.asarray(emb, np.float64)
        mean, std = emb.mean(axis=0), emb.std(axis=0)
        std[std == 0] = 1.0
        ridge = RidgeCV(alphas=list(alphas), n_folds=n_folds, scoring="r2")
        ridge.fit((emb - mean) / std, np.asarray(windows, np.float32).mean(axis=1))
        return cls(ridge, mean, std, np.sqrt(np.clip(ridge.cv_scores_.max(axis=0), 0.0, None)))

    def predict(self, emb: np.ndarray) -> np.ndarray:
        return self.ridge.predict((np.asarray(emb, np.float64) - self.mean) / self.std)

    def scores(self, emb: np.ndarray, measured: np.ndarray) -> np.ndarray:
        """Weighted correlation `[C]` of each candidate's predicted response with a measured one `[V]`."""
        return weighted_correlation(self.predict(emb), measured, self.weight)


def weighted_correlation(pred: np.ndarray, measured: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Pearson correlation across voxels, each voxel weighted by `weight` `[V]`, of every row of `pred`
    `[C, V]` with `measured` `[V]`: `[C]` (0 where a side is constant)."""
    w = np.asarray(weight, np.float64) / max(float(np.sum(weight)), 1e-12)
    p = np.asarray(pred, np.float64)
    p = p - (p @ w)[:, None]
    m = np.asarray(measured, np.float64) - float(measured @ w)
    cov = (p * m) @ w
    norm = np.sqrt(((p * p) @ w) * float((m * m) @ w))
    return np.divide(cov, norm, out=np.zeros_like(cov), where=norm > 0)


def selection_spaces(scfg: DictConfig) -> dict[str, EmbeddingSpace]:
    """The audio spaces of `selection.spaces`, checked (a text space cannot embed a candidate)."""
    names = list(scfg.spaces)
    if not names:
        raise B2MError("selection.spaces: empty list; name at least one audio space (e.g. [acoustic])")
    spaces = {name: space_by_name(name, "selection.spaces") for name in names}
    for name, space in spaces.items():
        if space.modality != "audio":
            raise B2MError(f"selection.spaces: {name!r} embeds {space.modality}; candidates need an audio space")
    return spaces


def fit_brain_model(run: Run, subject: str, spaces: dict[str, EmbeddingSpace], scfg: DictConfig
                    ) -> tuple[EncodingModel, dict[str, np.ndarray]]:
    """`subject`'s encoding model, fitted on its Training runs, and the measured response `[V]` of each of
    its test clips by id."""
    data_cfg = run.cfg.data
    pre = load_preprocessed(data_cfg, subject)
    delays = list(data_cfg.delays_tr)
    train = build_samples("Training", pre.runs["Training"], pre.events, pre.data.runs, pre.tr, delays,
                          average_repeats=False)
    test = build_samples("Test", pre.runs["Test"], pre.events, pre.data.runs, pre.tr, delays, average_repeats=True)
    by_clip = _clip_embeddings(data_cfg, spaces, sorted(set(train.clips)))
    model = EncodingModel.fit(np.stack([by_clip[c] for c in train.clips]), train.x, scfg.alphas, int(scfg.n_folds))
    if not (model.weight > 0).any():
        raise B2MError(f"selection: no voxel of {subject} is predicted above chance by the encoding model "
                       f"({'+'.join(spaces)}) on its training runs; brain-guided selection has nothing to match")
    return model, {c.clip_id: window.mean(axis=0) for c, window in zip(test.clips, test.x)}


def _clip_embeddings(data_cfg: DictConfig, spaces: dict[str, EmbeddingSpace], clips: list) -> dict:
    """Each clip's embeddings in every space, flattened and side by side: `{clip: [F]}`."""
    per_space = [clip_targets(data_cfg, space, clips) for space in spaces.values()]
    return {c: np.concatenate([emb[c].reshape(-1) for emb in per_space]) for c in clips}


def random_choice(seed: int, subject: str, clip_id: str, n: int) -> int:
    """The `random` candidate of a clip: an index below `n`, stable across runs and machines."""
    return int(np.random.default_rng([seed, zlib.crc32(subject.encode()), zlib.crc32(clip_id.encode())]).integers(n))


def check_selection(scfg: DictConfig) -> None:
    """A B2MError for a `select` config that cannot run, before anything is read or written."""
    if scfg.method not in METHODS:
        raise B2MError(f"config: select.method: {scfg.method!r} is not one of {', '.join(METHODS)}")
    if scfg.method == "brain":
        selection_spaces(scfg)


def clear_selection(out_dir: str | Path, subjects: Sequence[str]) -> None:
    """Remove the selection files of `subjects` from `out_dir`: called before a job rewrites the
    manifests they were made from, so that none is left describing other reconstructions."""
    for subject in subjects:
        (Path(out_dir) / f"selection_{subject}.json").unlink(missing_ok=True)


def apply_selection(run: Run | None, candidates: dict[str, dict[str, list[Path]]], scfg: DictConfig,
                    out_dir: str | Path, manifests: dict[str, Path]) -> None:
    """Select among `candidates` as `select.method` says (`none`: nothing to do)."""
    if scfg.method == "brain":
        if run is None:
            raise ValueError("brain-guided selection needs the training run")
        select_brain(run, candidates, scfg, out_dir, manifests)


def select_brain(run: Run, candidates: dict[str, dict[str, list[Path]]], scfg: DictConfig,
                 out_dir: str | Path, manifests: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Score every subject's candidates `{subject: {clip_id: [audio file, ...]}}` (first = the
    decoder's first) and write `out_dir/selection_<subject>.json`; returns the selections by subject.

    Files must lie under `out_dir` (their manifest paths are relative to it); `manifests[subject]` is the
    manifest file the candidates come from, recorded with its sha256.
    """
    out_dir = Path(out_dir)
    spaces = selection_spaces(scfg)
    cache: dict[Path, np.ndarray] = {}
    out = {}
    for subject in progress(sorted(candidates), "brain-guided selection", unit="subjects"):
        per_clip = candidates[subject]
        model, measured = fit_brain_model(run, subject, spaces, scfg)
        missing = [c for c in per_clip if c not in measured]
        if missing:
            raise B2MError(f"selection: clip {missing[0]} of {subject} has no measured test response")
        # Keyed by the file itself: retrieval links one database file under a name per clip.
        new = sorted({f.resolve() for files in per_clip.values() for f in files} - set(cache))
        cache.update(zip(new, _embed(spaces, new)))
        clips = {}
        for clip_id, files in per_clip.items():
            scores = model.scores(np.stack([cache[f.resolve()] for f in files]), measured[clip_id])
            clips[clip_id] = {"candidates": [f.relative_to(out_dir).as_posix() for f in files],
                              "scores": [float(s) for s in scores], "selected": int(np.argmax(scores)), "first": 0,
                              "random": random_choice(int(scfg.seed), subject, clip_id, len(files))}
        manifest = Path(manifests[subject])
        out[subject] = {"subject": subject, "method": "brain", "spaces": list(spaces), "seed": int(scfg.seed),
                        "voxels_weighted": int((model.weight > 0).sum()),
                        "manifest": {"file": manifest.relative_to(out_dir).as_posix(), "sha256": file_digest(manifest)},
                        "clips": clips}
        write_json(out_dir / f"selection_{subject}.json", out[subject])
    return out


def _embed(spaces: dict[str, EmbeddingSpace], files: Sequence[Path]) -> list[np.ndarray]:
    """`[F]` per file: its embedding in every space, flattened and side by side."""
    if not files:
        return []
    per_space = [embed_files(space, list(files)).reshape(len(files), -1) for space in spaces.values()]
    return list(np.concatenate(per_space, axis=1))


def read_selection(manifest: Manifest) -> dict[str, Reconstructions]:
    """`{"brain" | "first" | "random": {subject: {clip_id: [file]}}}` from the `selection_<subject>.json`
    beside the retrieval or generation `manifest`; `{}` when the folder holds none (no selection was made).

    A selection file must have been made from that manifest as it is now, list each clip's files in the
    manifest's order as candidates, and choose whole indices among them."""
    folder = manifest.folder
    out: dict[str, Reconstructions] = {}
    for subject, per_clip in manifest.files.items():
        path = folder / f"selection_{subject}.json"
        if not path.is_file():
            continue
        try:
            selection = json.loads(path.read_text())
            made_from = selection["manifest"]
            if inside(folder, made_from["file"], path) != manifest.sources[subject] \
                    or made_from["sha256"] != manifest.source_digests[subject]:
                raise B2MError(f"{path}: made from another {manifest.sources[subject].name} than the one beside it "
                               f"(a newer run, or a kill between the two); run the selection again")
            clips = selection["clips"]
            if set(clips) != set(per_clip):
                raise B2MError(f"{path}: its clips are not those of {manifest.sources[subject].name}")
            for clip_id, entry in clips.items():
                candidates = [inside(folder, c, path) for c in entry["candidates"]]
                if candidates != per_clip[clip_id]:
                    raise B2MError(f"{path}: the candidates of clip {clip_id} are not its files in "
                                   f"{manifest.sources[subject].name}")
                for choice, key in CHOICES.items():
                    index = entry[key]
                    if type(index) is not int or not 0 <= index < len(candidates):
                        raise B2MError(f"{path}: clip {clip_id}: {key} = {index!r} is not a candidate's index "
                                       f"(a whole number from 0 to {len(candidates) - 1})")
                    out.setdefault(choice, {}).setdefault(subject, {})[clip_id] = [candidates[index]]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
            raise B2MError(f"{path}: not a selection file ({type(err).__name__}: {err})") from None
    return out
