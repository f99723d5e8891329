"""Retrieve music for a training run's test predictions:
`python retrieve.py run=<train out_dir> database=<audio folder> [k=5]` (see configs/retrieve.yaml)."""

import sys

from b2m.cli import run_entry
from b2m.generation.retrieval import retrieve_from_config


def main(cfg):
    manifests = retrieve_from_config(cfg)
    print(f"retrieved top-{cfg.k} for {len(manifests)} subject(s); manifests in {cfg.out_dir}/retrieval_*.json")


if __name__ == "__main__":
    sys.exit(run_entry("retrieve", main, sys.argv[1:]))
