"""Arrangement: one track's chorale re-arranged as General MIDI parts (pretty_midi): the melody as
lead, the harmony as comping in the genre's voicing and pattern, a bass line and a drum part."""

from __future__ import annotations

import math

import numpy as np
import pretty_midi

from b2m.demo.music.scores import _pitch_map, load_chorale
from b2m.demo.music.styles import STYLES, TRACK_SECONDS, TrackStyle, _rng

DRUM_KEYS = {  # General MIDI percussion map
    "kick": 36, "rim": 37, "snare": 38, "clap": 39, "hat": 42, "pedal_hat": 44,
    "open_hat": 46, "crash": 49, "ride": 51, "tambourine": 54,
}
DRUM_KITS = {"standard": 0, "room": 8, "power": 16, "electronic": 24, "tr808": 25, "jazz": 32, "brush": 40}
STEP_VELOCITY = {"X": 118, "x": 92, "o": 58}  # accent, normal, ghost
ROLE_VELOCITY = {"lead": 100, "comp": 70, "bass": 96}


class _Timeline:
    """Beats of the track (from 0) to seconds, with swung off-beat eighths."""

    def __init__(self, tempo_bpm: int, swing: float):
        self.seconds_per_beat = 60.0 / tempo_bpm
        self.swing = swing

    def __call__(self, beat: float) -> float:
        whole = math.floor(beat)
        if abs(beat - whole - 0.5) < 1e-6:
            beat = whole + self.swing
        return beat * self.seconds_per_beat


def _place(pitch_class: int, low: int) -> int:
    """The MIDI pitch of `pitch_class` in [low, low + 12)."""
    return low + (pitch_class - low) % 12


def _chord_tones(root: int, pcs: frozenset[int]) -> tuple[int, int, int | None]:
    """Semitones above the root of the chord's third, fifth and seventh (None: no seventh sounds).

    A chord without a third (open fifth, bare octave) is read as major.
    """
    def has(interval: int) -> bool:
        return (root + interval) % 12 in pcs

    third = 3 if has(3) and not has(4) else 4
    fifth = 6 if has(6) and not has(7) else 7
    seventh = 10 if has(10) else 11 if has(11) else None
    return third, fifth, seventh


def _bass_interval(symbol: str, root: int, pcs: frozenset[int]) -> int:
    """Semitones above the root of a bass-pattern degree (r, t, f, s, b, o)."""
    third, fifth, _ = _chord_tones(root, pcs)
    return {"r": 0, "t": third, "f": fifth, "s": 9, "b": 10, "o": 12}[symbol]


def _voicing(kind: str, root: int, pcs: frozenset[int]) -> list[int]:
    """MIDI pitches of one chord in a style's voicing (power, triad, seventh or jazz)."""
    third, fifth, seventh = _chord_tones(root, pcs)
    if kind == "power":
        bottom = _place(root, 40)
        return [bottom, bottom + 7, bottom + 12]
    if kind == "triad":
        intervals, low = (0, third, fifth), 55
    elif kind == "seventh":  # blues and funk: a minor seventh on every chord
        intervals, low = (0, third, fifth, 10), 52
    else:  # jazz: rootless third, fifth, seventh and ninth; major sevenths on major chords without one
        seventh = seventh or (11 if third == 4 else 10)
        intervals, low = (third, fifth, seventh, 14), 50
    return sorted(_place((root + i) % 12, low) for i in intervals)


def _pattern_notes(pattern: str, n_bars: int, gate: float) -> list[tuple[str, float, float]]:
    """(symbol, start beat, end beat) of every onset of a one-bar step pattern repeated `n_bars` times."""
    step = 4.0 / len(pattern)
    onsets = [(i * step, symbol) for i, symbol in enumerate(pattern) if symbol != "."]
    notes = []
    for bar in range(n_bars):
        for j, (start, symbol) in enumerate(onsets):
            following = onsets[j + 1][0] if j + 1 < len(onsets) else onsets[0][0] + 4.0
            begin = 4.0 * bar + start
            notes.append((symbol, begin, begin + gate * (following - start)))
    return notes


