"""Synthesis: a track's MIDI parts rendered one by one with tinysoundfont through the GM SoundFont
that pretty_midi bundles, then soft-clipped where distorted, mixed at the genre's levels and normalised."""

from __future__ import annotations

import os

import numpy as np
import pretty_midi

try:
    import tinysoundfont
except ImportError:  # the `demo` extra; see pyproject.toml
    tinysoundfont = None

from b2m.core.errors import B2MError
from b2m.demo.music.arrange import arrange
from b2m.demo.music.styles import STYLES, TRACK_SECONDS, track_style

SAMPLE_RATE = 22050  # GTZAN's
SOUNDFONT = os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")
DISTORTED_PROGRAMS = frozenset({29, 30})  # overdriven and distortion guitar get extra soft clipping
DISTORTION_DRIVE = 3.0


def _note_events(instrument: pretty_midi.Instrument, sample_rate: int) -> list[tuple[int, bool, int, int]]:
    """(sample, is note-on, pitch, velocity) of a part's notes, in playing order."""
    events = []
    for n in instrument.notes:
        events.append((round(n.start * sample_rate), True, n.pitch, n.velocity))
        events.append((round(n.end * sample_rate), False, n.pitch, 0))
    return sorted(events)  # at the same sample a note-off (False) comes first, so repeated notes retrigger


def render_stems(instruments: list[pretty_midi.Instrument], sample_rate: int, n_samples: int) -> np.ndarray:
    """Render each MIDI part alone with the bundled GM SoundFont: mono float32 [parts, n_samples],
    not normalised; a part's notes past `n_samples` are cut off."""
    if tinysoundfont is None:
        raise B2MError("the demo's synthesizer tinysoundfont is not installed: run scripts/setup.sh, or "
                       "pip install --no-deps 'tinysoundfont>=0.3'")
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    synth.sfload(SOUNDFONT)  # once for all parts: loading costs about a third of rendering one
    stems = np.zeros((len(instruments), n_samples), dtype=np.float32)
    stereo = np.zeros(2 * n_samples, dtype=np.float32)
    view = memoryview(stereo).cast("B")
    frame_bytes = 2 * stereo.itemsize
    for stem, instrument in zip(stems, instruments):
        # Stop the previous part and play out its quick release (milliseconds), so a stem holds one part.
        synth.sounds_off()
        synth.generate_simple(round(0.1 * sample_rate))
        channel = 9 if instrument.is_drum else 0
        synth.program_change(channel, instrument.program, instrument.is_drum)
        position = 0
        for sample, is_on, pitch, velocity in _note_events(instrument, sample_rate):
            if sample >= n_samples:
                break
            if sample > position:
                synth.generate_simple(sample - position, buffer=view[position * frame_bytes: sample * frame_bytes])
                position = sample
            if is_on:
                synth.noteon(channel, pitch, velocity)
            else:
                synth.noteoff(channel, pitch)
        if position < n_samples:
            synth.generate_simple(n_samples - position, buffer=view[position * frame_bytes:])
        stem[:] = stereo.reshape(n_samples, 2).mean(axis=1)
    return stems


def render_track(genre: str, track: int, sample_rate: int = SAMPLE_RATE, seconds: float = TRACK_SECONDS) -> np.ndarray:
    """Render one track: mono float32 [round(seconds * sample_rate)] at `sample_rate` Hz, peak 0.95.

    Deterministic: the same arguments give the same samples, bit for bit.
    """
    n_samples = round(seconds * sample_rate)
    parts = arrange(track_style(genre, track), seconds).instruments  # lead, comping, bass[, drums]
    audio = np.zeros(n_samples, dtype=np.float32)
    for part, stem, level_db in zip(parts, render_stems(parts, sample_rate, n_samples), STYLES[genre].levels_db):
        if not part.is_drum and part.program in DISTORTED_PROGRAMS:
            stem = np.tanh(DISTORTION_DRIVE * stem) / DISTORTION_DRIVE
        audio += np.float32(10 ** (level_db / 20)) * stem
    peak = float(np.max(np.abs(audio)))
    return (audio * (0.95 / peak) if peak > 0 else audio).astype(np.float32)
