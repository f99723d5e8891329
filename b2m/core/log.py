"""What the terminal shows: b2m's stage lines, progress and warnings by default; with `-v`, the libraries too.

    log = logging.getLogger(__name__)     # every module logs under `b2m.*`
    log.info("ridge: 5 folds x 7 alphas") # a stage line on stderr
    for x in progress(items, "bootstrap"): ...

By default the libraries b2m runs (Lightning, wandb, transformers, torch) keep their notes to
themselves: their info lines, tips and deprecation warnings are dropped, and b2m's own warnings
(a dropped clip, constant voxels) print as one `warning: ...` line. `setup(verbose=True)` (the jobs'
`-v`, or B2M_VERBOSE=1) lets everything through with the usual Python formats.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
# Set by `setup(verbose=True)` for the processes a job starts (DDP ranks), which see no `-v`.
VERBOSE_VARIABLE = "B2M_VERBOSE"
log = logging.getLogger("b2m")
# Loggers of the libraries whose info lines ("GPU available: False", tips) are noise to a b2m user.
LIBRARIES = ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch", "transformers",
             "huggingface_hub", "torch", "wandb", "urllib3", "matplotlib", "nilearn", "numba",
             # torchao (the int8 reference, imported by transformers where installed) and the torch
             # logger that it warns through, whose level torch sets itself
             "torchao", "torch.utils._pytree")


def setup(verbose: bool = False) -> None:
    """Route b2m's log to stderr (INFO, or DEBUG when `verbose`) and quiet the libraries unless `verbose`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    # Every other logger reaches stderr through the root's handler: its errors only, unless verbose.
    # (Lightning adds a handler of its own at import only where the root has none.)
    libraries = logging.StreamHandler(sys.stderr)
    libraries.setLevel(logging.INFO if verbose else logging.ERROR)
    libraries.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().handlers[:] = [libraries]
    if verbose:
        logging.getLogger().setLevel(logging.INFO)
        os.environ[VERBOSE_VARIABLE] = "1"
        return
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Read by the libraries when they start: wandb's banner and transformers' generation notes.
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # transformers is imported only by the spaces and generators that need it
        pass
    else:
        hf_logging.set_verbosity_error()
    warnings.showwarning = _one_line
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"b2m(\.|$)")


# The warnings already shown by this process: each is said once per command, however many subjects,
# stages or jobs of the command reach it (Python's own "once per place" registry is reset whenever a
# library changes the warning filters, which several do).
_shown: set[str] = set()


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    text = f"warning: {message}"
    if text not in _shown:
        _shown.add(text)
        print(text, file=sys.stderr if file is None else file)


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """`items` with a progress bar on an interactive terminal; elsewhere (a log file, CI) one stage line."""
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    if not sys.stderr.isatty():
        log.info(f"{desc}: {total} {unit}" if total is not None else desc)
    yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False, disable=None)
