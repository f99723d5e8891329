"""The offline demo dataset: layout, determinism, resumability, and that the BOLD follows the stimuli."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import soundfile as sf
from scipy.ndimage import median_filter
from scipy.stats import gamma

from b2m.core.clips import GENRES
from b2m.demo import features
from b2m.demo.anatomy import make_anatomy
from b2m.data.bids import read_events
from b2m.demo.build import META_DIR, N_VOLUMES, PRESETS, DesignBuilder, Run, build_dataset, plan_runs
from b2m.demo.__main__ import main


def clips_of(events_path):
    return [p.clip for p in read_events(events_path)]
from b2m.data.stimuli import StimulusSet
from b2m.core.errors import B2MError

TINY_RUNS = [Run(s, task, r) for s in (1, 2) for task, r in (("Training", 1), ("Training", 2), ("Test", 1))]
GRID = PRESETS["tiny"].grid
RATE = 22050


def genre_tones() -> np.ndarray:
    """One 30 s harmonic tone per genre, float32 `[10, 30 * RATE]`, pitch rising with the genre index."""
    t = np.arange(30 * RATE, dtype=np.float32) / RATE
    f0 = 110.0 * 2 ** (np.arange(len(GENRES), dtype=np.float32)[:, None] / 2)
    return sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 4)).astype(np.float32)


def write_fast_stimuli(root: Path, runs: list[Run]) -> None:
    """Pre-write the runs' tracks in the GTZAN layout, so the build keeps them instead of rendering (slow).

    A cheap stand-in for a rendered track: the genre sets the pitch, the track a pulse rate and a noise level.
    """
    tones = genre_tones()
    t = np.arange(30 * RATE, dtype=np.float32) / RATE
    noise = np.random.default_rng(0).standard_normal(len(t)).astype(np.float32)
    tracks = {(c.genre, c.track) for run in runs for c in clips_of(run.func_path(META_DIR, "events.tsv"))}
    for genre, track in tracks:
        rng = np.random.default_rng([GENRES.index(genre), track])
        pulse = 0.55 + 0.45 * np.cos(np.float32(2 * np.pi * rng.uniform(1.0, 4.0)) * t)
        wave = tones[GENRES.index(genre)] * pulse + np.float32(rng.uniform(0.1, 1.0)) * np.roll(noise, track * 997)
        path = root / "stimuli" / "genres" / genre / f"{genre}.{track:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), 0.2 * wave / np.abs(wave).max(), RATE, subtype="PCM_16")


def link_stimuli(src: Path, dst: Path) -> None:
    shutil.copytree(src / "stimuli" / "genres", dst / "stimuli" / "genres", copy_function=os.link)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "tiny"
    write_fast_stimuli(root, TINY_RUNS)
    build_dataset(root, "tiny", seed=0, workers=1)
    return root


def load_bold(root: Path, run: Run) -> np.ndarray:
    return np.asanyarray(nib.load(run.func_path(root, "bold.nii")).dataobj)


def load_subject(root: Path, subject: int) -> tuple[np.ndarray, dict]:
    sub = root / "derivatives" / "demo" / f"sub-{subject:03d}"
    mask = np.asanyarray(nib.load(sub / f"sub-{subject:03d}_desc-cortex_mask.nii.gz").dataobj) > 0
    with np.load(sub / f"sub-{subject:03d}_desc-truth.npz", allow_pickle=False) as npz:
        truth = dict(npz)
    return mask, truth


def detrended(bold: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`[T, V]` cortex time series, 240 s median filter removed, z-scored (the published preprocessing)."""
    x = bold[mask].T.astype(np.float64)
    x -= median_filter(x, size=(161, 1), mode="nearest")
    return (x - x.mean(0)) / x.std(0)


def reference_hrf_response(per_sample: np.ndarray, rate_hz: float) -> np.ndarray:
    """Convolve a `[n]` series at `rate_hz` with SPM's double gamma, then average per 1.5 s TR: `[N_VOLUMES]`."""
    t = np.arange(0, 32, 1 / rate_hz)
    hrf = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6
    y = np.convolve(per_sample - per_sample.mean(), hrf)[: len(per_sample)]
    return y.reshape(N_VOLUMES, -1).mean(1)


