"""The data layer: BIDS reading, NIfTI access, preprocessing, samples, data module, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi
import soundfile as sf

from b2m.core.config import compose
from b2m.data import preprocess as preprocess_module
from b2m.data.bids import BIDSDataset, read_events, repetition_time, subject_label
from b2m.data.datamodule import BrainDataModule
from b2m.data.subjects import load_preprocessed, load_subject
from b2m.data.nifti import load_mask, open_run, read_masked
from b2m.data.preprocess import PreprocessConfig, clean, zscore
from b2m.data.samples import split_by_clip
from b2m.core.clips import GENRES
from b2m.core.errors import B2MError
from b2m.targets import space_by_name
from b2m.targets.dataset import clip_targets
from helpers.bids import META, make_bids, write_run


def data_cfg(root: Path, *extra: str):
    cfg = compose("train", [f"data.root={root}", "data.preprocess.mask=null", *extra])
    return cfg.data


def acoustic(cfg):
    """The targets of `load_subject`: acoustic embeddings of the dataset's stimuli."""
    space = space_by_name("acoustic")
    return lambda clips: clip_targets(cfg, space, clips)


# ---------------------------------------------------------------- events and layout

def test_events_of_every_real_run_parse_with_quotes_stripped():
    paths = sorted(META.glob("sub-*/func/*_events.tsv"))
    assert len(paths) == 5 * 18
    train, test = set(), set()
    for path in paths:
        events = read_events(path)
        assert len(events) == 41
        assert [e.onset for e in events] == [15.0 * i for i in range(41)]
        target = train if "Training" in path.name else test
        target.update(e.clip for e in events[1:])
    # The dataset README's counts: 480 training clips (48 per genre) and 60 test clips.
    assert len(train) == 480 and len(test) == 60
    assert all(sum(c.genre == g for c in train) == 48 for g in {c.genre for c in train})
    assert not {c.genre for c in train} - set(GENRES)


def test_subject_labels_and_runs(bids):
    ds = BIDSDataset(bids)
    assert subject_label(1) == subject_label("001") == subject_label("sub-001") == "sub-001"
    runs = ds.runs("sub-001", "Training")
    assert [r.run for r in runs] == [1]
    assert repetition_time(runs[0]) == 1.5
    with pytest.raises(B2MError, match="sub-007.*not found"):
        ds.runs("sub-007", "Training")
    with pytest.raises(B2MError, match=r"run\(s\) \[5\] not found"):
        ds.select_runs("sub-001", "Test", [5])


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("genre\t", "style\t"), "lacks column.*genre"),
    (lambda t: t.replace("'blues'", "'polka'", 1), "unknown genre 'polka'"),
    (lambda t: t.split("\n")[0] + "\n", "no rows"),
])
def test_bad_events_are_one_line_errors(tmp_path, edit, message):
    src = META / "sub-001" / "func" / "sub-001_task-Training_run-01_events.tsv"
    path = tmp_path / src.name
    path.write_text(edit(src.read_text()))
    with pytest.raises(B2MError, match=message) as err:
        read_events(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- NIfTI

def test_read_masked_matches_nibabel_with_scaling(tmp_path):
    data = np.random.default_rng(1).integers(-300, 3000, size=(5, 6, 7, 50)).astype(np.int16)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(0.25, 10.0)
    mask = np.random.default_rng(2).random((5, 6, 7)) > 0.5
    for name in ("a.nii", "a.nii.gz"):
        nib.save(img, str(tmp_path / name))
        expected = nib.load(str(tmp_path / name)).get_fdata()[mask].T
        got = read_masked(open_run(tmp_path / name), mask)
        assert got.dtype == np.float32 and got.shape == (50, mask.sum())
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_missing_and_truncated_nifti(tmp_path):
    with pytest.raises(B2MError, match="missing"):
        open_run(tmp_path / "nope.nii")
    path = tmp_path / "run.nii"
    write_run(path, np.ones((4, 4, 3, 20)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(B2MError, match="truncated NIfTI"):
        open_run(path)
    path.write_bytes(b"not a nifti at all")
    with pytest.raises(B2MError, match="not a readable NIfTI"):
        open_run(path)


def test_mask_of_wrong_shape(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.uint8), np.eye(4)), str(tmp_path / "m.nii.gz"))
    with pytest.raises(B2MError, match=r"mask has shape \(3, 3, 3\), the BOLD grid is \(4, 4, 3\)"):
        load_mask(tmp_path / "m.nii.gz", (4, 4, 3))


# ---------------------------------------------------------------- preprocessing

def test_median_detrend_matches_scipy_and_poly_matches_polyfit():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(410, 30)) + np.linspace(0, 5, 410)[:, None]).astype(np.float32)
    cfg = PreprocessConfig(detrend="median", median_window_s=240.0)
    expected = x - ndi.median_filter(x, size=(161, 1), mode="nearest")
    np.testing.assert_allclose(clean(x, 1.5, cfg), expected, atol=1e-5)

    cfg = PreprocessConfig(detrend="poly", poly_order=2)
    t = np.linspace(-1, 1, 410)
    fitted = np.stack([np.polyval(np.polyfit(t, x[:, v].astype(np.float64), 2), t) for v in range(30)], 1)
    np.testing.assert_allclose(clean(x, 1.5, cfg), x - fitted, atol=1e-4)
    with pytest.raises(B2MError, match="detrend"):
        PreprocessConfig(detrend="wavelet")


