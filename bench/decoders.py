"""Decoder comparison: every decoder beside the plain baseline and the independent reference script.

    python bench/decoders.py [--world demo=data/demo] [--world second=data/second:data=ds003720]
                             [--decoders plain_ridge ridge mlp transformer] [--subjects 1 2 3]
                             [--seeds 0 1 2] [--out outputs/decoders]

For each world (a dataset folder and the data overrides that load it), trains each decoder per
subject (and, for trained decoders, on all subjects at once) for each seed, and runs
`../shared/reference/plain_ridge.py` on the same subjects, the same voxel mask and the very same
target vectors (b2m's cache). Prints one Markdown table per world: test id_acc on standardised
dimensions (mean +- sd over seeds of the mean over subjects), top-1, the raw-vector id_acc, the
shuffled baseline, and the reference; then per-subject id_acc. The `ensemble` row averages the
per-subject test predictions of ridge, contrastive, mlp and transformer (same subject and seed); the
`across subjects` rows average one decoder's predictions of the same test clip from every subject's
own scans (all subjects heard the same clips), a group decoder that no single subject's row is.
Finished runs are skipped, so a killed bench resumes. Hyperparameters are the configs' defaults
(chosen on validation clips).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from b2m.core.config import compose
from b2m.core.io import write_text
from b2m.core.metrics import metrics_table
from b2m.core.runs import read_predictions
from b2m.data.subjects import data_paths
from b2m.jobs.train import train
from b2m.targets import build_space

DECODERS = ("plain_ridge", "ridge", "ridge_aligned", "contrastive", "mlp", "transformer")
CLOSED_FORM = ("plain_ridge", "ridge", "ridge_aligned")
# The decoders with parameters shared across subjects: also trained on all subjects at once.
SHARED = ("mlp", "transformer")
# The decoders that pool the subjects' data: trained on all subjects at once only.
POOLED = ("ridge_aligned",)
# The decoders whose per-subject test predictions the `ensemble` row averages (same subject and seed).
ENSEMBLE = ("ridge", "contrastive", "mlp", "transformer")
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "plain_ridge.py"
KEYS = ("test/id_acc", "test/top1", "test/id_acc_raw", "baseline/shuffled/id_acc")


def world_args(world: str, subjects: list[int]) -> list[str]:
    name, spec = world.split("=", 1)
    root, *overrides = spec.split(":")
    return [*overrides, f"data.root={root}", f"data.subjects=[{','.join(map(str, subjects))}]"]


def run_one(out: Path, args: list[str]) -> dict:
    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    return train(compose("train", [*args, f"out_dir={out}", "trainer.logger=csv"]))


def reference(world: str, subject: int, out: Path) -> dict:
    """The reference script on one subject, with b2m's mask and target cache: `{id_acc, top1}`."""
    path = out / f"reference_sub-{subject:03d}.json"
    if path.exists():
        return json.loads(path.read_text())
    cfg = compose("train", world_args(world, [subject]))
    paths = data_paths(cfg.data)
    targets = paths["cache"] / "targets" / build_space(cfg.target).cache_key()
    cmd = [sys.executable, str(REFERENCE), str(paths["root"]), f"sub-{subject:03d}", "--targets", str(targets)]
    if cfg.data.preprocess.mask:
        cmd += ["--mask", str(cfg.data.preprocess.mask).replace("{subject}", f"sub-{subject:03d}")]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    found = re.search(r"test id_acc ([0-9.]+)\s+top1 ([0-9.]+)", text)
    if found is None:
        raise RuntimeError(f"unexpected output of {REFERENCE.name}: {text!r}")
    result = {"id_acc": float(found[1]), "top1": float(found[2]), "output": text.strip()}
    write_text(path, json.dumps(result, indent=1))
    return result


def ensemble_rows(world: str, out: Path, decoders: list[str], subjects: list[int], seeds: list[int]) -> list[dict]:
    """Rows of the `ensemble`: the mean of the `ENSEMBLE` decoders' per-subject test predictions."""
    members = [d for d in decoders if d in ENSEMBLE]
    if len(members) < 2:
        return []
    rows = []
    for seed in seeds:
        for s in subjects:
            preds = [read_predictions(out / f"{d}_{s}_seed{seeds[0] if d in CLOSED_FORM else seed}" / "predictions"
                                      / f"sub-{s:03d}.npz") for d in members]
            metrics = metrics_table(np.mean([p.pred for p in preds], axis=0), preds[0].true, preds[0].scale, seed)
            rows.append({"world": world, "decoder": "ensemble", "setting": "per-subject", "subject": s, "seed": seed,
                         **{k: metrics[k] for k in KEYS}})
    return rows


