"""Score a training run: `python evaluate.py [group=choice] [key=value ...]` (`--help` lists the config; b2m/conf/evaluate.yaml)."""

import sys

from b2m.jobs.cli import run

if __name__ == "__main__":
    sys.exit(run("evaluate"))
