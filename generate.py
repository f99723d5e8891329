"""Generate music from decoded embeddings:
`python generate.py predictions=<train out_dir> [generator=small] [key=value ...]` (see configs/generate.yaml)."""

import sys

from pytorch_lightning.utilities import rank_zero_info

from b2m.cli import run_entry
from b2m.generation.run import generate_from_config


def main(cfg):
    # Every DDP rank runs this script; the summary is the same on all of them.
    summary = generate_from_config(cfg)
    rank_zero_info(f"generated {summary['n_generated']} of {summary['n_wavs']} wavs "
                   f"({summary['missing']} missing); wavs and manifest.jsonl in {cfg.out_dir}")


if __name__ == "__main__":
    sys.exit(run_entry("generate", main, sys.argv[1:]))