def corr_columns(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pearson r of each column of `y` `[T, V]` with `pred` `[T]` or with each column of `pred` `[T, V]`."""
    y = (y - y.mean(0)) / y.std(0)
    pred = pred.reshape(len(pred), -1)
    pred = (pred - pred.mean(0)) / pred.std(0)
    return (y * pred).mean(0)


# ---- layout -------------------------------------------------------------------------------------


def test_layout_and_headers(tiny):
    for run in TINY_RUNS:
        path = run.func_path(tiny, "bold.nii")
        img = nib.load(path)
        assert img.shape == (*GRID, N_VOLUMES)
        assert img.get_data_dtype() == np.int16
        assert img.header.get_zooms() == (2.0, 2.0, 2.0, 1.5)
        assert img.header.get_xyzt_units() == ("mm", "sec")
        with open(path, "rb") as f:
            raw = nib.Nifti1Header.from_fileobj(f)
        assert (raw["scl_slope"], raw["scl_inter"], raw["vox_offset"], raw["magic"]) == (1.0, 0.0, 352.0, b"n+1")
        for suffix in ("events.tsv", "bold.json"):
            assert run.func_path(tiny, suffix).read_bytes() == run.func_path(META_DIR, suffix).read_bytes()
        mask_img = nib.load(tiny / "derivatives/demo" / f"sub-{run.subject:03d}" /
                            f"sub-{run.subject:03d}_desc-cortex_mask.nii.gz")
        assert mask_img.get_data_dtype() == np.uint8 and mask_img.shape == GRID
        np.testing.assert_array_equal(mask_img.affine, img.affine)
    # Exactly the runs of the preset, nothing else.
    written = sorted(p.name for p in tiny.glob("sub-*/func/*_bold.nii"))
    assert written == sorted(r.func_path(tiny, "bold.nii").name for r in TINY_RUNS)
    assert b"\r\n" in Run(1, "Test", 1).func_path(tiny, "events.tsv").read_bytes()  # the real CRLF kept

    description = json.loads((tiny / "dataset_description.json").read_text())
    assert description["License"] == "CC0" and "synthetic" in description["Name"] and "ds003720" in description["Name"]
    assert "Synthetic" in (tiny / "README").read_text()


def test_stimuli_and_captions_cover_the_runs(tiny):
    used = {(c.genre, c.track) for run in TINY_RUNS for c in clips_of(run.func_path(tiny, "events.tsv"))}
    lines = (tiny / "stimuli" / "captions.csv").read_text().splitlines()
    assert lines[0] == "genre,track,caption"
    assert {(line.split(",")[0], int(line.split(",")[1])) for line in lines[1:]} == used
    assert all((tiny / "stimuli" / "genres" / g / f"{g}.{t:05d}.wav").exists() for g, t in used)


def test_truth_matches_mask(tiny):
    mask, truth = load_subject(tiny, 1)
    n_vox = mask.sum()
    np.testing.assert_array_equal(truth["ijk"], np.argwhere(mask))
    assert truth["weights"].shape == (n_vox, len(features.feature_names()))
    assert list(truth["feature_names"]) == features.feature_names()
    klass, signal = truth["tuning_class"], truth["signal_fraction"]
    assert set(np.unique(klass)) == {0, 1, 2}
    assert np.all(signal[klass == 0] == 0) and np.all(signal[klass > 0] > 0)
    assert np.all(np.abs(truth["weights"][klass == 0]).sum(1) == 0)
    assert np.all(np.isfinite(truth["best_frequency_hz"][klass == 1]))
    assert np.all(np.isnan(truth["best_frequency_hz"][klass != 1]))
    # Intensities: a brain baseline inside the mask, near 0 at the grid's corner.
    bold = load_bold(tiny, TINY_RUNS[0])
    assert 550 < bold[mask].mean() < 1050
    assert np.abs(bold[0, 0, 0]).mean() < 20


def test_read_events_strips_quotes():
    path = Run(1, "Training", 4).func_path(META_DIR, "events.tsv")
    assert b"\tclassical'\t" in path.read_bytes()
    events = read_events(path)
    genres = {p.clip.genre for p in events}
    assert len(events) == 41 and genres <= set(GENRES) and "classical" in genres
    assert [p.onset for p in events] == [15.0 * i for i in range(41)]
    test_events = read_events(Run(1, "Test", 1).func_path(META_DIR, "events.tsv"))
    assert test_events[0].clip == test_events[-1].clip  # row 0 of a Test run repeats its last clip


# ---- determinism and per-subject variety --------------------------------------------------------


def test_same_seed_same_bold_other_seed_differs(tiny, tmp_path):
    run = Run(1, "Training", 1)
    for seed, same in ((0, True), (1, False)):
        other = tmp_path / f"seed{seed}"
        link_stimuli(tiny, other)
        build_dataset(other, "tiny", subjects=(1,), max_training_runs=1, max_test_runs=0, seed=seed, workers=1)
        equal = run.func_path(other, "bold.nii").read_bytes() == run.func_path(tiny, "bold.nii").read_bytes()
        assert equal == same
    assert sorted(p.name for p in (tmp_path / "seed0").rglob("*_bold.nii")) == [run.func_path(tmp_path, "bold.nii").name]


def test_subjects_get_different_tunings(tiny):
    mask1, truth1 = load_subject(tiny, 1)
    mask2, truth2 = load_subject(tiny, 2)
    assert not np.array_equal(mask1, mask2)
    sem1 = truth1["weights"][truth1["tuning_class"] == 2]
    sem2 = truth2["weights"][truth2["tuning_class"] == 2]
    n = min(len(sem1), len(sem2))
    assert not np.allclose(sem1[:n], sem2[:n])
    aud1 = np.argwhere(mask1)[truth1["tuning_class"] == 1]
    aud2 = np.argwhere(mask2)[truth2["tuning_class"] == 1]
    assert {tuple(v) for v in aud1} != {tuple(v) for v in aud2}


def test_full_size_anatomy_is_realistic():
    preset = PRESETS["full"]
    counts = []
    for subject in (1, 2):
        anatomy = make_anatomy(preset.grid, preset.cortex_fraction, preset.auditory_fraction,
                               preset.semantic_fraction, np.random.default_rng([0, subject]))
        counts.append(anatomy.cortex.sum())
        assert 55_000 <= counts[-1] <= 65_000
        assert np.all(anatomy.brain[anatomy.cortex])
        # Two auditory blobs, one per hemisphere (x is the first axis).
        aud_x = np.argwhere(anatomy.cortex)[anatomy.tuning_class == 1][:, 0]
        assert (aud_x < preset.grid[0] / 2).sum() > 0.4 * len(aud_x)
        assert (aud_x > preset.grid[0] / 2).sum() > 0.4 * len(aud_x)
    assert counts[0] != counts[1]


# ---- the BOLD follows the stimulus ---------------------------------------------------------------


def test_auditory_voxels_follow_the_loudness(tiny):
    """Against an independent predictor: log RMS of the presented audio per 0.1 s, through the HRF."""
    stimuli = StimulusSet(tiny / "stimuli")
    r_aud, r_none = [], []
    for run in TINY_RUNS:
        mask, truth = load_subject(tiny, run.subject)
        klass = truth["tuning_class"]
        loudness = []
        for clip in clips_of(run.func_path(tiny, "events.tsv")):
            wave = stimuli.load_clip(clip, RATE)
            frames = wave[: len(wave) // 2205 * 2205].reshape(-1, 2205)
            loudness.append(np.log10(np.mean(frames ** 2, axis=1) + 1e-4))
        pred = reference_hrf_response(np.concatenate(loudness), 10.0)
        r = corr_columns(detrended(load_bold(tiny, run), mask), pred)
        r_aud.append(r[klass == 1])
        r_none.append(r[klass == 0])
    r_aud, r_none = np.concatenate(r_aud), np.concatenate(r_none)
    assert r_aud.mean() > 0.12
    assert r_aud.mean() > np.abs(r_none).mean() + 0.1


def test_semantic_voxels_follow_their_genre_weights(tiny):
    """Against an independent predictor: each clip's genre weight (from the truth) as a boxcar through the HRF."""
    r_own, r_null = [], []
    for run in TINY_RUNS:
        mask, truth = load_subject(tiny, run.subject)
        klass = truth["tuning_class"]
        names = list(truth["feature_names"])
        genre_w = truth["weights"][:, [names.index(f"genre_{g}") for g in GENRES]]  # [V, 10]
        genre_idx = [GENRES.index(c.genre) for c in clips_of(run.func_path(tiny, "events.tsv"))]
        boxcar = np.repeat(np.eye(len(GENRES))[genre_idx], 150, axis=0)  # [T * 10 Hz, 10]
        per_genre = np.stack([reference_hrf_response(b, 10.0) for b in boxcar.T], axis=1)
        pred = per_genre @ genre_w[klass == 2].T  # [T, V_semantic]
        y = detrended(load_bold(tiny, run), mask)
        r_own.append(corr_columns(y[:, klass == 2], pred))
        # The same predictions against untuned voxels: chance level.
        untuned = y[:, klass == 0][:, : pred.shape[1]]
        r_null.append(corr_columns(untuned, pred[:, : untuned.shape[1]]))
    r_own, r_null = np.concatenate(r_own), np.concatenate(r_null)
    assert r_own.mean() > 0.1
    assert r_own.mean() > np.abs(r_null).mean() + 0.04


def test_signal_fraction_is_the_explained_variance(tiny):
    """The truth (weights, signal fraction, voxel order) matches what was written: the full model's r^2
    per tuned voxel tracks its signal fraction."""
    mask, truth = load_subject(tiny, 1)
    tuned = truth["tuning_class"] > 0
    designs = DesignBuilder(StimulusSet(tiny / "stimuli"))
    r2 = []
    for run in TINY_RUNS[:2]:
        pred = designs.designs(run.func_path(tiny, "events.tsv"), (5.0,))[0] @ truth["weights"][tuned].T
        r2.append(corr_columns(detrended(load_bold(tiny, run), mask)[:, tuned], pred) ** 2)
    r2 = np.mean(r2, axis=0)
    signal = truth["signal_fraction"][tuned]
    assert np.corrcoef(r2, signal)[0, 1] > 0.6
    assert 0.5 < r2.mean() / signal.mean() < 1.5


# ---- stimulus features ---------------------------------------------------------------------------


def test_band_energy_peaks_at_the_tone():
    t = np.arange(5 * features.AUDIO_RATE) / features.AUDIO_RATE
    for hz in (200.0, 1000.0, 4000.0):
        feats = features.clip_acoustic_features(0.1 * np.sin(2 * np.pi * hz * t))
        assert feats.shape == (50, features.N_BANDS * (1 + features.N_MODULATIONS))
        band = np.argmax(feats[5:-5, : features.N_BANDS].mean(0))
        assert features.BAND_EDGES_HZ[band] <= hz < features.BAND_EDGES_HZ[band + 1]


def test_modulation_energy_peaks_at_the_modulation_rate():
    rng = np.random.default_rng(0)
    t = np.arange(10 * features.AUDIO_RATE) / features.AUDIO_RATE
    noise = rng.standard_normal(len(t))
    for rate, expected in ((1.0, 0), (6.0, 2), (15.0, 3)):
        wave = 0.1 * noise * (1.0 + 0.9 * np.sin(2 * np.pi * rate * t))
        mods = features.clip_acoustic_features(wave)[:, features.N_BANDS:]
        per_rate = mods.reshape(len(mods), features.N_BANDS, features.N_MODULATIONS).mean(axis=(0, 1))
        assert np.argmax(per_rate) == expected


def test_hrf_peaks_near_five_seconds():
    hrf = features.canonical_hrf(10.0)
    assert hrf.sum() == pytest.approx(1.0)
    assert 4.5 <= np.argmax(hrf) / 10.0 <= 5.5 and hrf.min() < 0


# ---- resuming and the command line ---------------------------------------------------------------


def test_rerun_changes_nothing(tiny):
    files = [p for p in tiny.rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    build_dataset(tiny, "tiny", seed=0, workers=1)
    after = {p: p.stat().st_mtime_ns for p in tiny.rglob("*") if p.is_file()}
    assert after == before


def test_truncated_run_is_rebuilt(tiny, tmp_path):
    root = tmp_path / "resume"
    link_stimuli(tiny, root)
    build_dataset(root, "tiny", subjects=(1,), max_training_runs=1, max_test_runs=0, workers=1)
    path = Run(1, "Training", 1).func_path(root, "bold.nii")
    complete = path.read_bytes()
    with open(path, "r+b") as f:
        f.truncate(len(complete) // 2)
    build_dataset(root, "tiny", subjects=(1,), max_training_runs=1, max_test_runs=0, workers=1)
    assert path.read_bytes() == complete
    assert not list(root.rglob(".*.tmp*"))  # no temporary files left behind


def test_folder_of_another_build_is_refused(tiny):
    with pytest.raises(B2MError, match="seed"):
        build_dataset(tiny, "tiny", seed=3)


@pytest.mark.parametrize("argv, words", [
    (["--size", "huge"], "huge"),
    (["--size", "tiny", "--subjects", "7"], "subject 7"),
    (["--size", "tiny", "--subjects", "one"], "one"),
    (["--size", "tiny", "--max-test-runs", "9"], "0-6"),
    (["--size", "tiny", "--seed", "-1"], "seed"),
])
def test_cli_bad_arguments(argv, words, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_file_as_output(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["--size", "tiny", "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err


def test_plan_runs_orders_and_limits():
    runs = plan_runs(PRESETS["default"], (2,), 1, 2)
    assert runs == [Run(2, "Training", 1), Run(2, "Test", 1), Run(2, "Test", 2)]


# ---- the second world ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second(tiny, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("second") / "tiny"
    link_stimuli(tiny, root)
    build_dataset(root, "tiny", subjects=(1,), max_training_runs=2, max_test_runs=0, seed=0, workers=1,
                  world="second")
    return root


def test_second_world_differs_in_its_modelling_choices(tiny, second):
    """Same seed, same stimuli, another world: other BOLD, no cortex mask, several HRF latencies,
    auditory voxels without a tonotopic map, and a manifest that names the world."""
    run = Run(1, "Training", 1)
    assert run.func_path(second, "bold.nii").read_bytes() != run.func_path(tiny, "bold.nii").read_bytes()
    derivatives = second / "derivatives" / "demo"
    assert not list(derivatives.rglob("*_desc-cortex_mask.nii.gz"))
    assert json.loads((derivatives / "dataset_description.json").read_text())["b2m_demo"]["world"] == "second"
    with np.load(derivatives / "sub-001" / "sub-001_desc-truth.npz") as truth:
        tuned = truth["tuning_class"] > 0
        assert set(np.unique(truth["hrf_peak_s"][tuned])) == {4.0, 5.5, 7.0}
        assert np.isnan(truth["best_frequency_hz"][truth["tuning_class"] == 1]).all()
        assert ((truth["weights"][truth["tuning_class"] == 1] > 0).sum(axis=1) == 3).all()
    with pytest.raises(B2MError, match="world"):
        build_dataset(second, "tiny", subjects=(1,), max_training_runs=2, max_test_runs=0, workers=1)


def test_second_world_voxels_follow_their_own_hrf(second):
    """The model is what was written: each tuned voxel's BOLD correlates best with its design under its
    own HRF latency, among the world's three."""
    with np.load(second / "derivatives" / "demo" / "sub-001" / "sub-001_desc-truth.npz") as f:
        truth = {k: f[k] for k in f.files}
    mask = np.zeros(nib.load(Run(1, "Training", 1).func_path(second, "bold.nii")).shape[:3], bool)
    mask[tuple(truth["ijk"].T)] = True
    tuned = truth["signal_fraction"] > 0.2
    designs = DesignBuilder(StimulusSet(second / "stimuli"))
    peaks = (4.0, 5.5, 7.0)
    r = np.zeros((3, int(tuned.sum())))
    for run in (Run(1, "Training", 1), Run(1, "Training", 2)):
        bold = detrended(load_bold(second, run), mask)[:, tuned]
        for h, design in enumerate(designs.designs(run.func_path(second, "events.tsv"), peaks)):
            r[h] += corr_columns(bold, design @ truth["weights"][tuned].T)
    own = np.array(peaks)[r.argmax(axis=0)] == truth["hrf_peak_s"][tuned]
    assert own.mean() > 0.6  # chance 1/3
