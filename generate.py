"""Generate music from decoded embeddings:
`python generate.py predictions=<train out_dir> [generator=small] [key=value ...]` (see configs/generate.yaml)."""

import sys

from b2m.cli import run_entry
from b2m.generation.run import generate_from_config


def main(cfg):
    summary = generate_from_config(cfg)
    print(f"{summary}; wavs and manifest.jsonl in {cfg.out_dir}")


if __name__ == "__main__":
    sys.exit(run_entry("generate", main, sys.argv[1:]))
