"""Decoder comparison on the demo dataset: ridge, MLP and transformer, per subject and
multi-subject, several seeds. Prints a Markdown table (mean +- sd over seeds) and writes it
with every run's metrics under --out. Finished runs are skipped, so a killed sweep resumes.

    python bench/decoders.py [--root data/demo] [--subjects 1 2 3] [--seeds 0 1 2] [--out outputs/decoders]

Hyperparameters are the configs' defaults (chosen on validation clips, never on test).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from b2m.core.config import compose
from b2m.core.io import write_text
from b2m.jobs.train import train

DECODERS = ("ridge", "mlp", "transformer")


def run_one(root: Path, out: Path, decoder: str, subjects: list[int], seed: int, extra: list[str]) -> dict:
    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    args = [f"data.root={root}", f"data.subjects=[{','.join(map(str, subjects))}]", f"decoder={decoder}",
            f"seed={seed}", f"out_dir={out}", "trainer.logger=csv", *extra]
    return train(compose("train", args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("data/demo"))
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--decoders", nargs="+", default=list(DECODERS))
    parser.add_argument("--out", type=Path, default=Path("outputs/decoders"))
    parser.add_argument("--table-only", action="store_true", help="tabulate finished runs, start none")
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides for every run")
    args = parser.parse_args()

    rows = []
    for decoder in args.decoders:
        settings = [("per-subject", [s]) for s in args.subjects]
        if decoder != "ridge" and len(args.subjects) > 1:
            settings.append(("multi-subject", args.subjects))
        for setting, subjects in settings:
            for seed in args.seeds:
                name = f"{decoder}_{'-'.join(map(str, subjects))}_seed{seed}"
                if args.table_only and not (args.out / name / "metrics.json").exists():
                    continue
                metrics = run_one(args.root, args.out / name, decoder, subjects, seed, args.overrides)
                for s in subjects:
                    rows.append({"decoder": decoder, "setting": setting, "subject": s, "seed": seed,
                                 **{k: metrics[f"sub-{s:03d}/{k}"] for k in
                                    ("test/id_acc", "test/top1", "baseline/shuffled/id_acc",
                                     "baseline/mean_train/id_acc")}})
    lines = ["| decoder | training | test/id_acc | test/top1 | shuffled id_acc | mean-train id_acc | subject x seed |",
             "|---|---|---|---|---|---|---|"]
    for decoder in args.decoders:
        for setting in ("per-subject", "multi-subject"):
            sel = [r for r in rows if r["decoder"] == decoder and r["setting"] == setting]
            if not sel:
                continue
            # Mean over subjects within a seed, then mean +- sd over seeds.
            def stat(key):
                seeds = sorted({r["seed"] for r in sel})
                per_seed = [np.mean([r[key] for r in sel if r["seed"] == seed]) for seed in seeds]
                return f"{np.mean(per_seed):.3f} +- {np.std(per_seed, ddof=1) if len(per_seed) > 1 else 0:.3f}"
            lines.append(f"| {decoder} | {setting} | {stat('test/id_acc')} | {stat('test/top1')} | "
                         f"{stat('baseline/shuffled/id_acc')} | {stat('baseline/mean_train/id_acc')} | {len(sel)} |")
    lines.append("")
    lines.append("Per subject (mean over seeds), test/id_acc:")
    for decoder in args.decoders:
        for setting in ("per-subject", "multi-subject"):
            sel = [r for r in rows if r["decoder"] == decoder and r["setting"] == setting]
            if sel:
                per = {s: np.mean([r["test/id_acc"] for r in sel if r["subject"] == s]) for s in args.subjects}
                lines.append(f"- {decoder} {setting}: " + ", ".join(f"sub-{s:03d} {v:.3f}" for s, v in per.items()))
    table = "\n".join(lines)
    print(table)
    write_text(args.out / "results.md", table + "\n")
    write_text(args.out / "rows.json", json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
