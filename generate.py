"""Generate music from a training run's decoded embeddings: `python generate.py [group=choice] [key=value ...]` (`--help` lists the config; b2m/conf/generate.yaml)."""

import sys

from b2m.jobs.cli import run

if __name__ == "__main__":
    sys.exit(run("generate"))
