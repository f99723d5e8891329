"""Brain-guided selection on validation clips of both simulated worlds: what its match rule was chosen on.

    python bench/selection.py [--world demo=data/demo] [--world second=data/second:data=ds003720]
                              [--subjects 1 2 3] [--k 5 20] [--out outputs/selection]

Per world and subject, as train.py splits the Training runs: the default ridge decoder is fitted on
the training split and predicts the validation clips (held-out training clips, one presentation
each); each prediction retrieves its k nearest stimulus tracks in the run's target space (`acoustic`),
its own track excluded. The encoding model (`b2m.reconstruction.selection.EncodingModel`) is fitted
on the same training split; each match rule picks one of the k candidates per clip from the clip's
measured validation response. Printed: id_acc (standardised acoustic space, mean over subjects) of
the decoder's first candidate, a random one, and each rule's choice. No test clip is used.

Rules: `weighted` (the default: correlation across voxels weighted by the CV encoding r),
`positive` (unweighted, voxels with CV R^2 > 0), `top500` (unweighted, the 500 best voxels),
`all` (unweighted, every voxel), `neg_sq_error` (minus the weighted squared error).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from b2m.core.config import compose
from b2m.core.metrics import Standardiser, decoding_metrics
from b2m.data.subjects import data_paths, load_subject
from b2m.decoders import build_decoder
from b2m.reconstruction.retrieval import RetrievalIndex, build_index
from b2m.reconstruction.selection import EncodingModel, random_choice, weighted_correlation
from b2m.targets import build_space
from b2m.targets.dataset import clip_targets, embed_files

RULES = ("weighted", "positive", "top500", "all", "neg_sq_error")


def world_args(world: str, subject: int) -> list[str]:
    name, spec = world.split("=", 1)
    root, *overrides = spec.split(":")
    return [*overrides, f"data.root={root}", f"data.subjects=[{subject}]"]


def rule_scores(rule: str, model: EncodingModel, emb: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """`[k]` scores of the candidates `emb` `[k, F]` against a measured response `[V]` (higher is better)."""
    pred, w = model.predict(emb), model.weight
    if rule == "neg_sq_error":
        return -(((pred - measured) ** 2) @ w)
    weight = {"weighted": w, "positive": (w > 0).astype(float), "all": np.ones_like(w),
              "top500": (w >= np.sort(w)[-min(500, len(w))]).astype(float)}[rule]
    return weighted_correlation(pred, measured, weight)


def subject_table(world: str, subject: int, ks: list[int], out: Path) -> dict[str, dict[int, float]]:
    cfg = compose("train", world_args(world, subject))
    space = build_space(cfg.target)
    label = f"sub-{subject:03d}"
    splits = load_subject(cfg.data, label, lambda clips: clip_targets(cfg.data, space, clips), int(cfg.seed))
    train, val = splits.train, splits.val
    decoder = build_decoder(cfg.decoder, [train.x.shape[2]], train.x.shape[1], train.y.shape[1:])
    decoder.fit_closed_form(0, train.x, train.y)
    pred = decoder.predict_windows(val.x, 0)

    database = data_paths(cfg.data)["stimuli"] / "genres"
    index_dir = out / f"index-{world.split('=')[0]}"
    build_index(database, index_dir, space)
    index = RetrievalIndex.load(index_dir)
    model = EncodingModel.fit(train.y.reshape(len(train.y), -1), train.x, cfg.decoder.encoding_alphas,
                              int(cfg.decoder.n_folds))
    measured = val.x.mean(axis=1)
    scale = Standardiser.fit(train.y)
    emb_of: dict[str, np.ndarray] = {}
    rows: dict[str, dict[int, float]] = {}
    for k in ks:
        idx, _, paths = index.query(pred, k, exclude=[c.track_name for c in val.clips])
        new = sorted({p for row in paths for p in row} - set(emb_of))
        emb_of.update(zip(new, embed_files(space, [Path(p) for p in new]).reshape(len(new), -1)))
        cands = np.stack([np.stack([emb_of[p] for p in row]) for row in paths])  # [N, k, F]
        picks = {"first": np.zeros(len(val.clips), int),
                 "random": np.array([random_choice(0, label, c.clip_id, k) for c in val.clips])}
        for rule in RULES:
            picks[rule] = np.array([int(np.argmax(rule_scores(rule, model, cands[n], measured[n])))
                                    for n in range(len(val.clips))])
        for name, pick in picks.items():
            draw = cands[np.arange(len(pick)), pick].reshape(val.y.shape)
            rows.setdefault(name, {})[k] = decoding_metrics(draw, val.y, scale)["id_acc"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", action="append", default=None)
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--k", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--out", type=Path, default=Path("outputs/selection"))
    args = parser.parse_args()
    worlds = args.world or ["demo=data/demo", "second=data/second:data=ds003720"]
    for world in worlds:
        per_subject = [subject_table(world, s, args.k, args.out) for s in args.subjects]
        print(f"\n### {world.split('=')[0]}: validation id_acc (mean over subjects {args.subjects})\n")
        print("| candidate | " + " | ".join(f"k={k}" for k in args.k) + " |")
        print("|---|" + "---|" * len(args.k))
        for name in per_subject[0]:
            cells = [f"{np.mean([t[name][k] for t in per_subject]):.3f}" for k in args.k]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
