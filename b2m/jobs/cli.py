"""The command line of every job: Hydra's (`--help`, `--cfg job`, `-m` multirun, launchers),
with overrides checked first and user errors printed as one line.

    python train.py decoder=mlp decoder.lr=1e-3        python -m b2m train decoder=mlp
    python train.py -m decoder=ridge,mlp seed=0,1       b2m-train --cfg job
    python train.py -v ...                              (the libraries' own notes too: b2m.core.log)

A bad override or a B2MError inside a job prints `error: <file or key>: <problem>` and exits
with status 2, with no traceback and nothing written to out_dir. Under multirun, job n writes
into `<out_dir>/<n>/` (see `b2m/conf/_hydra.yaml`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from b2m.core import log, outputs
from b2m.core.config import check_overrides
from b2m.core.errors import B2MError
from b2m.core.io import locked

VERBOSE = ("-v", "--verbose")


def _train(cfg: DictConfig) -> None:
    from b2m.jobs.train import train as job

    metrics = job(cfg)
    print(f"test/id_acc = {metrics['test/id_acc']:.3f} (chance 0.5); results in {cfg.out_dir}/metrics.json")


def _evaluate(cfg: DictConfig) -> None:
    from b2m.evaluation.tables import terminal_lines
    from b2m.jobs.evaluate import evaluate as job

    for line in terminal_lines(job(cfg)):
        print(line)
    print(f"results in {cfg.out_dir}: metrics.json, summary.md"
          + (", report/index.html" if cfg.report.enabled else "")
          + (", encoding/" if cfg.encoding.enabled else ""))


def _generate(cfg: DictConfig) -> None:
    from pytorch_lightning.utilities import rank_zero_info

    from b2m.jobs.generate import generate as job

    # Every DDP rank runs this; the summary is the same on all of them.
    summary = job(cfg)
    rank_zero_info(f"generated {summary['n_generated']} of {summary['n_wavs']} wavs "
                   f"({summary['missing']} missing); wavs and manifest.jsonl in {cfg.out_dir}"
                   + ("; brain-guided selection in selection_*.json" if cfg.select.method == "brain" else ""))


def _retrieve(cfg: DictConfig) -> None:
    from b2m.jobs.retrieve import index_shard, retrieve as job

    if cfg.shards > 1:
        summary = index_shard(cfg)
        print(f"shard {cfg.shard} of {cfg.shards}: {summary['new']} file(s) embedded now, {len(summary['errors'])} "
              f"unreadable; {summary['files']} in {cfg.index_dir} so far (retrieve.py without shards completes it)")
        return
    manifests = job(cfg)
    print(f"retrieved top-{cfg.k} for {len(manifests)} subject(s); manifests in {cfg.out_dir}/retrieval_*.json"
          + ("; brain-guided selection in selection_*.json" if cfg.select.method == "brain" else ""))


# Job name -> what the command line runs and prints. The jobs import lazily: `--help` stays fast.
JOBS: dict[str, Callable[[DictConfig], None]] = {
    "train": _train, "evaluate": _evaluate, "generate": _generate, "retrieve": _retrieve,
}


# Job name -> the config keys of the folders and files it reads, which its out_dir must stay apart from.
INPUTS: dict[str, tuple[str, ...]] = {
    "train": (), "evaluate": ("run", "retrieval", "generated", "listening"), "generate": ("predictions",),
    "retrieve": ("run", "database"),
}


def resolve(cfg: DictConfig) -> None:
    """Resolve every `${...}` interpolation of `cfg` in place; one that cannot be resolved is a B2MError."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise B2MError(f"config: {key + ': ' if key else ''}{str(err).splitlines()[0]}") from None


def run(job: str, argv: Sequence[str] | None = None) -> int:
    """Run `job` with Hydra on the command line `argv` (default: `sys.argv[1:]`); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    log.setup(verbose=any(a in VERBOSE for a in argv) or os.environ.get(log.VERBOSE_VARIABLE) == "1")
    argv = [a for a in argv if a not in VERBOSE]
    args = get_args_parser().parse_args(argv)  # Hydra's own flags; exits 2 with usage on a bad one
    try:
        modes = [args.run, args.multirun, args.cfg, args.info, args.shell_completion]
        if sum(bool(m) for m in modes) > 1:
            raise B2MError("command line: give only one of --run, --multirun, --cfg, --info, --shell-completion")
        check_overrides(job, args.overrides, multirun=args.multirun)
    except B2MError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    def task(cfg: DictConfig) -> Any:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            print(f"job {HydraConfig.get().job.num}: {' '.join(HydraConfig.get().overrides.task)}", flush=True)
            cfg.out_dir = HydraConfig.get().runtime.output_dir
        try:
            resolve(cfg)
        except B2MError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        out_dir = Path(cfg.out_dir)
        created = not out_dir.exists() or HydraConfig.get().mode == RunMode.MULTIRUN
        had_marker = (out_dir / outputs.MARKER).exists()
        try:
            inputs = {key: Path(str(cfg[key])) for key in INPUTS[job] if cfg.get(key)}
            # DDP ranks after the first run inside the first rank's job, which holds the lock.
            with locked(out_dir) if os.environ.get("LOCAL_RANK", "0") == "0" else contextlib.nullcontext():
                outputs.check_out_dir(out_dir, job, inputs)
                # The job marks out_dir as its own once its input is checked (`outputs.mark`).
                JOBS[job](cfg)
        except B2MError as err:
            print(f"error: {err}", file=sys.stderr)
            # A job validates before it writes; a folder this call made (Hydra's, or a job's) goes too.
            if created and out_dir.is_dir():
                shutil.rmtree(out_dir)
            elif not had_marker and out_dir.is_dir():
                outputs.unmark(out_dir)
            raise SystemExit(2) from None

    main = hydra.main(version_base=None, config_path="pkg://b2m.conf", config_name=job)(task)
    saved = sys.argv
    sys.argv = [saved[0], *argv]
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0) if isinstance(exit_.code, int) or exit_.code is None else 1
    finally:
        sys.argv = saved
    return 0


def train() -> None:
    """Console script `b2m-train`."""
    sys.exit(run("train"))


def evaluate() -> None:
    """Console script `b2m-evaluate`."""
    sys.exit(run("evaluate"))


def generate() -> None:
    """Console script `b2m-generate`."""
    sys.exit(run("generate"))


def retrieve() -> None:
    """Console script `b2m-retrieve`."""
    sys.exit(run("retrieve"))
