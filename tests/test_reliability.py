"""Runs that are resumed, copied, moved, locked, or given bad values: each refused in one line or done right."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from b2m.core import outputs
from b2m.core.config import compose
from b2m.core.errors import B2MError
from b2m.core.io import locked
from b2m.jobs.evaluate import evaluate
from b2m.jobs.train import train
from helpers.bids import make_bids

REPO = Path(__file__).resolve().parent.parent
MLP = ["decoder=mlp", "decoder.width=16", "decoder.max_epochs=3", "trainer.logger=none", "data.batch_size=16",
       "data.preprocess.mask=null"]


def cli(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_bids(tmp_path_factory.mktemp("rel") / "bids", training_runs=(1, 2, 3), test_runs=(1,))


@pytest.fixture(scope="module")
def mlp_run(root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mlp") / "run"
    train(compose("train", [f"data.root={root}", f"out_dir={out}", *MLP]))
    return out


def predictions(run: Path) -> np.ndarray:
    with np.load(run / "predictions" / "sub-001.npz") as f:
        return f["pred"]


def test_copied_and_moved_runs_resume_their_own_files(root, mlp_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(mlp_run, copy)
    original = predictions(mlp_run)
    # The original's best weights change after the copy: the copy must not read them (Lightning keeps an
    # absolute best_model_path in last.ckpt).
    best = mlp_run / "checkpoints" / "best.ckpt"
    saved = best.read_bytes()
    state = torch.load(best, weights_only=True)
    state["state_dict"] = {k: v + 1.0 if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    torch.save(state, best)
    try:
        train(compose("train", [f"data.root={root}", f"out_dir={copy}", *MLP]))
    finally:
        best.write_bytes(saved)
    np.testing.assert_array_equal(predictions(copy), original)
    moved = tmp_path / "moved"
    copy.rename(moved)
    train(compose("train", [f"data.root={root}", f"out_dir={moved}", *MLP]))
    np.testing.assert_array_equal(predictions(moved), original)


def test_a_checkpoint_of_another_config_is_refused_or_restarted(root, mlp_run, tmp_path):
    out = tmp_path / "other"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copy(mlp_run / "checkpoints" / "last.ckpt", out / "checkpoints" / "last.ckpt")
    args = [f"data.root={root}", f"out_dir={out}", *MLP, "decoder.lr=1e-3"]
    with pytest.raises(B2MError, match="last.ckpt: written by another config"):
        train(compose("train", args))
    metrics = train(compose("train", [*args, "restart=true"]))
    assert json.loads((out / "metrics.json").read_text()) == metrics
    # Rerun with yet another config: refused by config.yaml, accepted with restart=true.
    with pytest.raises(B2MError, match=r"another config \(decoder.lr differs\); choose another out_dir, or restart"):
        train(compose("train", [*args[:-1], "decoder.lr=2e-3"]))
    train(compose("train", [*args[:-1], "decoder.lr=2e-3", "restart=true"]))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", "pickle"])
def test_damaged_or_planted_checkpoint_is_one_line_and_runs_nothing(root, mlp_run, tmp_path, content):
    out = tmp_path / "run"
    shutil.copytree(mlp_run, out)
    marker = tmp_path / "payload-ran"
    if content == "pickle":
        class Payload:
            def __reduce__(self):
                return (Path.touch, (marker,))

        content = pickle.dumps({"state_dict": {}, "x": Payload()})
    (out / "checkpoints" / "last.ckpt").write_bytes(content)
    res = cli("train.py", f"data.root={root}", f"out_dir={out}", *MLP, cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr[-2000:]
    assert "last.ckpt: not a readable checkpoint" in res.stderr and "restart=true" in res.stderr
    assert not marker.exists()


def test_a_second_job_on_the_same_out_dir_is_refused(root, tmp_path):
    out = tmp_path / "run"
    with locked(out):
        res = cli("train.py", f"data.root={root}", f"out_dir={out}", "data.preprocess.mask=null", cwd=tmp_path)
    assert res.returncode == 2 and "another b2m job" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()
    with locked(out):  # released at the end of the first
        pass


def test_out_dir_that_is_a_file(root, tmp_path):
    out = tmp_path / "file"
    out.write_text("not a folder")
    res = cli("train.py", f"data.root={root}", f"out_dir={out}", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip() == f"error: {out}: out_dir is a file, not a folder"
    assert out.read_text() == "not a folder"


BAD_TRAIN = [
    ("data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
    ("data.val_fraction=1.0", "data.val_fraction must be a number >= 0 and < 1"),
    ("data.delays_tr=[]", "data.delays_tr must be a non-empty list"),
    ("data.delays_tr=[-1,2]", "data.delays_tr must be a non-empty list, each item an integer >= 0"),
    ("seed=-1", "seed must be an integer >= 0"),
    ("data.test_runs=[]", "data.test_runs must be a non-empty list"),
    ("data.training_runs=[0]", "data.training_runs must be a non-empty list, each item an integer >= 1"),
    ("data.delays_tr=[400] data.preprocess.mask=null", r"sub-001 has \d+ training and \d+ test windows"),
    ("decoder.n_folds=1", "decoder.n_folds must be an integer >= 2"),
    ("decoder.alphas=[]", "decoder.alphas must be a non-empty list"),
    ("decoder.alphas=[1.0,-2.0]", "decoder.alphas must be a non-empty list, each item a number > 0"),
    ("decoder=mlp decoder.dropout=1.0", "decoder.dropout must be a number >= 0 and < 1"),
    ("decoder=mlp decoder.input_dropout=-0.1", "decoder.input_dropout must be"),
    ("decoder=mlp decoder.max_epochs=0", "decoder.max_epochs must be an integer >= 1"),
    ("decoder=transformer decoder.lr=0", "decoder.lr must be a number > 0"),
    ("decoder=mlp decoder.loss.temperature=0", "decoder.loss.temperature must be a number > 0"),
    ("decoder=mlp decoder.loss.mse=0 decoder.loss.contrastive=0", "mse, cosine and contrastive are all 0"),
    ("decoder=mlp trainer.patience=0", "trainer.patience must be an integer >= 1"),
    ("decoder=mlp trainer.accelerator=gpu", "trainer.accelerator=gpu, but torch"),
    ("decoder.device=cuda", "decoder.device=cuda, but torch"),
    ("decoder=mlp trainer.precision=banana", "trainer.precision must be one of '32-true'"),
    ("decoder=mlp trainer.devices=0", "trainer.devices must be a count >= 1"),
    ("trainer.logger=xyz", "trainer.logger must be one of 'wandb', 'csv', 'none'"),
    ("decoder.scoring=xx", "decoder.scoring must be one of 'r2', 'neg_mse'"),
    ("decoder.dtype=float8", "decoder.dtype must be one of 'float32', 'float64'"),
    ("data.preprocess.poly_order=-1", "data.preprocess.poly_order must be an integer >= 0"),
    ("data.preprocess.median_window_s=0", "data.preprocess.median_window_s must be a number > 0"),
]


@pytest.mark.parametrize("overrides, message", BAD_TRAIN)
def test_out_of_range_train_values_fail_before_anything_is_written(root, tmp_path, overrides, message):
    if "gpu" in overrides or "cuda" in overrides:
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    out = tmp_path / "run"
    pattern = message if "\\d" in message else message.replace("(", r"\(").replace("[", r"\[")
    with pytest.raises(B2MError, match=pattern):
        train(compose("train", [f"data.root={root}", f"out_dir={out}", *overrides.split()]))
    assert not out.exists()


@pytest.mark.parametrize("job, overrides, message", [
    ("evaluate", "n_boot=0", "n_boot must be an integer >= 1"),
    ("evaluate", "ci_level=1.0", "ci_level must be a number > 0 and < 1"),
    ("evaluate", "encoding.n_folds=1", "encoding.n_folds must be an integer >= 2"),
    ("evaluate", "encoding.alphas=[]", "encoding.alphas must be a non-empty list"),
    ("evaluate", "max_draws=0", "max_draws must be an integer >= 1"),
    ("generate", "generator.temperature=0", "generator.temperature must be a number > 0"),
    ("generate", "generator.n_samples=-1", "generator.n_samples must be an integer >= 1"),
    ("generate", "generator.top_k=-5", "generator.top_k must be an integer >= 0"),
    ("generate", "generator.batch_size=0", "generator.batch_size must be an integer >= 1"),
    ("generate", "generator.precision=int4", "generator.precision must be one of 'auto', 'fp32', 'bf16', 'fp16', 'int8'"),
    ("retrieve", "k=0", "k must be an integer >= 1"),
])
def test_out_of_range_values_of_the_other_jobs(tmp_path, job, overrides, message):
    res = cli(f"{job}.py", *overrides.split(), f"out_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith(f"error: config: {message}"), res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_failed_evaluation_leaves_the_previous_one(mlp_run, monkeypatch):
    import b2m.jobs.evaluate as job

    cfg = ["n_boot=20", "logo=false", "genre=false", "report.enabled=false"]
    first = evaluate(compose("evaluate", [f"run={mlp_run}", *cfg])).flat()
    folder = mlp_run / "evaluation"
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))

    def fail(*args, **kwargs):
        raise B2MError("summary: planted failure")

    monkeypatch.setattr(job, "write_summary", fail)
    with pytest.raises(B2MError, match="planted failure"):
        evaluate(compose("evaluate", [f"run={mlp_run}", *cfg, "n_boot=30"]))
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert json.loads((folder / "metrics.json").read_text())["n_boot"] == first["n_boot"] == 20
    assert [p.name for p in mlp_run.iterdir() if p.name.startswith(".")] == [outputs.MARKER]  # no .partial left


def test_a_trained_mlp_reloads_from_safetensors(root, mlp_run):
    from b2m.data.subjects import load_subject
    from b2m.decoders import load_decoder
    from b2m.targets import build_space
    from b2m.targets.dataset import clip_targets

    cfg = compose("train", [f"data.root={root}", *MLP])
    space = build_space(cfg.target)
    subject = load_subject(cfg.data, "sub-001", lambda clips: clip_targets(cfg.data, space, clips), 0)
    decoder = load_decoder(mlp_run)
    assert not decoder.training  # eval mode: no dropout
    np.testing.assert_allclose(decoder.predict_windows(subject.test.x, 0), predictions(mlp_run), atol=1e-5)


@pytest.mark.parametrize("overrides, message", [
    ("spaces=[nope]", "spaces: unknown space 'nope'"),
    ("report.subjects=[9]", "report.subjects: sub-009 is not a subject of"),
])
def test_evaluate_names_an_unknown_space_or_subject(mlp_run, tmp_path, overrides, message):
    out = tmp_path / "evaluation"
    with pytest.raises(B2MError, match=message):
        evaluate(compose("evaluate", [f"run={mlp_run}", f"out_dir={out}", *overrides.split()]))
    assert not out.exists() and not (tmp_path / ".evaluation.partial").exists()


def test_an_output_folder_that_cannot_be_made_is_one_error(tmp_path):
    from b2m.core.io import write_json

    (tmp_path / "file").write_text("x")
    with pytest.raises(B2MError, match=r"file/sub: cannot write metrics.json here"):
        write_json(tmp_path / "file" / "sub" / "metrics.json", {})
