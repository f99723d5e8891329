"""Build the offline demo dataset: a ds003720-shaped BIDS folder with simulated BOLD.

Layout written under `out` (what the loader reads):
  dataset_description.json, README
  sub-00S/func/sub-00S_task-{Training,Test}_run-NN_{bold.nii,events.tsv,bold.json}
  stimuli/genres/<genre>/<genre>.000NN.wav, stimuli/captions.csv
  derivatives/demo/dataset_description.json          (size, seed, grid of this build)
  derivatives/demo/sub-00S/sub-00S_desc-cortex_mask.nii.gz  (not in worlds without a cortex mask)
  derivatives/demo/sub-00S/sub-00S_desc-truth.npz     (per cortex voxel, see `write_truth`)
With `layout="fmriprep"` the raw BOLD is replaced by fMRIPrep's derivatives (`b2m.demo.fmriprep`).

Every file is written atomically and skipped when already complete, so a rerun
resumes after a kill. Randomness is seeded per subject (anatomy, tunings, noise
properties) and per run (noise, drift), so a run's content does not depend on
which other runs or subjects a build includes.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from b2m.data.bids import read_events
from b2m.core.clips import Clip
from b2m.demo import bold, features, fmriprep, music
from b2m.demo.anatomy import Anatomy, make_anatomy
from b2m.demo.worlds import WORLDS, World
from b2m.data.stimuli import StimulusSet
from b2m.core.errors import B2MError
from b2m.core.io import atomic_path, save_npz, write_json, write_text

META_DIR = Path(__file__).resolve().parent.parent / "data" / "ds003720_meta"
N_SUBJECTS, N_TRAINING_RUNS, N_TEST_RUNS = 5, 12, 6
N_VOLUMES = 410
TR_S = 1.5
TASK_CODES = {"Training": 0, "Test": 1}  # part of each run's random seed
ARTEFACT_CODE = 7  # seeds the fMRIPrep layout's artefacts apart from the BOLD
LAYOUTS = ("bids", "fmriprep")


@dataclass(frozen=True)
class SizePreset:
    """What a `--size` builds: subjects, runs per task, grid and how much of the brain is cortex / tuned."""

    name: str
    subjects: tuple[int, ...]
    training_runs: int
    test_runs: int
    grid: tuple[int, int, int]
    cortex_fraction: float  # of the brain ellipsoid
    auditory_fraction: float  # of the cortex voxels
    semantic_fraction: float


PRESETS: dict[str, SizePreset] = {
    # Tests: seconds to build besides the audio; the small grid needs thicker cortex and larger regions.
    "tiny": SizePreset("tiny", (1, 2), 2, 1, (10, 10, 8), 0.6, 0.12, 0.08),
    # The README's demo: a few minutes on 2 cores, a few thousand cortex voxels per subject.
    "default": SizePreset("default", (1, 2, 3), N_TRAINING_RUNS, N_TEST_RUNS, (32, 32, 24), 0.45, 0.06, 0.04),
    # The real geometry: ~60k cortex voxels per subject, about 46 GB of BOLD.
    "full": SizePreset("full", (1, 2, 3, 4, 5), N_TRAINING_RUNS, N_TEST_RUNS, (96, 96, 68), 0.33, 0.05, 0.04),
}


@dataclass(frozen=True)
class Run:
    subject: int
    task: str  # "Training" or "Test"
    run: int

    @property
    def stem(self) -> str:
        return f"sub-{self.subject:03d}_task-{self.task}_run-{self.run:02d}"

    def func_path(self, root: Path, suffix: str) -> Path:
        """`suffix` is `bold.nii`, `events.tsv` or `bold.json`."""
        return root / f"sub-{self.subject:03d}" / "func" / f"{self.stem}_{suffix}"


def plan_runs(preset: SizePreset, subjects: tuple[int, ...] | None, max_training_runs: int | None,
              max_test_runs: int | None) -> list[Run]:
    """The runs a build writes, checking the user's choices against the dataset's 5 subjects, 12 + 6 runs."""
    subjects = preset.subjects if subjects is None else subjects
    for s in subjects:
        if not 1 <= s <= N_SUBJECTS:
            raise B2MError(f"--subjects: subject {s} does not exist (ds003720 has subjects 1-{N_SUBJECTS})")
    counts = {"Training": (max_training_runs, preset.training_runs, N_TRAINING_RUNS),
              "Test": (max_test_runs, preset.test_runs, N_TEST_RUNS)}
    runs = []
    for task, (chosen, default, available) in counts.items():
        n = default if chosen is None else chosen
        if not 0 <= n <= available:
            raise B2MError(f"--max-{task.lower()}-runs: {n} is outside 0-{available}")
        runs += [Run(s, task, r) for s in subjects for r in range(1, n + 1)]
    return sorted(runs, key=lambda r: (r.subject, TASK_CODES[r.task], r.run))


def check_manifest(out: Path, preset: SizePreset, seed: int, world: World, layout: str = "bids") -> None:
    """Record size, seed, grid, world and layout; refuse to mix builds with different ones in one folder."""
    path = out / "derivatives" / "demo" / "dataset_description.json"
    params = {"size": preset.name, "seed": seed, "grid": list(preset.grid)}
    if world.name != "default":  # the default world's manifest is that of builds before worlds existed
        params["world"] = world.name
    if layout != "bids":
        params["layout"] = layout
    if path.exists():
        found = json.loads(path.read_text()).get("b2m_demo")
        if found != params:
            raise B2MError(f"{path}: folder was built with {found}, not {params}; choose another --out")
        return
    write_json(path, {"Name": "b2m demo: simulation ground truth and cortex masks", "BIDSVersion": "1.4.0",
                      "DatasetType": "derivative", "GeneratedBy": [{"Name": "b2m.demo"}], "b2m_demo": params})


def write_top_files(out: Path) -> None:
    if not (out / "dataset_description.json").exists():
        write_json(out / "dataset_description.json", {
            "Name": "b2m synthetic demo dataset in the ds003720 (Music Genre fMRI Dataset) layout",
            "BIDSVersion": "1.4.0", "DatasetType": "raw", "License": "CC0",
            "Authors": ["b2m.demo (simulated)"],
            "ReferencesAndLinks": ["Event schedule from ds003720: https://doi.org/10.18112/openneuro.ds003720.v1.0.0"],
        })
    if not (out / "README").exists():
        write_text(out / "README", (
            "Synthetic data, not recordings. Generated by `python -m b2m.demo`.\n\n"
            "The events and sidecars are those of ds003720 (Nakai, Koide-Majima and Nishimoto 2021, CC0).\n"
            "The stimuli are rendered from scores in ten genre styles, not GTZAN; the BOLD is simulated from\n"
            "the stimulus audio (tonotopic / spectro-temporal and semantic voxel tunings, HRF, drift, AR(1)\n"
            "noise). The ground truth per cortex voxel is in derivatives/demo.\n"))


def copy_metadata(out: Path, run: Run) -> None:
    """Byte-for-byte copies of the run's real events.tsv and bold.json (quote quirks and CRLF kept)."""
    for suffix in ("events.tsv", "bold.json"):
        src, dst = run.func_path(META_DIR, suffix), run.func_path(out, suffix)
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)


