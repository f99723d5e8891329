"""Decoders: shapes, multi-subject training, losses against references, ridge wrapper,
resume after SIGKILL, and the sweep's command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from b2m.core import outputs
from b2m.core.config import compose
from b2m.core.errors import B2MError
from b2m.decoders import build_decoder
from b2m.decoders.losses import contrastive_loss, cosine_loss
from b2m.core.ridge import RidgeCV
from helpers.bids import make_bids

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["ridge", "contrastive", "mlp", "transformer"])
def test_shapes_for_several_subjects(name):
    cfg = compose("train", [f"decoder={name}"]).decoder
    if name in ("mlp", "transformer"):
        cfg.width = 32
    decoder = build_decoder(cfg, n_voxels=[50, 70], n_window=4, target_shape=(3, 8))
    for subject, v in enumerate([50, 70]):
        assert decoder(torch.randn(5, 4, v), subject).shape == (5, 3, 8)


def test_trained_decoder_learns_a_linear_map_for_both_subjects():
    torch.manual_seed(0)
    cfg = compose("train", ["decoder=transformer", "decoder.width=32", "decoder.dropout=0.0",
                                "decoder.input_dropout=0.0"]).decoder
    decoder = build_decoder(cfg, n_voxels=[20, 30], n_window=3, target_shape=(1, 4))
    maps = [torch.randn(3 * v, 4) / np.sqrt(3 * v) for v in (20, 30)]
    xs = [torch.randn(64, 3, v) for v in (20, 30)]
    ys = [(x.flatten(1) @ m).reshape(64, 1, 4) for x, m in zip(xs, maps)]
    decoder.set_target_stats(torch.cat(ys))
    opt = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    for step in range(300):
        s = step % 2
        batch = {"x": xs[s], "y": ys[s], "subject": torch.full((64,), s)}
        loss = decoder.training_step(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    decoder.eval()
    for s in (0, 1):
        r = np.corrcoef(decoder(xs[s], s).detach().flatten(), ys[s].flatten())[0, 1]
        assert r > 0.9


@pytest.mark.parametrize("name", ["contrastive", "mlp", "transformer"])
def test_a_trained_decoder_starts_where_the_ridge_is(name):
    """Before any step, a trained decoder predicts what the ridge fitted on the same windows predicts:
    the same voxel weights, features and CV-chosen alpha, and a correction that starts at zero."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 3, 40)).astype(np.float32)
    y = (x[:, :, :8].mean(1) @ rng.normal(size=(8, 10))).reshape(90, 2, 5) + rng.normal(size=(90, 2, 5))
    y = y.astype(np.float32)
    cfg = compose("train", [f"decoder={name}", "decoder.n_folds=3"]).decoder
    if name in ("mlp", "transformer"):
        cfg.width = 16
    decoder = build_decoder(cfg, n_voxels=[40], n_window=3, target_shape=(2, 5))
    decoder.set_target_stats(torch.from_numpy(y))
    decoder.start_from(0, x, y)
    ridge = build_decoder(compose("train", ["decoder=ridge", "decoder.n_folds=3"]).decoder, n_voxels=[40],
                          n_window=3, target_shape=(2, 5))
    ridge.fit_closed_form(0, x, y)
    assert torch.allclose(decoder.voxel_weight_0, ridge.voxel_weight_0)
    weight = decoder.voxel_weight_0
    assert (weight[:8] > 0).all() and weight[8:].mean() < weight[:8].min()  # the 8 voxels that carry y
    x_new = torch.from_numpy(rng.normal(size=(7, 3, 40)).astype(np.float32))
    np.testing.assert_allclose(decoder.eval()(x_new, 0).detach().numpy(), ridge(x_new, 0).numpy(), rtol=1e-4,
                               atol=1e-4)

    zeros = build_decoder(compose("train", [f"decoder={name}", "decoder.start=zeros", "decoder.voxels=all"]).decoder,
                          n_voxels=[40], n_window=3, target_shape=(2, 5))
    zeros.set_target_stats(torch.from_numpy(y))
    zeros.start_from(0, x, y)
    assert torch.equal(zeros.voxel_weight_0, torch.ones(40))
    expected = y.reshape(90, -1).mean(0).reshape(1, 2, 5).repeat(7, 0)  # the training mean
    np.testing.assert_allclose(zeros.eval()(x_new, 0).detach().numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key, value", [("start", "pca"), ("features", "max"), ("voxels", "top")])
def test_a_trained_decoder_names_a_bad_choice(key, value):
    cfg = compose("train", ["decoder=contrastive", f"decoder.{key}={value}"]).decoder
    with pytest.raises(B2MError, match=f"config: decoder.{key}: '{value}' is not one of"):
        build_decoder(cfg, n_voxels=[4], n_window=2, target_shape=(1, 3))


def test_losses_match_references():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    pn = p / np.linalg.norm(p, axis=1, keepdims=True)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    logits = pn @ tn.T / 0.1

    def xent(lg):
        lg = lg - lg.max(1, keepdims=True)
        return -np.mean(np.diag(lg) - np.log(np.exp(lg).sum(1)))

    expected = 0.5 * (xent(logits) + xent(logits.T))
    got = contrastive_loss(torch.tensor(p), torch.tensor(t), temperature=0.1)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(cosine_loss(torch.tensor(p), torch.tensor(t))) == pytest.approx(1 - np.mean((pn * tn).sum(1)))


@pytest.mark.parametrize("target_shape, form", [((1, 5), "primal"), ((2, 100), "kernel")])
def test_ridge_decoder_equals_the_solver(tmp_path, target_shape, form):
    """Few targets keep coef [F, T]; many (N (F + T) < F T) keep the dual weights [N, T] and the
    training features [N, F]. Either way the decoder predicts as the solver, and the fit survives a
    state dict and a safetensors round trip into a decoder that was built unfitted."""
    from omegaconf import OmegaConf

    from b2m.decoders import load_decoder, save_decoder

    rng = np.random.default_rng(0)
    n_out = target_shape[0] * target_shape[1]
    x, y = rng.normal(size=(60, 3, 40)).astype(np.float32), rng.normal(size=(60, *target_shape)).astype(np.float32)
    cfg = compose("train", ["decoder.n_folds=3", "decoder.features=fir", "decoder.voxels=all",
                            "decoder.alpha_per_target=true", "decoder.scoring=neg_mse"]).decoder
    decoder = build_decoder(cfg, n_voxels=[40], n_window=3, target_shape=target_shape)
    decoder.fit_closed_form(0, x, y)
    expected_rows = {"primal": (120, 0), "kernel": (60, 60)}[form]
    assert (decoder.coef_0.shape[0], decoder.train_features_0.shape[0]) == expected_rows
    assert decoder.coef_0.shape[1] == n_out and decoder.train_features_0.shape[1] == 120
    ridge = RidgeCV(alphas=list(cfg.alphas), n_folds=3).fit(x.reshape(60, -1), y.reshape(60, -1))
    x_new = torch.from_numpy(rng.normal(size=(9, 3, 40)).astype(np.float32))
    got = decoder(x_new, 0).detach()
    np.testing.assert_allclose(got.numpy().reshape(9, -1), ridge.predict(x_new.numpy().reshape(9, -1)),
                               rtol=1e-4, atol=1e-5)
    other = build_decoder(cfg, n_voxels=[40], n_window=3, target_shape=target_shape)
    other.load_state_dict(decoder.state_dict())  # the fit lives in buffers, so a checkpoint holds it
    assert torch.equal(other(x_new, 0), got)
    OmegaConf.save(OmegaConf.create({"decoder": cfg}), tmp_path / "config.yaml")
    save_decoder(tmp_path, decoder)
    assert torch.equal(load_decoder(tmp_path)(x_new, 0), got)


def test_ridge_checkpoint_of_another_size_is_refused(tmp_path):
    from omegaconf import OmegaConf

    from b2m.decoders import load_decoder, save_decoder

    cfg = compose("train", ["decoder.features=fir", "decoder.voxels=all"]).decoder
    decoder = build_decoder(cfg, n_voxels=[40], n_window=3, target_shape=(1, 5))
    decoder.fit_closed_form(0, np.random.default_rng(0).normal(size=(30, 3, 40)), np.ones((30, 1, 5)))
    save_decoder(tmp_path, decoder)
    OmegaConf.save(OmegaConf.create({"decoder": {**OmegaConf.to_container(cfg), "features": "mean"}}),
                   tmp_path / "config.yaml")
    with pytest.raises(B2MError, match="decoder.safetensors: tensors do not fit the config's decoder"):
        load_decoder(tmp_path)


def sklearn_encoding_weights(x, y, alphas, n_folds):
    """Per voxel: the best alpha's mean CV R^2 of a ridge from the standardised embedding to the voxel's
    window mean, written with scikit-learn; the weight is its square root (0 where R^2 <= 0)."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold

    yz = y.reshape(len(y), -1)
    yz = (yz - yz.mean(0)) / yz.std(0)
    target = x.mean(axis=1)
    scores = np.zeros((len(alphas), target.shape[1]))
    for i, alpha in enumerate(alphas):
        for train, val in KFold(n_folds).split(yz):
            model = Ridge(alpha=alpha).fit(yz[train], target[train])
            scores[i] += r2_score(target[val], model.predict(yz[val]), multioutput="raw_values") / n_folds
    return np.sqrt(np.clip(scores.max(0), 0, None))


def test_ridge_decoder_window_mean_and_encoding_weights_match_sklearn():
    """The default ridge: voxels weighted by their CV encoding r, the window mean, one shared alpha;
    the same decoder written with scikit-learn gives the same weights and predictions. Voxels without
    signal get (near) zero weight."""
    from sklearn.linear_model import RidgeCV as SklearnRidgeCV
    from sklearn.model_selection import KFold

    rng = np.random.default_rng(1)
    y = rng.normal(size=(80, 1, 6))
    signal = (y[:, 0] @ rng.normal(size=(6, 10)))[:, None, :] + 0.5 * rng.normal(size=(80, 4, 10))
    x = np.concatenate([signal, rng.normal(size=(80, 4, 30))], axis=2).astype(np.float32)  # 10 tuned, 30 noise
    cfg = compose("train", ["decoder.n_folds=4", "decoder.dtype=float64"]).decoder
    assert (cfg.features, cfg.voxels, cfg.alpha_per_target) == ("mean", "encoding", False)
    decoder = build_decoder(cfg, n_voxels=[40], n_window=4, target_shape=(1, 6))
    decoder.fit_closed_form(0, x, y)

    weights = sklearn_encoding_weights(x.astype(np.float64), y, list(cfg.encoding_alphas), 4)
    np.testing.assert_allclose(decoder.voxel_weight_0.numpy(), weights, rtol=1e-4, atol=1e-4)
    assert weights[:10].min() > 0.5 and weights[10:].mean() < 0.15
    features = x.mean(axis=1) * weights
    reference = SklearnRidgeCV(alphas=list(cfg.alphas), cv=KFold(4), scoring="r2").fit(features, y[:, 0])
    x_new = rng.normal(size=(7, 4, 40)).astype(np.float32)
    np.testing.assert_allclose(decoder(torch.from_numpy(x_new), 0).detach().numpy()[:, 0],
                               reference.predict(x_new.mean(axis=1) * weights), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("key, value", [("features", "delays"), ("voxels", "best")])
def test_ridge_decoder_rejects_unknown_choices(key, value):
    cfg = compose("train", [f"decoder.{key}={value}"]).decoder
    with pytest.raises(B2MError, match=f"decoder.{key}: '{value}' is not one of"):
        build_decoder(cfg, n_voxels=[4], n_window=2, target_shape=(1, 2))


KILL_SCRIPT = """
import os, signal, sys
from pytorch_lightning.callbacks import Callback
from b2m.core import outputs
from b2m.core.config import compose
from b2m.jobs.train import train

class KillAt(Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == int(os.environ["KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)

callbacks = [KillAt()] if "KILL_AT_STEP" in os.environ else []
train(compose("train", sys.argv[1:]), callbacks)
"""


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    root = make_bids(tmp_path / "bids", training_runs=(1, 2), test_runs=(1,), grid=(4, 4, 3))
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)

    def run(out, kill_at=None):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        if kill_at is not None:
            env["KILL_AT_STEP"] = str(kill_at)
        args = [f"data.root={root}", "data.preprocess.mask=null", f"out_dir={out}", "decoder=mlp",
                "decoder.width=16", "decoder.max_epochs=4", "trainer.logger=none", "trainer.patience=10",
                "data.batch_size=16"]
        return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True,
                              cwd=tmp_path, timeout=600)

    straight = run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    # 72 training windows in batches of 16: 5 steps per epoch; step 12 is in the middle of epoch 3.
    killed = run(tmp_path / "killed", kill_at=12)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "killed" / "checkpoints" / "last.ckpt").exists()
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = run(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    # Equal up to float32 rounding: the BLAS kernels of two processes may differ in the last bit (seen
    # once in CI: 1e-9 relative), while a resume that redid or skipped steps differs by orders more.
    assert a.keys() == b.keys() and all(b[k] == pytest.approx(v, rel=1e-6, abs=1e-7) for k, v in a.items())
    with np.load(tmp_path / "straight" / "predictions" / "sub-001.npz") as fa, \
            np.load(tmp_path / "killed" / "predictions" / "sub-001.npz") as fb:
        np.testing.assert_allclose(fa["pred"], fb["pred"], rtol=0, atol=1e-6)


def test_sweep_agent_command_line_is_accepted(monkeypatch):
    sweep = yaml.safe_load((REPO / "sweep.yaml").read_text())
    assert sweep["program"] == "train.py" and sweep["command"][-1] == "${args_no_hyphens}"
    monkeypatch.setenv("WANDB_RUN_ID", "abc123")  # what the agent sets for each run
    classes = {"mlp": "b2m.decoders.mlp.MLPDecoder", "transformer": "b2m.decoders.transformer.TransformerDecoder"}
    for pick in (0, -1):
        # What `wandb agent` passes for ${args_no_hyphens}: name=value for every parameter.
        args = []
        for key, spec in sweep["parameters"].items():
            if "value" in spec:
                value = spec["value"]
            else:
                value = spec["values"][pick] if "values" in spec else spec["min" if pick == 0 else "max"]
            args.append(f"{key}={value}")
        cfg = compose("train", args)
        assert cfg.decoder._target_ == classes[sweep["parameters"]["decoder"]["values"][pick]]
        assert cfg.decoder.lr == pytest.approx(sweep["parameters"]["decoder.lr"]["min" if pick == 0 else "max"])
        assert list(cfg.data.delays_tr) == sweep["parameters"]["data.delays_tr"]["values"][pick]
        assert cfg.out_dir == "outputs/sweep/abc123"  # one run folder per agent run


def test_ddp_preset_trains_on_two_processes(tmp_path):
    # trainer=ddp on two CPU processes (gloo): what the GPU preset does, minus the GPUs.
    root = make_bids(tmp_path / "bids", training_runs=(1, 2), test_runs=(1,), grid=(4, 4, 3))
    out = tmp_path / "ddp"
    args = [f"data.root={root}", "data.preprocess.mask=null", f"out_dir={out}", "trainer=ddp",
            "trainer.accelerator=cpu", "trainer.devices=2", "decoder=mlp", "decoder.width=16", "decoder.max_epochs=2",
            "trainer.logger=none", "data.batch_size=16"]
    proc = subprocess.run([sys.executable, "-m", "b2m", "train", "-v", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MEMBER: 2/2" in proc.stderr  # really two ranks
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test/id_acc"] <= 1.0 and (out / "checkpoints" / "best.ckpt").is_file()
    assert [p.name for p in out.glob(".*")] == [outputs.MARKER]  # no temporaries


def test_aligned_pooling_uses_the_other_subjects_through_shared_clips_only():
    """Each subject's ridge is fitted on its own rows and all the others', mapped onto its features by a ridge
    fitted on the clips they share; with one subject it is the ridge."""
    from b2m.decoders.alignment import pooled_onto

    rng = np.random.default_rng(0)
    n, k, alphas = 60, 6, [1.0, 10.0, 100.0]
    latent = rng.normal(size=(n + 20, k))
    y = (latent @ rng.normal(size=(k, 8))).reshape(-1, 1, 8).astype(np.float32)
    xs = [(latent @ rng.normal(size=(k, v)) + rng.normal(size=(n + 20, v)))[:, None, :].astype(np.float32)
          for v in (30, 40)]
    ids = [f"clip{i}" for i in range(n + 20)]
    overrides = ["decoder.n_folds=3", "decoder.voxels=all", f"decoder.alphas={alphas}"]
    pooled = build_decoder(compose("train", ["decoder=ridge_aligned", *overrides]).decoder, n_voxels=[30, 40],
                           n_window=1, target_shape=(1, 8))
    # Subject 0 has the first 50 clips only (a new subject): the map is fitted on those, and carries all 60 of
    # subject 1's clips into its pool.
    pooled.fit_subjects([xs[0][:50], xs[1][:n]], [y[:50], y[:n]], [ids[:50], ids[:n]])
    f0, f1 = xs[0][:, 0, :], xs[1][:, 0, :]
    align = RidgeCV(alphas=alphas, n_folds=3, scoring="r2", alpha_per_target=False).fit(f1[:50], f0[:50])
    x_pool, y_pool = pooled_onto(0, [f0[:50], f1[:n]], [y[:50, 0], y[:n, 0]], [ids[:50], ids[:n]], alphas, 3)
    assert x_pool.shape == (110, 30)
    np.testing.assert_allclose(x_pool[0:100:2], f0[:50], rtol=1e-6)  # clip by clip: its own row, then the other's
    np.testing.assert_allclose(x_pool[1:100:2], align.predict(f1[:50]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x_pool[100:], align.predict(f1[50:n]), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(y_pool[1:100:2], y[:50, 0])
    np.testing.assert_array_equal(y_pool[100:], y[50:n, 0])
    expected = RidgeCV(alphas=alphas, n_folds=3, scoring="r2", alpha_per_target=False).fit(x_pool, y_pool)
    np.testing.assert_allclose(pooled.predict_windows(xs[0][n:], 0).reshape(20, 8), expected.predict(f0[n:]),
                               rtol=1e-4, atol=1e-4)

    single = build_decoder(compose("train", ["decoder=ridge_aligned", *overrides]).decoder, n_voxels=[30],
                           n_window=1, target_shape=(1, 8))
    own = build_decoder(compose("train", overrides).decoder, n_voxels=[30], n_window=1, target_shape=(1, 8))
    single.fit_subjects([xs[0][:n]], [y[:n]], [ids[:n]])
    own.fit_closed_form(0, xs[0][:n], y[:n])
    assert torch.equal(single(torch.from_numpy(xs[0][n:]), 0), own(torch.from_numpy(xs[0][n:]), 0))


def test_a_new_subject_brings_a_few_runs_beside_the_others(tmp_path):
    """`data.subject_training_runs` gives one subject its own Training runs: a new subject's first run
    beside another subject's every run, the training clips that each one's decoder sees."""
    from b2m.core.runs import load_run
    from b2m.jobs.train import train

    root = make_bids(tmp_path / "bids", subjects=(1, 2), training_runs=(1, 2), test_runs=(1,))
    common = [f"data.root={root}", "data.preprocess.mask=null", "data.subjects=[1,2]", "decoder=ridge_aligned",
              "decoder.n_folds=3", "trainer.logger=none"]
    train(compose("train", [*common, f"out_dir={tmp_path / 'run'}", "data.subject_training_runs={sub-002: [1]}"]))
    train(compose("train", [*common, f"out_dir={tmp_path / 'one'}", "data.training_runs=[1]"]))
    few, one = load_run(tmp_path / "run").training_ids, load_run(tmp_path / "one").training_ids
    assert few["sub-002"] == one["sub-002"] and len(few["sub-001"]) > len(one["sub-001"])
    with pytest.raises(B2MError, match="data.subject_training_runs: sub-003 is not one of data.subjects"):
        train(compose("train", [*common, "data.subject_training_runs={sub-003: [1]}"]))
