"""Train a decoder: `python train.py [group=choice] [key=value ...]` (`--help` lists the config; b2m/conf/train.yaml)."""

import sys

from b2m.jobs.cli import run

if __name__ == "__main__":
    sys.exit(run("train"))