def test_zscore_flags_constant_and_nan_voxels():
    x = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    x[:, 1] = 3.0
    x[5, 2] = np.nan
    z, bad = zscore(x)
    assert bad.tolist() == [False, True, True, False]
    np.testing.assert_allclose(z[:, [0, 3]].mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(z[:, [0, 3]].std(0), 1, atol=1e-5)


def test_nan_and_constant_voxels_are_dropped_with_a_warning(bids):
    path = bids / "sub-001" / "func" / "sub-001_task-Training_run-01_bold.nii"
    data = np.asanyarray(nib.load(str(path)).dataobj).copy()
    data[2, 2, 2, :] = 700  # constant inside the brain
    write_run(path, data)
    with pytest.warns(UserWarning, match="dropped 1 of"):
        splits = load_subject(data_cfg(bids), "sub-001", acoustic(data_cfg(bids)), seed=0)
    assert splits.data.n_voxels == 3 * 4 * 3 - 1
    assert not splits.data.mask[2, 2, 2]


def test_preprocessing_is_cached(bids, monkeypatch):
    cfg = data_cfg(bids)
    first = load_subject(cfg, "sub-001", acoustic(cfg), seed=0)
    calls = []
    monkeypatch.setattr(preprocess_module, "read_masked", lambda *a: calls.append(a))
    second = load_subject(cfg, "sub-001", acoustic(cfg), seed=0)
    assert calls == []
    np.testing.assert_array_equal(first.test.x, second.test.x)
    # A different preprocessing config is a different cache entry.
    monkeypatch.undo()
    median = data_cfg(bids, "data.preprocess.detrend=median")
    third = load_subject(median, "sub-001", acoustic(median), seed=0)
    assert not np.allclose(first.test.x, third.test.x)


def test_preprocessing_cache_follows_the_tr(bids, monkeypatch):
    func = bids / "sub-001" / "func"
    for bold in func.glob("*_bold.nii"):  # headers that state no TR (pixdim[4] = 0): the sidecars give it
        write_run(bold, np.asanyarray(nib.load(str(bold)).dataobj), tr=0.0)
    cfg = data_cfg(bids, "data.preprocess.detrend=median")  # the median filter's width is in seconds
    first = load_preprocessed(cfg, "sub-001")
    for sidecar in func.glob("*_bold.json"):
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "RepetitionTime": 2.0}))
    reads = []
    original = preprocess_module.read_masked
    monkeypatch.setattr(preprocess_module, "read_masked", lambda *a: reads.append(a) or original(*a))
    second = load_preprocessed(cfg, "sub-001")
    assert second.tr == 2.0 and len(reads) == 2
    assert not np.allclose(first.data.runs["Test-01"], second.data.runs["Test-01"])


@pytest.mark.parametrize("zoom, unit, refused", [
    (1.5, "sec", False), (1500.0, "msec", False), (1.5e6, "usec", False), (1.5012, "sec", False),
    (1.5, "unknown", False),   # no unit: seconds
    (0.0, "sec", False), (1.0, "unknown", False), (1.5, "hz", False),  # no TR stated
    (2.0, "sec", True), (1.51, "sec", True), (2000.0, "msec", True), (1.0, "sec", True), (2.0, "unknown", True),
    (1500.0, "unknown", True),
])
def test_the_header_tr_must_agree_with_the_sidecar(tmp_path, zoom, unit, refused):
    from b2m.data.bids import Run

    bold = tmp_path / "sub-001_task-Test_run-01_bold.nii"
    image = nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.int16), np.eye(4))
    image.header.set_xyzt_units("mm", unit)
    image.header["pixdim"][4] = zoom
    nib.save(image, str(bold))
    sidecar = tmp_path / "sub-001_task-Test_run-01_bold.json"
    sidecar.write_text(json.dumps({"RepetitionTime": 1.5}))
    run = Run("sub-001", "Test", 1, bold, tmp_path / "sub-001_task-Test_run-01_events.tsv", sidecar)
    if not refused:
        assert repetition_time(run) == 1.5
        return
    with pytest.raises(B2MError, match=f"{sidecar.name}: RepetitionTime 1.5 s disagrees with the NIfTI header of "
                                       f".*{bold.name} \\(.* s in pixdim\\[4\\]\\)") as err:
        repetition_time(run)
    assert str(sidecar) in str(err.value) and str(bold) in str(err.value)


def test_mismatched_grids_between_runs(bids):
    make_bids(bids.parent / "other", training_runs=(), test_runs=(1,), grid=(5, 4, 3))
    src = bids.parent / "other" / "sub-001" / "func" / "sub-001_task-Test_run-01_bold.nii"
    shutil.copy(src, bids / "sub-001" / "func" / src.name)
    with pytest.raises(B2MError, match=r"Test_run-01_bold.nii: voxel grid \(5, 4, 3\) differs"):
        load_subject(data_cfg(bids), "sub-001", acoustic(data_cfg(bids)), seed=0)


