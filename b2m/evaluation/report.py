"""The listening report: static HTML pages that open from file:// with no server.

    report/index.html                          templates/report.html
    report/listen.html                         the listening test (b2m.evaluation.listening)
    report/figures/*.png, *.svg                the evaluation's plots (each PNG links to its SVG)
    report/audio/stimuli/<clip_id>.wav         the stimulus excerpt as presented (fades, RMS-normalised)
    report/audio/<kind>/<subject>/<file>       copies of retrieved / generated audio

Every reference is relative and every file is a copy, so the folder can be zipped and
shared. The pages come from templates (b2m.evaluation.templates), which HTML-escape every value. A
small script marks each player `data-state="ok"` once its audio loads (or `"missing"`), and counts
them at the top.

A reconstruction kind with a caveat (a random-weight generator's output measures the pipeline, not
reconstruction) says it at the top of the page and in its column of every clip's table, and is left
out of the listening test unless `report.listening_random` is set: listeners would otherwise spend
their trials on clips nobody should read as reconstructions.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
from omegaconf import DictConfig

from b2m.core.clips import Clip
from b2m.core.io import atomic_path, write_text
from b2m.core.runs import Run
from b2m.data.bids import subject_label
from b2m.data.stimuli import StimulusSet
from b2m.data.subjects import data_paths
from b2m.evaluation.listening import listening_trials, write_listening_page
from b2m.evaluation.reconstruction import ReconSet
from b2m.evaluation.tables import Table
from b2m.evaluation.tags import TagResults
from b2m.evaluation.templates import render

STIMULUS_RATE = 22050  # GTZAN's rate


@dataclass(frozen=True)
class Player:
    """An audio player: the file's path relative to the report folder, and its label."""

    rel: str
    label: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Column:
    """A reconstruction kind's column of the per-clip tables, with its caveat ("" if none)."""

    kind: str
    caveat: str


@dataclass
class ClipRow:
    """One subject's row of a clip's table: the decoded genre (`mark` "right", "wrong" or "" when not
    decoded) and, per column, the players."""

    subject: str
    genre: str
    mark: str
    cells: list[list[Player]] = field(default_factory=list)


@dataclass
class ClipSection:
    """A test clip's section: the clip, its stimulus' path relative to the report folder, its rows."""

    clip: Clip
    stimulus: str
    tags: tuple[str, ...] = ()
    rows: list[ClipRow] = field(default_factory=list)


@dataclass(frozen=True)
class Figure:
    """A figure as the page shows it: the PNG, linking to its SVG (paths relative to the report folder)."""

    name: str
    image: str
    vector: str


@dataclass(frozen=True)
class Listening:
    """The page's line on the listening test: a `link` to listen.html (and the kinds it `left_out`), or
    a `note` saying why there is none ("" when there is nothing to say: no reconstructions)."""

    link: bool = False
    left_out: tuple[str, ...] = ()
    note: str = ""