def write_stimuli(out: Path, runs: list[Run], workers: int) -> StimulusSet:
    """Render the tracks the runs present; tracks already on disk stay in `captions.csv`."""
    stimuli = StimulusSet(out / "stimuli")
    needed = {(p.clip.genre, p.clip.track) for run in runs for p in read_events(run.func_path(META_DIR, "events.tsv"))}
    on_disk = {(p.parent.name, int(p.stem.split(".")[1])) for p in stimuli.root.glob("genres/*/*.*.wav")}
    music.write_stimuli(stimuli.root, sorted(needed | on_disk), workers=workers)
    return stimuli


class DesignBuilder:
    """Design matrices `[N_VOLUMES, F]` per events file, from the stimulus audio; clip features are cached."""

    def __init__(self, stimuli: StimulusSet) -> None:
        self.stimuli = stimuli
        self._clips: dict[Clip, np.ndarray] = {}

    def clip_features(self, clip: Clip) -> np.ndarray:
        """`[n, F]` at `features.FEATURE_RATE_HZ`: acoustic features, then the semantic vector repeated."""
        if clip not in self._clips:
            wave = self.stimuli.load_clip(clip, features.AUDIO_RATE)
            acoustic = features.clip_acoustic_features(wave)
            semantic = np.broadcast_to(semantic_features(clip), (len(acoustic), len(features.semantic_feature_names())))
            self._clips[clip] = np.concatenate([acoustic, semantic], axis=1)
        return self._clips[clip]

    def designs(self, events_path: Path, hrf_peaks_s: tuple[float, ...]) -> np.ndarray:
        """`[H, N_VOLUMES, F]`: the run's design for each HRF peak latency (s)."""
        events = read_events(events_path)
        clips, onsets = [self.clip_features(p.clip) for p in events], [p.onset for p in events]
        return np.stack([features.run_design(clips, onsets, N_VOLUMES, TR_S, peak) for peak in hrf_peaks_s])


def semantic_features(clip: Clip) -> np.ndarray:
    """The semantic vector of the clip's track, from the style it was rendered in."""
    style = music.track_style(clip.genre, clip.track)
    families = [features.instrument_family(part.program) for part in (style.lead, style.comp, style.bass)]
    if "drums" in style.instruments:
        families.append("drums")
    return features.semantic_vector(clip.genre, families, style.tempo_bpm)


def write_mask(path: Path, anatomy: Anatomy) -> None:
    header = bold.nifti_header(anatomy.cortex.shape, anatomy.affine)
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(anatomy.cortex.astype(np.uint8), anatomy.affine, header)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(image.to_bytes(), mtime=0))


