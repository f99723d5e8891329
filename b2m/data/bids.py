"""Reading a BIDS dataset in the ds003720 layout: subjects, runs, events, sidecar TR.

    <root>/sub-001/func/sub-001_task-Training_run-01_bold.nii
    <root>/sub-001/func/sub-001_task-Training_run-01_events.tsv
    <root>/sub-001/func/sub-001_task-Training_run-01_bold.json
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from b2m.core.clips import GENRES, Clip
from b2m.core.errors import B2MError
from b2m.core.io import read_json_object, read_text
from b2m.data.nifti import open_run

TASKS = ("Training", "Test")
EVENT_COLUMNS = ("onset", "duration", "genre", "track", "start", "end")
# Sidecars and headers round the TR differently (float32 in the header): closer than this, relative, agrees.
TR_TOLERANCE = 1e-3
_RUN_RE = re.compile(r"^(sub-[A-Za-z0-9]+)_task-(Training|Test)_run-(\d+)_bold\.nii(\.gz)?$")


@dataclass(frozen=True)
class Presentation:
    """One row of an events file: `clip` heard from `onset` for `duration` seconds."""

    row: int
    onset: float
    duration: float
    clip: Clip


@dataclass(frozen=True)
class Run:
    """One functional run of one subject: where its BOLD, events and TR sidecar are.

    `mask` (a brain mask on the BOLD's grid) and `confounds` (an fMRIPrep confounds TSV)
    are set for fMRIPrep derivatives (`b2m.data.fmriprep`), None for raw BIDS.
    """

    subject: str
    task: str
    run: int
    bold: Path
    events: Path
    sidecar: Path
    mask: Path | None = None
    confounds: Path | None = None

    @property
    def stem(self) -> str:
        return f"{self.subject}_task-{self.task}_run-{self.run:02d}"

    @property
    def name(self) -> str:
        """`Training-01`: a file-name-safe label of the run within its subject."""
        return f"{self.task}-{self.run:02d}"


def subject_label(subject: int | str) -> str:
    """`1`, `"1"`, `"001"` or `"sub-001"` -> `"sub-001"`."""
    text = str(subject)
    if text.startswith("sub-"):
        text = text[4:]
    if not text.isalnum():
        raise B2MError(f"data.subjects: invalid subject {subject!r}")
    return f"sub-{int(text):03d}" if text.isdigit() else f"sub-{text}"


class BIDSDataset:
    """A BIDS root in the ds003720 layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise B2MError(f"{self.root}: data root not found")

    def subjects(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("sub-*") if p.is_dir())

    def runs(self, subject: str, task: str) -> list[Run]:
        """The runs of `subject` for `task` ("Training" or "Test"), sorted by run number."""
        folder = self.root / subject / "func"
        if not folder.is_dir():
            raise B2MError(f"{folder}: subject {subject} not found (have: {', '.join(self.subjects()) or 'none'})")
        runs = []
        for path in folder.iterdir():
            m = _RUN_RE.match(path.name)
            if m and m.group(1) == subject and m.group(2) == task:
                stem = f"{subject}_task-{task}_run-{int(m.group(3)):02d}"
                runs.append(Run(subject, task, int(m.group(3)), path, folder / f"{stem}_events.tsv",
                                folder / f"{stem}_bold.json"))
        if not runs:
            raise B2MError(f"{folder}: no task-{task} runs for {subject}")
        return unique_runs(runs)

    def select_runs(self, subject: str, task: str, run_numbers: list[int] | None) -> list[Run]:
        """The runs numbered `run_numbers` (all when None); a missing one is an error."""
        return select(self.runs(subject, task), run_numbers, self.root / subject / "func", task)


def unique_runs(runs: list[Run]) -> list[Run]:
    """Sorted by run number; two files for one run (e.g. `.nii` and `.nii.gz`) are an error."""
    runs = sorted(runs, key=lambda r: r.run)
    for a, b in zip(runs, runs[1:]):
        if a.run == b.run:
            raise B2MError(f"{b.bold}: run {b.run} of task-{b.task} is also in {a.bold.name}; keep one")
    return runs


def select(runs: list[Run], run_numbers: list[int] | None, folder: Path, task: str) -> list[Run]:
    """The runs numbered `run_numbers` (all when None) of `runs`; a missing one is an error naming `folder`."""
    if run_numbers is None:
        return runs
    by_number = {r.run: r for r in runs}
    missing = [n for n in run_numbers if n not in by_number]
    if missing:
        raise B2MError(f"{folder}: task-{task} run(s) {missing} not found (have {sorted(by_number)})")
    return [by_number[n] for n in run_numbers]


def repetition_time(run: Run) -> float:
    """The TR in seconds from the run's sidecar JSON.

    It must agree (within `TR_TOLERANCE`, relative) with the raw BIDS sidecar of an fMRIPrep run, where
    that one states a RepetitionTime, and with the BOLD header's pixdim[4], where that one states a TR
    (`RunImage.header_tr`): a disagreement is a B2MError naming both files and both values.
    """
    tr = _sidecar_tr(run.sidecar, required=True)
    raw = run.events.with_name(run.events.name.replace("_events.tsv", "_bold.json"))  # as padded as the events
    if raw != run.sidecar and raw.exists():
        raw_tr = _sidecar_tr(raw, required=False)
        if raw_tr is not None and not math.isclose(tr, raw_tr, rel_tol=TR_TOLERANCE):
            raise B2MError(f"{run.sidecar}: RepetitionTime {tr:g} s disagrees with the raw sidecar {raw}'s "
                           f"{raw_tr:g} s")
    header_tr = open_run(run.bold).header_tr
    if header_tr is not None and not math.isclose(tr, header_tr, rel_tol=TR_TOLERANCE):
        raise B2MError(f"{run.sidecar}: RepetitionTime {tr:g} s disagrees with the NIfTI header of {run.bold} "
                       f"({header_tr:g} s in pixdim[4])")
    return tr


def _sidecar_tr(path: Path, required: bool) -> float | None:
    """A sidecar's RepetitionTime in seconds; None where it has none and it is not `required`."""
    meta = read_json_object(path, "sidecar JSON")
    tr = meta.get("RepetitionTime")
    if tr is None and not required:
        return None
    if isinstance(tr, bool) or not isinstance(tr, (int, float)) or not math.isfinite(tr) or tr <= 0:
        raise B2MError(f"{path}: RepetitionTime missing or not a finite positive number (got {tr!r})")
    return float(tr)


def clean_genre(text: str) -> str:
    """Strip the quotes that ds003720's events carry, on either or both sides."""
    return text.strip().strip("'\"").strip()


def read_events(path: Path) -> list[Presentation]:
    """Read an events.tsv: one Presentation per row, in file order (row 0 first)."""
    lines = read_text(path, "events file").splitlines()
    reader = csv.DictReader(lines, delimiter="\t")
    missing = [c for c in EVENT_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise B2MError(f"{path}: events file lacks column(s) {', '.join(missing)}")
    events = []
    for row_index, row in enumerate(reader):
        line = row_index + 2
        genre = clean_genre(row["genre"] or "")
        if genre not in GENRES:
            raise B2MError(f"{path}: line {line}: unknown genre {genre!r} (expected one of {', '.join(GENRES)})")
        try:
            clip = Clip(genre, int(row["track"]), float(row["start"]), float(row["end"]))
            events.append(Presentation(row_index, float(row["onset"]), float(row["duration"]), clip))
        except (TypeError, ValueError):
            raise B2MError(f"{path}: line {line}: non-numeric onset, duration, track, start or end") from None
        e = events[-1]
        times = (e.onset, e.duration, clip.start, clip.end)
        if not all(math.isfinite(t) and t >= 0 for t in times) or clip.track < 0:
            raise B2MError(f"{path}: line {line}: onset, duration, track, start and end must be finite and >= 0, "
                           f"got {e.onset}, {e.duration}, {clip.track}, {clip.start}, {clip.end}")
        if clip.end <= clip.start:
            raise B2MError(f"{path}: line {line}: end {clip.end} s is not after start {clip.start} s")
    if not events:
        raise B2MError(f"{path}: events file has no rows")
    return events
