"""wandb for the jobs: the mode (online under a sweep agent), the run's flat config, and the
evaluation's metrics added to the training run's wandb run.

    <run>/wandb/latest-run -> offline-run-<time>-<id> or run-<time>-<id>   (wandb's own folder)
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def wandb_mode(configured: str, environ: dict | None = None) -> str:
    """WANDB_MODE if set; `online` under a sweep agent (it sets WANDB_SWEEP_ID and waits for the
    metric); else the config's `trainer.wandb_mode`."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_MODE"):
        return environ["WANDB_MODE"]
    return "online" if environ.get("WANDB_SWEEP_ID") else configured


def flat_config(cfg: DictConfig) -> dict:
    """The resolved config as `{"decoder.lr": 3e-05, ...}`: the keys a sweep sets, none nested."""
    def walk(node, prefix: str):
        if isinstance(node, dict) and node:
            for key, value in node.items():
                yield from walk(value, f"{prefix}{key}.")
        else:
            yield prefix.rstrip("."), node

    return dict(walk(OmegaConf.to_container(cfg, resolve=True), ""))


def start(cfg: DictConfig, out_dir: Path):
    """The wandb run of a training job (`trainer.wandb_project`, files under `<out_dir>/wandb/`)."""
    import wandb

    return wandb.init(project=cfg.trainer.wandb_project, dir=str(out_dir), mode=wandb_mode(cfg.trainer.wandb_mode),
                      config=flat_config(cfg))


def training_run_id(run_dir: Path) -> str | None:
    """The id of the wandb run a training run folder logged to, or None."""
    latest = run_dir / "wandb" / "latest-run"
    return latest.resolve().name.rsplit("-", 1)[-1] if latest.exists() else None


def log_evaluation(train_cfg: DictConfig, run_dir: Path, metrics: dict) -> None:
    """Add the evaluation's numbers to the training run's wandb summary as `eval/<key>` (resuming that
    run by id, in its mode), when the training run logged to wandb; else nothing."""
    tcfg = train_cfg.get("trainer")
    run_id = training_run_id(run_dir)
    if tcfg is None or tcfg.get("logger") != "wandb" or run_id is None:
        return
    import wandb

    numbers = {f"eval/{k}": v for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    with wandb.init(project=tcfg.wandb_project, dir=str(run_dir), id=run_id, resume="allow",
                    mode=wandb_mode(tcfg.wandb_mode)) as run:
        run.summary.update(numbers)
    log.info(f"evaluation metrics added to wandb run {run_id}")
