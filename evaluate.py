"""Score a training run: `python evaluate.py run=<train out_dir> [out_dir=...] [retrieval=<dir>]
[generated=<dir>] [encoding.enabled=true]` (see configs/evaluate.yaml)."""

import sys

from b2m.cli import run_entry
from b2m.evaluation.evaluate import evaluate


def main(cfg):
    m = evaluate(cfg)
    level = f"{m['ci_level']:.0%}"
    print(f"test/id_acc = {m['test/id_acc']:.3f} ({level} CI {m['test/id_acc_ci_low']:.3f}-"
          f"{m['test/id_acc_ci_high']:.3f}; baselines: mean {m['baseline/mean_train/id_acc']:.3f}, "
          f"shuffled {m['baseline/shuffled/id_acc']:.3f}; chance 0.5)")
    for key in sorted(k for k in m if k.endswith("/id_acc") and k.startswith(("retrieval/", "generated/"))
                      and "/shuffled/" not in k):
        print(f"{key} = {m[key]:.3f} ({level} CI {m[key + '_ci_low']:.3f}-{m[key + '_ci_high']:.3f})")
    if m.get("genre/pred/acc") is not None:
        print(f"genre/pred/acc = {m['genre/pred/acc']:.3f} (chance 0.1; true embeddings {m['genre/true/acc']:.3f})")
    print(f"results in {cfg.out_dir}: metrics.json, summary.md"
          + (", report/index.html" if cfg.report.enabled else "")
          + (", encoding/" if cfg.encoding.enabled else ""))


if __name__ == "__main__":
    sys.exit(run_entry("evaluate", main, sys.argv[1:]))