class _Arranger:
    """Builds the MIDI parts of one track from its chorale."""

    def __init__(self, style: TrackStyle, seconds: float):
        self.style = style
        self.genre_style = STYLES[style.genre]
        self.chorale = load_chorale(style.piece)
        self.offsets = _pitch_map(self.chorale, style.tonic, style.mode)
        self.n_bars = math.ceil(seconds * style.tempo_bpm / 60.0 / 4.0) + 1
        self.first_beat = 4 * (style.start_bar % (self.chorale.length_beats // 4))
        self.time = _Timeline(style.tempo_bpm, self.genre_style.swing)
        self.rng = _rng("performance", style.genre, style.track)

    def mapped(self, pitch: int) -> int:
        return pitch + int(self.offsets[pitch % 12])

    def chord_at(self, beat: float) -> tuple[int, frozenset[int]]:
        """The (mapped) chord at a track beat, held for the style's harmonic rhythm."""
        rhythm = self.genre_style.harmonic_rhythm
        held = rhythm * math.floor(beat / rhythm)
        root, pcs = self.chorale.chords[(self.first_beat + held) % self.chorale.length_beats]
        return self.mapped(root) % 12, frozenset(self.mapped(p) % 12 for p in pcs)

    def note(self, pitch: int, start: float, end: float, velocity: int) -> pretty_midi.Note:
        """A note between two track beats, its velocity humanised by a few steps."""
        jitter = int(self.rng.integers(-6, 7))
        onset = self.time(start)
        # Swing delays an off-beat onset, which can pass the end of a very short note.
        offset = max(self.time(end), onset + 0.03)
        return pretty_midi.Note(int(np.clip(velocity + jitter, 1, 127)), pitch, onset, offset)

    def voice(self, index: int, octave: int, velocity: int) -> list[pretty_midi.Note]:
        """Voice `index` of the chorale, looped from the track's first bar over all its bars."""
        length, total = self.chorale.length_beats, 4 * self.n_bars
        notes = []
        for loop in range(math.ceil((self.first_beat + total) / length) + 1):
            for pitch, start, end in self.chorale.voices[index]:
                start, end = start + loop * length - self.first_beat, end + loop * length - self.first_beat
                if end > 0 and start < total:
                    notes.append(self.note(self.mapped(pitch) + 12 * octave, max(start, 0.0), end - 0.05, velocity))
        return notes

    def comping(self) -> list[pretty_midi.Note]:
        style = self.genre_style
        notes = []
        for _, start, end in _pattern_notes(style.comp_pattern, self.n_bars, style.comp_gate):
            for pitch in _voicing(style.voicing, *self.chord_at(start)):
                notes.append(self.note(pitch, start, end, ROLE_VELOCITY["comp"]))
        return notes

    def bass_line(self) -> list[pretty_midi.Note]:
        style = self.genre_style
        notes = []
        for symbol, start, end in _pattern_notes(style.bass_pattern, self.n_bars, 0.9):
            root, pcs = self.chord_at(start)
            if symbol == "a":  # a semitone below the next beat's root
                pitch = _place(self.chord_at(math.floor(start) + 1)[0], 28) - 1
            else:
                pitch = _place(root, 28) + _bass_interval(symbol, root, pcs)
            notes.append(self.note(pitch, start, end, ROLE_VELOCITY["bass"]))
        return notes

    def drum_part(self) -> list[pretty_midi.Note]:
        style = self.genre_style
        notes = []
        for drum, pattern in style.drums:
            for symbol, start, _ in _pattern_notes(pattern, self.n_bars, 1.0):
                notes.append(self.note(DRUM_KEYS[drum], start, start + 0.25, STEP_VELOCITY[symbol]))
        if style.crash_bars:
            for bar in range(0, self.n_bars, style.crash_bars):
                notes.append(self.note(DRUM_KEYS["crash"], 4.0 * bar, 4.0 * bar + 1.0, STEP_VELOCITY["X"]))
        return notes

    def midi(self) -> pretty_midi.PrettyMIDI:
        style, genre_style = self.style, self.genre_style
        midi = pretty_midi.PrettyMIDI(initial_tempo=float(style.tempo_bpm))
        parts = [(style.lead, self.voice(0, style.lead.octave, ROLE_VELOCITY["lead"]))]
        if genre_style.voicing == "chorale":
            inner = self.voice(1, 0, ROLE_VELOCITY["comp"]) + self.voice(2, 0, ROLE_VELOCITY["comp"])
            parts += [(style.comp, inner), (style.bass, self.voice(3, 0, ROLE_VELOCITY["bass"]))]
        else:
            parts += [(style.comp, self.comping()), (style.bass, self.bass_line())]
        for instrument, notes in parts:
            part = pretty_midi.Instrument(program=instrument.program, name=instrument.name)
            part.notes = notes
            midi.instruments.append(part)
        if genre_style.drums:
            drums = pretty_midi.Instrument(program=DRUM_KITS[genre_style.kit], is_drum=True, name="drums")
            drums.notes = self.drum_part()
            midi.instruments.append(drums)
        return midi


def arrange(style: TrackStyle, seconds: float = TRACK_SECONDS) -> pretty_midi.PrettyMIDI:
    """The track as MIDI: lead, comping and bass parts (GM programs), and drums when the genre has them.

    Covers at least `seconds` (whole bars); the drum part's program is the GM drum kit number.
    """
    return _Arranger(style, seconds).midi()
