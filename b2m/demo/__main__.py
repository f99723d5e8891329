"""`python -m b2m.demo --size {tiny,default,full} [--layout fmriprep] --out DIR`: write the offline demo dataset."""

from __future__ import annotations

import argparse
import sys

from b2m.demo.build import PRESETS, build_dataset
from b2m.demo.worlds import WORLDS
from b2m.core.errors import B2MError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other user error, instead of usage + message
        raise B2MError(f"{self.prog}: {message}")


def _subjects(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected subject numbers like 1,2, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(prog="python -m b2m.demo", description=__doc__)
    parser.add_argument("--size", choices=list(PRESETS), default="default",
                        help="tiny: tests; default: the README's demo; full: the real geometry, ~46 GB")
    parser.add_argument("--out", required=True, help="dataset folder to write or complete")
    parser.add_argument("--subjects", type=_subjects, default=None, help="e.g. 1,2 (default: the size's subjects)")
    parser.add_argument("--max-training-runs", type=int, default=None, help="write Training runs 1..N only")
    parser.add_argument("--max-test-runs", type=int, default=None, help="write Test runs 1..N only")
    parser.add_argument("--world", choices=list(WORLDS), default="default",
                        help="the simulated world (b2m/demo/worlds.py); second: another tuning model, SNR, HRFs, "
                             "noise and grid, and no cortex mask")
    parser.add_argument("--layout", choices=["bids", "fmriprep"], default="bids",
                        help="bids: raw BOLD as ds003720 publishes it; fmriprep: fMRIPrep's derivatives (float32 "
                             "BOLD with motion and physiological artefacts, brain masks, confounds, an atlas)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes rendering the stimuli")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        out = build_dataset(args.out, args.size, args.subjects, args.max_training_runs, args.max_test_runs,
                            args.seed, args.workers, args.world, args.layout)
    except B2MError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