def _copy(src: Path, dest: Path) -> None:
    """Copy `src` (following symlinks) to `dest`, atomically."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _class_name(section) -> str:
    """The class a config section builds (`RidgeDecoder`, `AcousticSpace`), or `?`."""
    return str((section or {}).get("_target_", "?")).rsplit(".", 1)[-1]


def _label(rec: ReconSet, n: int, src: Path) -> str:
    """A player's label: the rank and track of a retrieved file (retrieval links its files to the database
    by default, so the link's target names the track), a sample's index, or the selected candidate."""
    name = src.resolve().stem if rec.kind == "retrieval" else src.stem
    if rec.choice == "brain":
        return f"selected: {name}"
    return f"#{n + 1}: {name}" if rec.kind == "retrieval" else f"sample {n}"


def write_stimulus(stimuli: StimulusSet, clip: Clip, dest: Path) -> None:
    """The clip as presented, as 16-bit wav at `STIMULUS_RATE` Hz."""
    wave = stimuli.load_clip(clip, STIMULUS_RATE)
    with atomic_path(dest) as tmp:
        sf.write(str(tmp), wave, STIMULUS_RATE, subtype="PCM_16")


def write_report(folder: Path, run: Run, tables: list[Table], figures: list[str], recon: list[ReconSet],
                 decoded_genres: dict[str, dict[str, str]], rcfg: DictConfig, eval_dir: Path, seed: int,
                 ci_level: float, tags: TagResults | None = None) -> Path:
    """Write the report folder: index.html shows `tables` in order, the `figures` (PNG names in
    `eval_dir`, each beside its SVG) and per test clip the stimulus and each shown set of `recon` (a
    selection's first and random candidates are only scored, not shown); the sets' caveats are said at
    the top and in their columns, and `ci_level` is the confidence level of the tables' intervals; `tags`
    gives each stimulus's and reconstruction's top tags, listed beside its player. The listening test listen.html is written when there are
    reconstructions to compare (`seed` draws its foils and seeds the listeners' orders); kinds with a
    caveat are left out of it unless `rcfg.listening_random`. Returns the path of index.html."""
    folder = Path(folder)
    chosen = None if rcfg.subjects is None else {subject_label(s) for s in rcfg.subjects}
    subjects = [s for s in run.subjects if chosen is None or s in chosen]
    # Per set, the files shown per clip: every rank or sample up to the configured count, or the selected one.
    counts = {"retrieval": int(rcfg.retrieved), "generated": int(rcfg.generated)}
    shown = [(rec, counts[rec.kind] if not rec.choice else 1) for rec in recon if rec.choice not in ("first", "random")]
    caveats = {rec.label: rec.caveat for rec, _ in shown if rec.caveat}
    stimuli = StimulusSet(data_paths(run.cfg.data)["stimuli"])

    shown_figures = []
    for name in figures:
        vector = Path(name).with_suffix(".svg").as_posix()
        for file in (name, vector):
            _copy(eval_dir / file, folder / "figures" / file)
        shown_figures.append(Figure(name, f"figures/{name}", f"figures/{vector}"))

    clips: dict[str, Clip] = {}
    for subject in subjects:
        clips.update({c.clip_id: c for c in run.test_clips(subject)})
    # The listening test's pool: rel paths of the stimuli and of each clip's first reconstruction.
    excerpts: dict[str, str] = {}
    heard: dict[str, dict[str, dict[str, str]]] = {}
    sections = []
    for clip_id in sorted(clips):
        clip = clips[clip_id]
        rel = f"audio/stimuli/{clip_id}.wav"
        write_stimulus(stimuli, clip, folder / rel)
        excerpts[clip_id] = rel
        section = ClipSection(clip, rel, tuple(tags.stimuli.get(clip_id, ())) if tags else ())
        for subject in subjects:
            if clip_id not in run.subjects[subject].clip_ids:
                continue
            genre = decoded_genres.get(subject, {}).get(clip_id)
            mark = "" if genre is None else ("right" if genre == clip.genre else "wrong")
            row = ClipRow(subject, genre or "n/a", mark)
            for rec, n_shown in shown:
                players = []
                for n, src in enumerate(rec.files.get(subject, {}).get(clip_id, [])[:n_shown]):
                    rel = f"audio/{rec.label}/{subject}/{src.name}"
                    _copy(src, folder / rel)
                    if n == 0:
                        heard.setdefault(rec.label, {}).setdefault(subject, {})[clip_id] = rel
                    players.append(Player(rel, _label(rec, n, src), tuple(tags.files.get(src, ())) if tags else ()))
                row.cells.append(players)
            section.rows.append(row)
        sections.append(section)

    listening = _listening_test(folder, run, heard, excerpts, rcfg, seed, caveats)
    page = render("report.html", title=f"b2m listening report: {run.path.name}", heading=str(run.path),
                  subjects=subjects, decoder=_class_name(run.cfg.get("decoder")), target=_class_name(run.cfg.target),
                  level=f"{ci_level:.0%}", caveats=caveats, tables=tables, listening=listening, figures=shown_figures,
                  columns=[Column(rec.label, rec.caveat) for rec, _ in shown], clips=sections)
    write_text(folder / "index.html", page)
    return folder / "index.html"


def _listening_test(folder: Path, run: Run, heard: dict[str, dict[str, dict[str, str]]], excerpts: dict[str, str],
                    rcfg: DictConfig, seed: int, caveats: dict[str, str]) -> Listening:
    """Write listen.html over the kinds `heard` (those with a caveat only if `rcfg.listening_random`),
    when they make any trial; returns what index.html says about it."""
    include_all = bool(rcfg.listening_random)
    left_out = tuple(kind for kind in heard if kind in caveats and not include_all)
    pool = {kind: files for kind, files in heard.items() if kind not in left_out}
    if heard and not pool:
        return Listening(note=f"No listening test: every reconstruction kind here has a caveat "
                              f"({', '.join(left_out)}); report.listening_random=true includes them.")
    trials = listening_trials(pool, excerpts, seed)
    if not trials:
        return Listening()
    included = {kind: caveats[kind] for kind in pool if kind in caveats}
    write_listening_page(folder, trials, seed, f"b2m listening test: {run.path}", int(rcfg.listening_trials),
                         included)
    return Listening(link=True, left_out=left_out)
