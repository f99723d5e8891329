"""The run-folder contract: what train writes, every other job reads, with one set of checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from b2m.core import runs
from b2m.core.clips import Clip
from b2m.core.errors import B2MError
from b2m.core.metrics import Standardiser
from b2m.core.io import save_npz

CLIPS = [Clip("blues", 1, 0.0, 15.0), Clip("jazz", 2, 3.5, 18.5), Clip("rock", 3, 6.0, 21.0)]


def write_run(folder, n=3, width=4):
    rng = np.random.default_rng(0)
    cfg = OmegaConf.create({"data": {"root": "x"}, "target": {"_target_": "t"}, "seed": 1, "out_dir": str(folder)})
    runs.write_config(folder, cfg)
    runs.write_clips(folder, {"sub-001": CLIPS[:2]}, {"sub-001": CLIPS[:n]})
    pred, true = (rng.standard_normal((n, 1, width)).astype(np.float32) for _ in range(2))
    runs.write_predictions(folder, "sub-001", pred, true, [c.clip_id for c in CLIPS[:n]],
                         Standardiser.fit(true))
    return cfg, pred, true


def test_round_trip(tmp_path):
    cfg, pred, true = write_run(tmp_path / "run")
    run = runs.load_run(tmp_path / "run")
    assert OmegaConf.to_container(run.cfg) == OmegaConf.to_container(cfg)
    p = run.subjects["sub-001"]
    np.testing.assert_array_equal(p.pred, pred)
    np.testing.assert_allclose(p.train_mean, true.mean(0), rtol=1e-6)
    np.testing.assert_allclose(p.scale.std, true.std(0), rtol=1e-6)
    assert run.test_clips("sub-001") == CLIPS  # clip metadata without reading BIDS events
    assert run.training_clips("sub-001") == CLIPS[:2]


def test_another_config_in_the_same_folder_is_refused(tmp_path):
    cfg, _, _ = write_run(tmp_path / "run")
    runs.write_config(tmp_path / "run", cfg)  # the same config: a resume
    cfg.seed = 2
    with pytest.raises(B2MError, match=r"config.yaml: out_dir holds a run with another config \(seed differs\)"):
        runs.write_config(tmp_path / "run", cfg)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("train_mean"), "lacks train_mean"),
    (lambda a: a.pop("train_std"), "lacks train_std"),
    (lambda a: a.update(train_std=-a["train_std"]), "train_std must be finite and >= 0"),
    (lambda a: a.update(true=a["true"][:2]), "do not match"),
    (lambda a: a.update(pred=a["pred"].astype(np.float64)), "pred must be float32"),
    (lambda a: a["pred"].__setitem__((0, 0, 0), np.nan), "NaN or infinite"),
    (lambda a: a.update(clip_ids=np.array(["a_b", "a_b", "c"])), "not unique"),
])
def test_bad_prediction_files_name_the_file(tmp_path, change, message):
    write_run(tmp_path / "run")
    path = tmp_path / "run" / "predictions" / "sub-001.npz"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    save_npz(path, **arrays)
    with pytest.raises(B2MError, match=f"sub-001.npz: .*{message}"):
        runs.load_run(tmp_path / "run")


def test_missing_parts_of_a_run(tmp_path):
    with pytest.raises(B2MError, match="training run folder not found"):
        runs.load_run(tmp_path / "nothing")
    write_run(tmp_path / "run")
    (tmp_path / "run" / "clips.json").write_text(json.dumps({"clips": {}, "subjects": {"sub-001": {"training": []}}}))
    with pytest.raises(B2MError, match=r"clips.json: clip blues.00001_0.00 of .*sub-001.npz is not listed"):
        runs.load_run(tmp_path / "run")
    (tmp_path / "run" / "clips.json").unlink()
    with pytest.raises(B2MError, match="clips.json: the run's clip table is missing"):
        runs.load_run(tmp_path / "run")
    (tmp_path / "run" / "config.yaml").unlink()
    with pytest.raises(B2MError, match="config.yaml: the run's resolved config is missing"):
        runs.load_run(tmp_path / "run")
    with pytest.raises(B2MError, match="no sub-\\*.npz prediction files"):
        runs.prediction_files(tmp_path)


BLUES = "blues.00001_0.00"  # the id of CLIPS[0]


def set_entry(key, value):
    return lambda table: table["clips"][BLUES].__setitem__(key, value)


@pytest.mark.parametrize("change, message", [
    (set_entry("genre", "polka"), f"clip {BLUES}: unknown genre 'polka' \\(expected one of blues, "),
    (set_entry("genre", None), f"clip {BLUES}: unknown genre None"),
    (set_entry("track", "1"), f"clip {BLUES}: track must be an integer >= 0, got '1'"),
    (set_entry("track", 1.5), f"clip {BLUES}: track must be an integer >= 0, got 1.5"),
    (set_entry("track", -1), f"clip {BLUES}: track must be an integer >= 0, got -1"),
    (set_entry("track", True), f"clip {BLUES}: track must be an integer >= 0, got True"),
    (set_entry("start", float("nan")), f"clip {BLUES}: start must be a finite number of seconds >= 0, got nan"),
    (set_entry("start", -2.0), f"clip {BLUES}: start must be a finite number of seconds >= 0, got -2.0"),
    (set_entry("end", "15"), f"clip {BLUES}: end must be a finite number of seconds >= 0, got '15'"),
    (set_entry("end", float("inf")), f"clip {BLUES}: end must be a finite number of seconds >= 0, got inf"),
    (set_entry("end", 0.0), f"clip {BLUES}: end 0.0 s is not after start 0.0 s"),
    (lambda t: t["clips"][BLUES].pop("end"), f"clip {BLUES}: expected an object with genre, track, start and end"),
    (lambda t: t["clips"].__setitem__(BLUES, [1]), f"clip {BLUES}: expected an object"),
    (set_entry("genre", "jazz"), f"clip {BLUES}: the id does not match its entry, whose id is jazz.00001_0.00"),
    (set_entry("start", 1.0), f"clip {BLUES}: the id does not match its entry, whose id is blues.00001_1.00"),
    (lambda t: t.__setitem__("clips", []), "not a clip table \\(expected an object"),
    (lambda t: t.pop("subjects"), "not a clip table \\(expected an object"),
    (lambda t: t["subjects"]["sub-001"].__setitem__("training", BLUES), "subjects.sub-001.training must be a list"),
    (lambda t: t["subjects"].__setitem__("sub-001", [BLUES]), "subjects.sub-001.training must be a list"),
])
def test_bad_clip_entries_name_the_clip(tmp_path, change, message):
    write_run(tmp_path / "run")
    path = tmp_path / "run" / "clips.json"
    table = json.loads(path.read_text())
    change(table)
    path.write_text(json.dumps(table))  # NaN and Infinity as Python's json writes them
    with pytest.raises(B2MError, match=f"clips.json: {message}") as err:
        runs.load_run(tmp_path / "run")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unreadable_clip_tables(tmp_path):
    write_run(tmp_path / "run")
    path = tmp_path / "run" / "clips.json"
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(B2MError, match="clips.json: not a clip table \\(invalid JSON"):
        runs.load_run(tmp_path / "run")
    path.unlink()
    path.mkdir()
    with pytest.raises(B2MError, match="clips.json: the run's clip table expected, found a folder"):
        runs.load_run(tmp_path / "run")


def test_a_fitted_decoder_is_saved_and_loads_without_pickle(bids, tmp_path):
    import nibabel as nib

    from b2m.core.config import compose
    from b2m.data.subjects import load_subject
    from b2m.decoders import load_decoder
    from b2m.jobs.train import train
    from b2m.targets import build_space
    from b2m.targets.dataset import clip_targets

    out = tmp_path / "run"
    data = [f"data.root={bids}", "data.preprocess.mask=null"]
    train(compose("train", data + [f"out_dir={out}", "decoder.n_folds=3", "trainer.logger=none"]))
    # The test windows again, from the preprocessing cache, through the reloaded decoder.
    cfg = compose("train", data)
    space = build_space(cfg.target)
    subject = load_subject(cfg.data, "sub-001", lambda clips: clip_targets(cfg.data, space, clips), 0)
    saved = np.load(out / "predictions" / "sub-001.npz")
    np.testing.assert_allclose(load_decoder(out).predict_windows(subject.test.x, 0), saved["pred"], atol=1e-5)
    mask = np.asarray(nib.load(str(out / "decoder" / "sub-001_mask.nii.gz")).dataobj) > 0
    assert (mask == subject.data.mask).all()
    assert nib.load(str(out / "decoder" / "sub-001_voxel_weight.nii.gz")).shape == mask.shape
    (out / "decoder.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(B2MError, match="decoder.safetensors: not a b2m decoder file"):
        load_decoder(out)
    with pytest.raises(B2MError, match="missing; is .* a train.py run folder"):
        load_decoder(tmp_path)
