"""Train a decoder: `python train.py [group=choice] [key=value ...]` (see configs/train.yaml)."""

import sys

from b2m.cli import run_entry
from b2m.training import train


def main(cfg):
    metrics = train(cfg)
    print(f"test/id_acc = {metrics['test/id_acc']:.3f} (chance 0.5); results in {cfg.out_dir}/metrics.json")


if __name__ == "__main__":
    sys.exit(run_entry("train", main, sys.argv[1:]))
