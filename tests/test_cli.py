"""The entry scripts end to end on a small dataset: outputs, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from helpers.bids import make_bids

REPO = Path(__file__).resolve().parent.parent


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


def test_train_then_evaluate(tmp_path):
    root = make_bids(tmp_path / "bids", training_runs=(1, 2), test_runs=(1,))
    out = tmp_path / "run"
    res = run("train.py", f"data.root={root}", "data.preprocess.mask=null", f"out_dir={out}",
              "decoder.n_folds=3")
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test/id_acc", "test/top1", "test/top5", "test/pearson", "test/cosine",
                "baseline/mean_train/id_acc", "baseline/shuffled/id_acc", "sub-001/test/id_acc"):
        assert 0.0 <= metrics[key] <= 1.0 or key.endswith(("pearson", "cosine"))
    assert metrics["n_test_clips"] == 10
    with np.load(out / "predictions" / "sub-001.npz", allow_pickle=False) as f:
        assert f["pred"].shape == f["true"].shape == (10, 1, 112)
        assert len(set(f["clip_ids"])) == 10
    assert "decoder:" in (out / "config.yaml").read_text()

    res = run("evaluate.py", f"run={out}")
    assert res.returncode == 0, res.stderr
    evaluation = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert evaluation["test/id_acc"] == metrics["test/id_acc"]


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    res = run("train.py", f"data.root={tmp_path / 'missing'}", f"out_dir={out}")
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {tmp_path / 'missing'}: data root not found"
    assert not out.exists()

    root = make_bids(tmp_path / "bids")
    res = run("train.py", f"data.root={root}", "data.subjects=[4]", f"out_dir={out}")
    assert res.returncode == 2 and "sub-004" in res.stderr and "not found" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()

    res = run("train.py", "decoder.alphaz=3")
    assert res.returncode == 2 and res.stderr.strip() == "error: config: unknown key 'decoder.alphaz'"

    res = run("evaluate.py", f"run={tmp_path / 'nothing'}")
    assert res.returncode == 2 and "no sub-*.npz prediction files" in res.stderr


def test_retrieve_after_train(tmp_path):
    root = make_bids(tmp_path / "bids")
    out = tmp_path / "run"
    assert run("train.py", f"data.root={root}", "data.preprocess.mask=null", f"out_dir={out}",
               "decoder.n_folds=3").returncode == 0
    res = run("retrieve.py", f"run={out}", f"database={root / 'stimuli' / 'genres'}", "k=3")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "retrieval" / "retrieval_sub-001.json").read_text())
    assert len(manifest["clips"]) == 10
    for clip_id, clip in manifest["clips"].items():
        hits = clip["ranks"]
        assert [h["rank"] for h in hits] == [1, 2, 3]
        assert all(clip_id.rsplit("_", 1)[0] not in h["path"] for h in hits)  # the stimulus is excluded
        assert all((out / "retrieval" / h["file"]).exists() for h in hits)
    # Two shards of the index as two jobs of a multirun (a cluster launcher runs them the same way), then a
    # run without shards that completes the index and retrieves: the single build's retrieval.
    database, index = root / "stimuli" / "genres", tmp_path / "index"
    res = run("retrieve.py", "-m", f"run={out}", f"database={database}", f"index_dir={index}", "shards=2",
              "shard=0,1", f"out_dir={tmp_path / 'shard_jobs'}", "workers=1")
    assert res.returncode == 0, res.stderr
    assert "shard 0 of 2: " in res.stdout and "shard 1 of 2: " in res.stdout
    assert not list((tmp_path / "shard_jobs").glob("*/*"))  # the shard jobs write only the index
    res = run("retrieve.py", f"run={out}", f"database={database}", f"index_dir={index}", "k=3",
              f"out_dir={tmp_path / 'from_shards'}")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "from_shards" / "retrieval_sub-001.json").read_text())["clips"] == manifest["clips"]
    res = run("retrieve.py", f"run={out}", f"database={database}", "shards=2", "shard=1",
              f"out_dir={tmp_path / 'no_index'}")
    assert res.returncode == 2 and res.stderr.strip() == ("error: index_dir: a sharded build needs the index folder "
                                                          "its shards share; give index_dir")
    res = run("retrieve.py", f"run={out}", f"database={database}", f"index_dir={index}", "shards=2", "shard=2")
    assert res.returncode == 2 and res.stderr.strip() == "error: shard: 2 is not one of the shards 0 to 1"
    res = run("retrieve.py", f"run={out}", f"database={database}", "workers=-1")
    assert res.returncode == 2 and "config: workers must be \"auto\" or an integer >= 0" in res.stderr

    res = run("retrieve.py", f"run={out}", f"database={tmp_path / 'none'}")
    assert res.returncode == 2 and "database folder not found" in res.stderr
    res = run("retrieve.py", f"run={out}", f"database={root / 'stimuli' / 'genres'}", "precision=int8",
              f"out_dir={tmp_path / 'r8'}")
    assert res.returncode == 2 and "config: precision must be one of 'auto', 'fp32', 'bf16'" in res.stderr
    assert not (tmp_path / "r8").exists()


def test_multirun_writes_one_folder_per_job(tmp_path):
    root = make_bids(tmp_path / "bids")
    out = tmp_path / "grid"
    res = run("train.py", "-m", f"data.root={root}", "data.preprocess.mask=null", f"out_dir={out}",
              "decoder.n_folds=2,3", "trainer.logger=none")
    assert res.returncode == 0, res.stderr
    assert "job 0: " in res.stdout and "job 1: " in res.stdout
    folds = [yaml.safe_load((out / str(n) / "config.yaml").read_text())["decoder"]["n_folds"] for n in (0, 1)]
    assert folds == [2, 3] and (out / "multirun.yaml").is_file()
    assert all((out / str(n) / "metrics.json").is_file() for n in (0, 1))
    res = run("train.py", "-m", f"data.root={root}", "decoder.n_fold=2,3", f"out_dir={out}")
    assert res.returncode == 2 and res.stderr.strip() == "error: config: unknown key 'decoder.n_fold'"


def test_a_warning_is_said_once_per_command():
    """b2m's warnings print as one line each, once per process, even where a library resets Python's
    warning registry between them (as the raw-BIDS note came six times from one demo command)."""
    program = "\n".join([
        "import warnings",
        "from b2m.core import log",
        "log.setup()",
        "for subject in range(3):",
        "    with warnings.catch_warnings():",
        "        warnings.simplefilter('ignore')  # a library changing the filters resets the registry",
        "    warnings.warn_explicit('raw BIDS BOLD: no motion correction', UserWarning, 'b2m/data/subjects.py', 129,",
        "                           module='b2m.data.subjects')",
        "    warnings.warn_explicit(f'sub-00{subject}: dropped voxels', UserWarning, 'b2m/data/subjects.py', 139,",
        "                           module='b2m.data.subjects')",
    ])
    res = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == ["warning: raw BIDS BOLD: no motion correction", "warning: sub-000: dropped voxels",
                                       "warning: sub-001: dropped voxels", "warning: sub-002: dropped voxels"]