def write_truth(path: Path, anatomy: Anatomy, tuning: bold.Tuning, world: World) -> None:
    """Per cortex voxel (C-order of the mask): `tuning_class` int8 (0 none, 1 spectro-temporal, 2 semantic),
    `signal_fraction`, `best_frequency_hz`, `best_modulation_hz` float32 (NaN if not auditory),
    `weights` float32 [V, F] over `feature_names` [F], `ijk` int16 [V, 3], `hrf_peak_s` float32 [V]
    (the peak latency of the voxel's HRF, seconds)."""
    save_npz(path, tuning_class=anatomy.tuning_class, signal_fraction=tuning.signal_fraction,
             best_frequency_hz=tuning.best_frequency_hz, best_modulation_hz=tuning.best_modulation_hz,
             weights=tuning.weights, feature_names=np.array(features.feature_names()), ijk=anatomy.ijk,
             hrf_peak_s=np.asarray(world.hrf_peaks_s, np.float32)[tuning.hrf_group])


def build_dataset(out: str | Path, size: str = "default", subjects: tuple[int, ...] | None = None,
                  max_training_runs: int | None = None, max_test_runs: int | None = None, seed: int = 0,
                  workers: int = 2, world: str = "default", layout: str = "bids") -> Path:
    """Write (or complete) the demo dataset of `world` (`b2m.demo.worlds`) under `out`; returns its path.

    `layout`: "bids" writes raw int16 BOLD as ds003720 publishes it; "fmriprep" writes fMRIPrep's
    derivatives instead (`b2m.demo.fmriprep`: float32 gzipped BOLD with motion and physiological
    artefacts, brain masks, confounds, an atlas), with the events in the raw root."""
    if size not in PRESETS:
        raise B2MError(f"--size: unknown size {size!r}, choose one of {', '.join(PRESETS)}")
    if world not in WORLDS:
        raise B2MError(f"--world: unknown world {world!r}, choose one of {', '.join(WORLDS)}")
    if seed < 0:
        raise B2MError(f"--seed: {seed} is negative")
    if layout not in LAYOUTS:
        raise B2MError(f"--layout: unknown layout {layout!r}, choose one of {', '.join(LAYOUTS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise B2MError(f"{out}: exists and is not a folder")
    sim = WORLDS[world]
    preset = PRESETS[size]
    if size in sim.grids:
        preset = dataclasses.replace(preset, grid=sim.grids[size])
    runs = plan_runs(preset, subjects, max_training_runs, max_test_runs)
    check_manifest(out, preset, seed, sim, layout)
    write_top_files(out)
    if layout == "fmriprep":
        fmriprep.write_description(out)
    for run in runs:
        copy_metadata(out, run)
    designs = DesignBuilder(write_stimuli(out, runs, workers))

    shape4 = (*preset.grid, N_VOLUMES)
    for subject in sorted({r.subject for r in runs}):
        rng = np.random.default_rng([seed, subject])
        anatomy = make_anatomy(preset.grid, preset.cortex_fraction, preset.auditory_fraction,
                               preset.semantic_fraction, rng)
        tuning = bold.make_tuning(anatomy, rng, sim)
        noise = bold.make_noise(anatomy, rng, sim)
        derivatives = out / "derivatives" / "demo" / f"sub-{subject:03d}"
        mask_path = derivatives / f"sub-{subject:03d}_desc-cortex_mask.nii.gz"
        truth_path = derivatives / f"sub-{subject:03d}_desc-truth.npz"
        if sim.cortex_mask and not mask_path.exists():
            write_mask(mask_path, anatomy)
        if not truth_path.exists():
            write_truth(truth_path, anatomy, tuning, sim)
        if layout == "fmriprep":
            # Own generators, so that the BOLD under the artefacts is that of the raw layout.
            tissues = fmriprep.Tissues(anatomy, noise.baseline, noise.amplitude,
                                       np.random.default_rng([seed, subject, ARTEFACT_CODE]))
            fmriprep.write_subject(out, subject, anatomy, tissues)
        todo = [r for r in runs if r.subject == subject and not _complete(out, r, shape4, layout)]
        for run in tqdm(todo, desc=f"BOLD sub-{subject:03d}", unit="run", disable=not todo):
            design = designs.designs(run.func_path(META_DIR, "events.tsv"), sim.hrf_peaks_s)
            run_rng = np.random.default_rng([seed, subject, TASK_CODES[run.task], run.run])
            blocks = bold.simulate_run(anatomy, noise, tuning, design, TR_S, run_rng, sim)
            if layout == "fmriprep":
                artefact_rng = np.random.default_rng([seed, subject, TASK_CODES[run.task], run.run, ARTEFACT_CODE])
                fmriprep.write_run(fmriprep.bold_path(out, run.subject, run.task, run.run), blocks, shape4,
                                   anatomy.affine, TR_S, tissues, artefact_rng)
            else:
                bold.write_bold(run.func_path(out, "bold.nii"), blocks, shape4, anatomy.affine, TR_S)
    return out


def _complete(out: Path, run: Run, shape: tuple[int, ...], layout: str) -> bool:
    if layout == "fmriprep":  # the confounds file is the run's last
        return fmriprep.confounds_path(out, run.subject, run.task, run.run).exists()
    path = run.func_path(out, "bold.nii")
    return path.exists() and path.stat().st_size == bold.nifti_size(shape)