def across_subject_rows(world: str, out: Path, decoders: list[str], subjects: list[int],
                        seeds: list[int]) -> list[dict]:
    """Rows of each decoder `across subjects`: the mean over subjects of their own predictions of each test clip.

    Each subject's prediction comes from its own decoder and its own test scans (per-subject runs, or
    the pooled run for `POOLED` decoders); nothing is fitted here. One row per seed, `subject` 0.
    """
    if len(subjects) < 2:
        return []
    rows = []
    for decoder in [d for d in decoders if d in ENSEMBLE + POOLED]:
        for seed in seeds[:1] if decoder in CLOSED_FORM else seeds:
            preds = [read_predictions(out / f"{decoder}_{'-'.join(map(str, subjects)) if decoder in POOLED else s}"
                                      f"_seed{seed}" / "predictions" / f"sub-{s:03d}.npz") for s in subjects]
            if any(list(p.clip_ids) != list(preds[0].clip_ids) for p in preds):
                raise ValueError(f"{world}: the subjects' test clips differ; no group prediction")
            metrics = metrics_table(np.mean([p.pred for p in preds], axis=0), preds[0].true, preds[0].scale, seed)
            rows.append({"world": world, "decoder": decoder, "setting": "across subjects", "subject": 0,
                         "seed": seed, **{k: metrics[k] for k in KEYS}})
    return rows


def mean_sd(rows: list[dict], key: str) -> str:
    """Mean over subjects within a seed, then mean +- sd over seeds."""
    seeds = sorted({r["seed"] for r in rows})
    per_seed = [np.mean([r[key] for r in rows if r["seed"] == seed]) for seed in seeds]
    return f"{np.mean(per_seed):.3f} +- {np.std(per_seed, ddof=1) if len(per_seed) > 1 else 0:.3f}"


def world_table(name: str, rows: list[dict], refs: dict[int, dict], decoders: list[str], subjects: list[int]) -> str:
    ref_mean = np.mean([refs[s]["id_acc"] for s in subjects])
    lines = [f"### {name}", "",
             "| decoder | training | test/id_acc | test/top1 | test/id_acc_raw | shuffled id_acc | vs reference | "
             "subject x seed |", "|---|---|---|---|---|---|---|---|",
             f"| reference (plain_ridge.py) | per-subject | {ref_mean:.3f} | "
             f"{np.mean([refs[s]['top1'] for s in subjects]):.3f} | | | | {len(subjects)} |"]
    per_subject = ["- reference: " + ", ".join(f"sub-{s:03d} {refs[s]['id_acc']:.3f}" for s in subjects)]
    for decoder in decoders:
        for setting in ("per-subject", "multi-subject", "across subjects"):
            sel = [r for r in rows if r["decoder"] == decoder and r["setting"] == setting]
            if not sel:
                continue
            if setting == "across subjects":  # a group decoder: no per-subject reference to compare with
                lines.append(f"| {decoder} | {setting} | " + " | ".join(mean_sd(sel, k) for k in KEYS)
                             + f" | | {len(sel)} |")
                continue
            diff = np.mean([r["test/id_acc"] for r in sel]) - ref_mean
            lines.append(f"| {decoder} | {setting} | " + " | ".join(mean_sd(sel, k) for k in KEYS)
                         + f" | {diff:+.3f} | {len(sel)} |")
            means = {s: np.mean([r["test/id_acc"] for r in sel if r["subject"] == s]) for s in subjects}
            per_subject.append(f"- {decoder} {setting}: " + ", ".join(
                f"sub-{s:03d} {v:.3f} ({v - refs[s]['id_acc']:+.3f})" for s, v in means.items()))
    return "\n".join(lines + ["", "Per subject, test/id_acc (mean over seeds; difference to the reference):",
                              *per_subject])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", action="append", help="NAME=ROOT[:override:...]; repeatable "
                        "(default: demo=data/demo and second=data/second:data=ds003720)")
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--decoders", nargs="+", default=list(DECODERS))
    parser.add_argument("--no-multi", action="store_true", help="skip the multi-subject runs")
    parser.add_argument("--out", type=Path, default=Path("outputs/decoders"))
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides for every run")
    args = parser.parse_args()
    worlds = args.world or ["demo=data/demo", "second=data/second:data=ds003720"]

    tables, all_rows = [], []
    for world in worlds:
        name = world.split("=", 1)[0]
        out = args.out / name
        rows = []
        for decoder in args.decoders:
            settings = [] if decoder in POOLED else [("per-subject", [s]) for s in args.subjects]
            if decoder in SHARED + POOLED and len(args.subjects) > 1 and not args.no_multi:
                settings.append(("multi-subject", args.subjects))
            # A closed-form decoder's seed only moves the val split, which it refits on: one seed.
            for seed in args.seeds[:1] if decoder in CLOSED_FORM else args.seeds:
                for setting, subjects in settings:
                    run = out / f"{decoder}_{'-'.join(map(str, subjects))}_seed{seed}"
                    metrics = run_one(run, [*world_args(world, subjects), f"decoder={decoder}", f"seed={seed}",
                                            *args.overrides])
                    for s in subjects:
                        rows.append({"world": name, "decoder": decoder, "setting": setting, "subject": s,
                                     "seed": seed, **{k: metrics[f"sub-{s:03d}/{k}"] for k in KEYS}})
        rows += ensemble_rows(name, out, args.decoders, args.subjects, args.seeds)
        rows += across_subject_rows(name, out, args.decoders, args.subjects, args.seeds)
        # After b2m's runs: the reference reads the target vectors they cached.
        refs = {s: reference(world, s, out) for s in args.subjects}
        tables.append(world_table(name, rows, refs, [*args.decoders, "ensemble"], args.subjects))
        all_rows += rows
    text = "\n\n".join(tables)
    print(text)
    write_text(args.out / "results.md", text + "\n")
    write_text(args.out / "rows.json", json.dumps(all_rows, indent=1))


if __name__ == "__main__":
    main()
