"""Retrieve database music for a training run's decoded embeddings: `python retrieve.py [group=choice] [key=value ...]` (`--help` lists the config; b2m/conf/retrieve.yaml)."""

import sys

from b2m.jobs.cli import run

if __name__ == "__main__":
    sys.exit(run("retrieve"))
