"""The GTZAN-layout stimulus folder: rendered tracks written as `genres/<genre>/<genre>.000NN.wav`
(resumably, in a process pool) and their captions as `captions.csv`."""

from __future__ import annotations

import csv
import io
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable

import soundfile as sf
from tqdm import tqdm

from b2m.core.clips import Clip
from b2m.core.io import atomic_path, write_text
from b2m.demo.music.captions import caption
from b2m.demo.music.styles import TRACK_SECONDS, track_style
from b2m.demo.music.synth import SAMPLE_RATE, render_track


def stimulus_path(out_dir: Path, genre: str, track: int) -> Path:
    """`out_dir/genres/<genre>/<genre>.000NN.wav`, GTZAN's layout."""
    return Path(out_dir) / "genres" / genre / f"{Clip(genre, track, 0.0, 0.0).track_name}.wav"


def _is_complete(path: Path) -> bool:
    """Whether `path` is a finished stimulus: a readable mono PCM_16 wav of 30 s at 22050 Hz."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError):  # missing or unreadable (soundfile's errors are RuntimeErrors)
        return False
    n_samples = round(TRACK_SECONDS * SAMPLE_RATE)
    return (info.samplerate, info.channels, info.frames, info.subtype) == (SAMPLE_RATE, 1, n_samples, "PCM_16")


def _write_track(out_dir: Path, genre: str, track: int) -> None:
    audio = render_track(genre, track)
    with atomic_path(stimulus_path(out_dir, genre, track)) as tmp:
        sf.write(str(tmp), audio, SAMPLE_RATE, subtype="PCM_16")


def _captions_csv(tracks: list[tuple[str, int]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["genre", "track", "caption"])
    for genre, track in tracks:
        writer.writerow([genre, track, caption(track_style(genre, track))])
    return buffer.getvalue()


def write_stimuli(out_dir: Path, tracks: Iterable[tuple[str, int]], workers: int = 2) -> None:
    """Render `tracks` as GTZAN-layout wavs (mono PCM_16, 22050 Hz, 30 s) and write `captions.csv`.

    Wavs that already exist complete are kept, so an interrupted run resumes; each file appears
    atomically. `captions.csv` (genre, track, caption; one row per track, sorted) is rewritten
    only when its content changes. Renders in a pool of `workers` processes (1: in this process).
    """
    out_dir = Path(out_dir)
    tracks = sorted({(genre, int(track)) for genre, track in tracks})
    for genre, track in tracks:
        track_style(genre, track)  # a bad genre or track number fails here, before any work
    todo = [(g, t) for g, t in tracks if not _is_complete(stimulus_path(out_dir, g, t))]
    with tqdm(total=len(tracks), initial=len(tracks) - len(todo), desc="stimuli", unit="track",
              disable=not todo) as progress:
        if workers <= 1:
            for genre, track in todo:
                _write_track(out_dir, genre, track)
                progress.update()
        elif todo:
            # Spawned, not forked: safe when the caller holds threads (torch, BLAS).
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for future in as_completed([pool.submit(_write_track, out_dir, g, t) for g, t in todo]):
                    future.result()
                    progress.update()
    captions_path = out_dir / "captions.csv"
    text = _captions_csv(tracks)
    if not captions_path.is_file() or captions_path.read_text() != text:
        write_text(captions_path, text)
