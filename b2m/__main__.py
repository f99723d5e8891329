"""`python -m b2m <job> [overrides]`: run a job (train, evaluate, generate, retrieve) from the command line."""

from __future__ import annotations

import sys

from b2m.jobs.cli import JOBS, run

USAGE = f"usage: python -m b2m {{{','.join(JOBS)}}} [--help] [-m] [key=value ...]"


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in JOBS:
        print(USAGE, file=sys.stderr)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    sys.exit(run(sys.argv[1], sys.argv[2:]))


if __name__ == "__main__":
    main()