# ---------------------------------------------------------------- samples

def test_windows_row0_and_last_clip(bids):
    cfg = data_cfg(bids)
    splits = load_subject(cfg, "sub-001", acoustic(cfg), seed=0)
    data = splits.data.runs
    test_events = read_events(bids / "sub-001" / "func" / "sub-001_task-Test_run-01_events.tsv")
    # Each of the 10 test clips keeps 4 repeats: the truncated last one is replaced by row 0.
    assert splits.test.repeats.shape == (10, 4, 10, splits.data.n_voxels)
    np.testing.assert_allclose(splits.test.x, splits.test.repeats.mean(1), rtol=1e-6)
    last = test_events[-1]
    k = splits.test.clips.index(last.clip)
    delays = np.asarray(list(cfg.delays_tr))
    row0 = np.asarray(data["Test-01"])[delays]
    assert any(np.allclose(rep, row0) for rep in splits.test.repeats[k])
    # A single training run: its last clip has no stand-in (row 0 of run 2 is absent): 39 clips.
    assert len(splits.train.clips) + len(splits.val.clips) == 39
    # Windows are exactly the delayed TRs.
    events = read_events(bids / "sub-001" / "func" / "sub-001_task-Training_run-01_events.tsv")
    p = events[5]
    k = splits.train.clips.index(p.clip) if p.clip in splits.train.clips else None
    x = splits.train.x[k] if k is not None else splits.val.x[splits.val.clips.index(p.clip)]
    np.testing.assert_array_equal(x, np.asarray(data["Training-01"])[int(p.onset / 1.5) + delays])


def test_training_row0_stands_in_for_previous_runs_last_clip(tmp_path):
    root = make_bids(tmp_path / "b", training_runs=(1, 2), test_runs=(1,))
    splits = load_subject(data_cfg(root), "sub-001", acoustic(data_cfg(root)), seed=0)
    assert len(splits.train.clips) + len(splits.val.clips) == 79  # run 1's last clip via run 2's row 0


def test_run_too_short_for_its_events(bids):
    path = bids / "sub-001" / "func" / "sub-001_task-Test_run-01_bold.nii"
    write_run(path, np.random.default_rng(0).normal(800, 10, size=(4, 4, 3, 300)))
    make_short = bids / "sub-001" / "func" / "sub-001_task-Training_run-01_bold.nii"
    write_run(make_short, np.random.default_rng(0).normal(800, 10, size=(4, 4, 3, 300)))
    with pytest.raises(B2MError, match=r"onset 450 s \(row 30\) lies past the last volume"):
        load_subject(data_cfg(bids), "sub-001", acoustic(data_cfg(bids)), seed=0)


def test_split_by_clip_is_stratified_and_disjoint():
    events = read_events(META / "sub-001" / "func" / "sub-001_task-Training_run-01_events.tsv")
    clips = [e.clip for e in events[1:]] * 2  # two presentations of each clip
    tr, va = split_by_clip(clips, 0.25, seed=3)
    assert not {clips[i] for i in tr} & {clips[i] for i in va}
    assert len(tr) + len(va) == len(clips)
    assert split_by_clip(clips, 0.25, seed=3)[1].tolist() == va.tolist()


# ---------------------------------------------------------------- stimuli and the data module

def test_missing_and_short_stimulus(bids):
    wav = next((bids / "stimuli" / "genres").rglob("*.wav"))
    wav.unlink()
    with pytest.raises(B2MError, match=f"{wav.name}: stimulus wav missing"):
        load_subject(data_cfg(bids), "sub-001", acoustic(data_cfg(bids)), seed=0)
    sf.write(wav, np.zeros(8000 * 5, np.float32), 8000)
    with pytest.raises(B2MError, match=f"{wav.name}: stimulus is 5.00 s long, shorter than the clip end"):
        load_subject(data_cfg(bids), "sub-001", acoustic(data_cfg(bids)), seed=0)


def test_datamodule_batches_are_single_subject(tmp_path):
    root = make_bids(tmp_path / "b", subjects=(1, 2), grid=(4, 4, 3))
    cfg = data_cfg(root, "data.subjects=[1,2]", "data.batch_size=16")
    subjects = [load_subject(cfg, s, acoustic(cfg), seed=0) for s in ("sub-001", "sub-002")]
    dm = BrainDataModule(subjects, batch_size=16, num_workers=0, seed=0)
    seen = {0: 0, 1: 0}
    for batch in dm.train_dataloader():
        assert batch["x"].shape[1:] == (10, dm.subjects[0].data.n_voxels)
        assert batch["y"].shape[1:] == (1, space_by_name("acoustic").shape[1])
        assert len(set(batch["subject"].tolist())) == 1
        seen[int(batch["subject"][0])] += len(batch["x"])
    assert seen == {0: len(dm.subjects[0].train.clips), 1: len(dm.subjects[1].train.clips)}
