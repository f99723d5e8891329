"""The score material: Bach chorales from the music21 corpus parsed into voices and chords, and
their pitches mapped onto another key and mode."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from music21 import chord, corpus, note, stream
from music21.key import Key
from music21.pitch import Pitch

SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
}
SOURCE_MODES = ("major", "minor")  # the modes music21 reads or infers for a chorale

Voice = tuple[tuple[int, float, float], ...]  # (MIDI pitch, start beat, end beat)


@dataclass(frozen=True)
class Chorale:
    """A parsed chorale: four voices (soprano first) in beats from the downbeat of its first bar,
    and one chord per beat as (root pitch class, pitch classes)."""

    tonic: int
    mode: str  # one of SOURCE_MODES
    length_beats: int  # whole bars
    voices: tuple[Voice, Voice, Voice, Voice]
    chords: tuple[tuple[int, frozenset[int]], ...]


def _tied_notes(part: stream.Part, pickup: float) -> list[tuple[Pitch, float, float]]:
    """(pitch, start beat, end beat) of a part's notes, tied notes merged into one."""
    notes = []
    for n in part.flatten().getElementsByClass(note.Note):
        start, end = float(n.offset) + pickup, float(n.offset + n.quarterLength) + pickup
        continues = n.tie is not None and n.tie.type in ("continue", "stop")
        if continues and notes and notes[-1][0].midi == n.pitch.midi and notes[-1][2] == start:
            notes[-1] = (notes[-1][0], notes[-1][1], end)
        elif end > start:
            notes.append((n.pitch, start, end))
    return notes


@functools.lru_cache(maxsize=None)
def load_chorale(piece: str) -> Chorale:
    """Parse a corpus chorale from source (never music21's pickle cache); cached per process."""
    score = corpus.parse(piece, forceSource=True)
    written = score.parts[0].recurse().getElementsByClass(Key).first()
    tonality = written if written is not None and written.mode in SOURCE_MODES else score.analyze("key")
    # Beats count from the downbeat of the first bar, even when it is a pickup bar (padded on the left).
    pickup = float(score.parts[0].getElementsByClass(stream.Measure)[0].paddingLeft)
    parts = [_tied_notes(part, pickup) for part in score.parts[:4]]
    length_beats = 4 * math.ceil((float(score.highestTime) + pickup) / 4)
    chords = []
    for beat in range(length_beats):
        # Spelled pitches, not MIDI numbers: music21 would otherwise re-spell each chord (slow).
        sounding = [p for part in parts for p, start, end in part if start <= beat < end]
        if sounding:
            chords.append((chord.Chord(sounding).root().pitchClass, frozenset(p.pitchClass for p in sounding)))
        else:  # all voices rest (before a pickup, at a fermata's breath): keep the previous chord
            chords.append(chords[-1] if chords else None)
    first = next(c for c in chords if c is not None)
    chords = [first if c is None else c for c in chords]
    voices = tuple(tuple((p.midi, start, end) for p, start, end in part) for part in parts)
    return Chorale(tonality.tonic.pitchClass, tonality.mode, length_beats, voices, tuple(chords))


def _pitch_map(chorale: Chorale, tonic: int, mode: str) -> np.ndarray:
    """[12] semitone shifts by source pitch class: transpose to `tonic` (by -6..+5 semitones) and
    move each scale degree of the chorale's mode onto the same degree of `mode`."""
    shift = (tonic - chorale.tonic + 6) % 12 - 6
    offsets = np.full(12, shift)
    for source, target in zip(SCALES[chorale.mode], SCALES[mode]):
        offsets[(chorale.tonic + source) % 12] += target - source
    return offsets
