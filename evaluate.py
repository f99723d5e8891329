"""Score a training run: `python evaluate.py run=<train out_dir> [out_dir=...]` (see configs/evaluate.yaml)."""

import sys

from b2m.cli import run_entry
from b2m.evaluation.evaluate import evaluate


def main(cfg):
    metrics = evaluate(cfg)
    print(f"test/id_acc = {metrics['test/id_acc']:.3f} "
          f"(baselines: mean {metrics['baseline/mean_train/id_acc']:.3f}, "
          f"shuffled {metrics['baseline/shuffled/id_acc']:.3f}); results in {cfg.out_dir}/metrics.json")


if __name__ == "__main__":
    sys.exit(run_entry("evaluate", main, sys.argv[1:]))
