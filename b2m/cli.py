"""What every entry script does: compose the config, run the job, turn user errors into one line."""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

from omegaconf import DictConfig

from b2m.config import load_config
from b2m.errors import B2MError


def run_entry(name: str, job: Callable[[DictConfig], Any], argv: Sequence[str]) -> int:
    """Run `job` on `configs/<name>.yaml` + `argv`; a B2MError prints `error: ...` and returns 2."""
    try:
        cfg = load_config(name, argv)
        job(cfg)
    except B2MError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
