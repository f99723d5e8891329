"""Reading fMRIPrep derivatives of a dataset in the ds003720 layout.

    <root>/sub-001/func/sub-001_task-Training_run-01_events.tsv      events: the raw BIDS root
    <derivatives>/sub-001/func/sub-001_task-Training_run-01_space-T1w_desc-preproc_bold.nii.gz
    <derivatives>/sub-001/func/sub-001_task-Training_run-01_space-T1w_desc-preproc_bold.json   TR
    <derivatives>/sub-001/func/sub-001_task-Training_run-01_space-T1w_desc-brain_mask.nii.gz
    <derivatives>/sub-001/func/sub-001_task-Training_run-01_desc-confounds_timeseries.tsv

`<derivatives>` is `<root>/derivatives/fmriprep` unless `data.derivatives` names another
folder. A space is written as fMRIPrep's `--output-spaces` writes it: `T1w`,
`MNI152NLin2009cAsym`, or with a resolution, `MNI152NLin2009cAsym:res-2`. Runs are those
of the raw root's events files; each must have its derivatives in the chosen space.
Run numbers are compared as numbers, since fMRIPrep versions differ on zero padding.
"""

from __future__ import annotations

import re
from pathlib import Path

from b2m.core.errors import B2MError
from b2m.data.bids import TASKS, Run, unique_runs, select

_EVENTS_RE = re.compile(r"^(sub-[A-Za-z0-9]+)_task-(Training|Test)_run-(\d+)_events\.tsv$")
_ENTITY_RE = re.compile(r"^([a-z]+)-([A-Za-z0-9]+)$")


def parse_name(name: str) -> tuple[dict[str, str], str, str] | None:
    """BIDS file name -> (entities, suffix, extension), e.g. `{"sub": "001", ...}, "bold", ".nii.gz"`;
    None for names that are not BIDS (dotfiles, temporary files)."""
    if name.startswith("."):
        return None
    stem, dot, ext = name.partition(".")
    parts = stem.split("_")
    entities = {}
    for part in parts[:-1]:
        m = _ENTITY_RE.match(part)
        if not m:
            return None
        entities[m.group(1)] = m.group(2)
    return (entities, parts[-1], dot + ext) if "sub" in entities else None


def space_label(entities: dict[str, str]) -> str:
    """`T1w` or `MNI152NLin2009cAsym:res-2`: the space as `data.space` spells it."""
    return entities["space"] + (f":res-{entities['res']}" if "res" in entities else "")


class FMRIPrepDataset:
    """A raw BIDS root (events) with fMRIPrep derivatives (BOLD, masks, confounds) in one space."""

    def __init__(self, root: str | Path, derivatives: str | Path | None, space: str) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise B2MError(f"{self.root}: data root not found")
        self.derivatives = Path(derivatives) if derivatives else self.root / "derivatives" / "fmriprep"
        if not self.derivatives.is_dir():
            raise B2MError(f"{self.derivatives}: fMRIPrep derivatives folder not found (set data.derivatives)")
        if not re.match(r"^[A-Za-z0-9]+(:res-[A-Za-z0-9]+)?$", space):
            raise B2MError(f"data.space: expected a space like T1w or MNI152NLin2009cAsym:res-2, got {space!r}")
        self.space = space

    def subjects(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("sub-*") if p.is_dir())

    def runs(self, subject: str, task: str) -> list[Run]:
        """The runs of `subject` for `task` with the raw root's events, sorted by run number."""
        if task not in TASKS:
            raise ValueError(task)
        raw = self.root / subject / "func"
        if not raw.is_dir():
            raise B2MError(f"{raw}: subject {subject} not found (have: {', '.join(self.subjects()) or 'none'})")
        folder = self.derivatives / subject / "func"
        if not folder.is_dir():
            raise B2MError(f"{folder}: no fMRIPrep derivatives for {subject}")
        outputs = [(p, parsed) for p in sorted(folder.iterdir()) if (parsed := parse_name(p.name))]
        runs = []
        for events in sorted(raw.iterdir()):
            m = _EVENTS_RE.match(events.name)
            if m and m.group(1) == subject and m.group(2) == task:
                runs.append(self._run(subject, task, int(m.group(3)), events, folder, outputs))
        if not runs:
            raise B2MError(f"{raw}: no task-{task} events files for {subject}")
        return unique_runs(runs)

    def select_runs(self, subject: str, task: str, run_numbers: list[int] | None) -> list[Run]:
        """The runs numbered `run_numbers` (all when None); a missing one is an error."""
        return select(self.runs(subject, task), run_numbers, self.root / subject / "func", task)

    def _run(self, subject: str, task: str, number: int, events: Path, folder: Path,
             outputs: list[tuple[Path, tuple[dict[str, str], str, str]]]) -> Run:
        def of_run(entities: dict[str, str]) -> bool:
            return (f"sub-{entities.get('sub')}" == subject and entities.get("task") == task
                    and entities.get("run", "").isdigit() and int(entities["run"]) == number)

        preproc = [(p, e) for p, (e, suffix, ext) in outputs
                   if of_run(e) and suffix == "bold" and e.get("desc") == "preproc" and "space" in e
                   and ext in (".nii", ".nii.gz")]
        if not preproc:
            raise B2MError(f"{events}: run has no fMRIPrep derivatives in {folder} "
                           f"(no *_task-{task}_run-{number:02d}_space-*_desc-preproc_bold.nii.gz)")
        present = sorted({space_label(e) for _, e in preproc})
        chosen = [(p, e) for p, e in preproc
                  if space_label(e) == self.space or (":" not in self.space and e["space"] == self.space)]
        if not chosen:
            raise B2MError(f"{folder}: no space-{self.space} output for task-{task} run {number}; "
                           f"spaces present: {', '.join(present)}")
        if len(chosen) > 1:
            raise B2MError(f"{folder}: several outputs match data.space={self.space} for task-{task} run {number} "
                           f"({', '.join(p.name for p, _ in chosen)}); name one: {', '.join(present)}")
        bold, entities = chosen[0]
        stem = bold.name[: bold.name.index("_desc-preproc_bold")]
        same = {k: v for k, v in entities.items() if k != "desc"}
        masks = [p for p, (e, suffix, ext) in outputs if suffix == "mask" and e.get("desc") == "brain"
                 and {k: v for k, v in e.items() if k != "desc"} == same and ext in (".nii", ".nii.gz")]
        confounds = [p for p, (e, suffix, ext) in outputs
                     if of_run(e) and "space" not in e and e.get("desc") == "confounds"
                     and suffix in ("timeseries", "regressors") and ext == ".tsv"]
        # Missing files are reported where they are read, by the names fMRIPrep gives them.
        mask = masks[0] if masks else folder / f"{stem}_desc-brain_mask.nii.gz"
        expected = folder / (stem.split("_space-")[0] + "_desc-confounds_timeseries.tsv")
        return Run(subject, task, number, bold, events, folder / f"{stem}_desc-preproc_bold.json",
                   mask=mask, confounds=confounds[0] if confounds else expected)
