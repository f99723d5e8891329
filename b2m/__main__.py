"""`python -m b2m <job> [overrides]`: run a job (train, evaluate, generate, retrieve) from the command line."""

from __future__ import annotations

import os
import sys

from b2m.jobs.cli import JOBS, run

USAGE = f"usage: python -m b2m {{{','.join(JOBS)}}} [--help] [-m] [key=value ...]"
# Lightning relaunches `python -m b2m.__main__ <overrides>` for each DDP rank, without the job's
# name: the ranks find it here.
JOB_VARIABLE = "B2M_JOB"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in JOBS:
        os.environ[JOB_VARIABLE] = sys.argv[1]
        sys.exit(run(sys.argv[1], sys.argv[2:]))
    if os.environ.get(JOB_VARIABLE) in JOBS:
        sys.exit(run(os.environ[JOB_VARIABLE], sys.argv[1:]))
    print(USAGE, file=sys.stderr)
    sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)


if __name__ == "__main__":
    main()
