"""Shared fixtures: a small BIDS dataset (helpers/bids.py) and a ridge run on voxels with known tunings."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from helpers.bids import make_bids

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
# The offline models of the embedding spaces are written once per test session, not into ~/.cache.
os.environ.setdefault("B2M_CACHE", tempfile.mkdtemp(prefix="b2m-test-cache-"))


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    return make_bids(tmp_path / "bids")


@pytest.fixture(scope="session")
def tuned_run(tmp_path_factory) -> Path:
    """A ridge training run on `helpers.tuned_bids.make_tuned_bids` (voxels with known tunings); built once."""
    from b2m.core.config import compose
    from b2m.jobs.train import train
    from helpers.tuned_bids import make_tuned_bids

    tmp = tmp_path_factory.mktemp("tuned")
    root = make_tuned_bids(tmp / "bids")
    cfg = compose("train", [f"data.root={root}", "data.preprocess.mask=null", f"out_dir={tmp / 'run'}",
                            "decoder.n_folds=3", "trainer.logger=none"])
    train(cfg)
    return tmp / "run"
