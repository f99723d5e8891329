"""A new subject from little data: each subject in turn is the new one, with 1, 2, 4 or all 12 of its
training runs, beside the other subjects' full data.

    python bench/new_subject.py [--world demo=data/demo] [--subjects 1 2 3] [--runs 1 2 4 12]

For each new subject and run count n (its first n Training runs; 10.25 minutes of BOLD each):
- `aligned`: `decoder=ridge_aligned` fitted on the new subject's n runs and the other subjects' full
  training data, each mapped onto the new subject's voxels by a ridge fitted on the clips of its n runs
  (`b2m/decoders/alignment.py`): the shared model adapted from n runs;
- `own`: the default ridge on the new subject's n runs alone;
and, as the reference, its own ridge on all its runs. Scores are on the new subject's 60 test clips
(standardised id_acc and top-1, as the train job scores). Prints a Markdown table, then one line per
run count with the means over subjects of the aligned model, for scripts:

    runs=<n> id_acc=<x> top1=<y> fraction_of_full=<f>

where `fraction_of_full` is its above-chance id_acc over that of the subject's own ridge on all runs.
"""

from __future__ import annotations

import argparse

import numpy as np

from b2m.core.config import compose
from b2m.core.metrics import Standardiser, metrics_table
from b2m.data.subjects import load_subject
from b2m.decoders import build_decoder
from b2m.targets import build_space
from b2m.targets.dataset import clip_targets

N_TRAINING_RUNS = 12
RUN_MINUTES = 410 * 1.5 / 60  # ds003720: 410 volumes of 1.5 s per run


def world_args(world: str) -> list[str]:
    root, *overrides = world.split("=", 1)[1].split(":")
    return [*overrides, f"data.root={root}"]


def load(world: str, subject: int, runs: int):
    """One subject's splits with its first `runs` Training runs."""
    cfg = compose("train", [*world_args(world), f"data.subjects=[{subject}]",
                            f"data.training_runs=[{','.join(str(r) for r in range(1, runs + 1))}]"])
    space = build_space(cfg.target)
    return cfg, load_subject(cfg.data, f"sub-{subject:03d}", lambda clips: clip_targets(cfg.data, space, clips), 0)


def score(decoder, index: int, subject) -> tuple[float, float]:
    train_y = np.concatenate([subject.train.y, subject.val.y])
    m = metrics_table(decoder.predict_windows(subject.test.x, index), subject.test.y, Standardiser.fit(train_y), 0)
    return m["test/id_acc"], m["test/top1"]


def fit(cfg, name: str, subjects: list) -> object:
    """`decoder=<name>` fitted on the subjects' training windows (train + val, as the train job does)."""
    decoder_cfg = compose("train", [f"decoder={name}"]).decoder
    decoder = build_decoder(decoder_cfg, [s.data.n_voxels for s in subjects], len(cfg.data.delays_tr),
                            subjects[0].train.y.shape[1:])
    decoder.fit_subjects([np.concatenate([s.train.x, s.val.x]) for s in subjects],
                         [np.concatenate([s.train.y, s.val.y]) for s in subjects],
                         [s.train.clip_ids + s.val.clip_ids for s in subjects])
    return decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default="demo=data/demo", help="NAME=ROOT[:override:...]")
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2, 4, N_TRAINING_RUNS])
    args = parser.parse_args()

    full = {s: load(args.world, s, N_TRAINING_RUNS) for s in args.subjects}
    own_full = {s: score(fit(cfg, "ridge", [subj]), 0, subj) for s, (cfg, subj) in full.items()}
    rows = []
    for n in args.runs:
        for s in args.subjects:
            cfg, new = load(args.world, s, n) if n != N_TRAINING_RUNS else full[s]
            others = [full[o][1] for o in args.subjects if o != s]
            aligned = score(fit(cfg, "ridge_aligned", [new, *others]), 0, new)
            own = score(fit(cfg, "ridge", [new]), 0, new)
            rows.append({"runs": n, "subject": s, "aligned": aligned, "own": own, "full": own_full[s],
                         "fraction": (aligned[0] - 0.5) / (own_full[s][0] - 0.5)})
            print(f"sub-{s:03d} runs={n}: aligned {aligned[0]:.3f} / {aligned[1]:.3f}, own {own[0]:.3f} / "
                  f"{own[1]:.3f}, own on all runs {own_full[s][0]:.3f}", flush=True)

    print(f"\n### {args.world.split('=', 1)[0]}: a new subject from n runs (id_acc / top-1, mean over "
          f"{len(args.subjects)} subjects)\n")
    print("| runs | minutes | aligned (shared model) | own ridge | own ridge, all runs | aligned fraction of full |")
    print("|---|---|---|---|---|---|")
    lines = []
    for n in args.runs:
        sel = [r for r in rows if r["runs"] == n]
        aligned, own, ref = (np.mean([r[k] for r in sel], axis=0) for k in ("aligned", "own", "full"))
        fraction = float(np.mean([r["fraction"] for r in sel]))
        print(f"| {n} | {n * RUN_MINUTES:.0f} | {aligned[0]:.3f} / {aligned[1]:.3f} | {own[0]:.3f} / {own[1]:.3f} | "
              f"{ref[0]:.3f} / {ref[1]:.3f} | {fraction:.2f} |")
        lines.append(f"runs={n} id_acc={aligned[0]:.4f} top1={aligned[1]:.4f} fraction_of_full={fraction:.4f}")
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
