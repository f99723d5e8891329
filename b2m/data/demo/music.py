"""Synthetic GTZAN-layout stimuli: Bach chorales re-arranged in ten genre styles, with captions.

A track is a deterministic function of `(genre, track)`: `track_style` draws a chorale from the
music21 corpus, a tempo, a key and mode, instruments and a mood from the genre's style;
`arrange` re-arranges the chorale's melody, harmony and bass as General MIDI parts with the
genre's comping, bass and drum patterns (pretty_midi); `render_track` synthesises them with
tinysoundfont through the GM SoundFont that pretty_midi bundles. Everything runs offline.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pretty_midi
import soundfile as sf
import tinysoundfont
from music21 import chord, corpus, note, stream
from music21.key import Key
from music21.pitch import Pitch
from tqdm import tqdm

from b2m.data.clips import GENRES, Clip
from b2m.errors import B2MError
from b2m.io import atomic_path, write_text

TRACK_SECONDS = 30.0
SAMPLE_RATE = 22050  # GTZAN's
SOUNDFONT = os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")

# Four-part Bach chorales in 4/4, 12 to 22 bars long, that parse in well under 0.1 s.
PIECES: tuple[str, ...] = tuple(f"bach/{name}.mxl" for name in (
    "bwv10.7", "bwv103.6", "bwv112.5", "bwv121.6", "bwv127.5", "bwv135.6", "bwv144.6", "bwv153.5",
    "bwv156.6", "bwv16.6", "bwv177.5", "bwv183.5", "bwv190.7", "bwv20.7", "bwv227.11", "bwv244.15",
    "bwv244.37", "bwv244.54", "bwv245.14", "bwv245.28", "bwv245.5", "bwv261", "bwv270", "bwv275",
    "bwv277", "bwv280", "bwv285", "bwv292", "bwv30.6", "bwv302", "bwv309", "bwv317", "bwv322",
    "bwv337", "bwv346", "bwv350", "bwv354", "bwv358", "bwv361", "bwv372", "bwv380", "bwv385",
    "bwv39.7", "bwv395", "bwv399", "bwv402", "bwv410", "bwv415", "bwv418", "bwv423", "bwv427",
    "bwv433", "bwv44.7", "bwv5.7", "bwv60.5", "bwv65.7", "bwv73.5", "bwv81.7", "bwv87.7", "bwv94.8",
))

KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
}
SOURCE_MODES = ("major", "minor")  # the modes music21 reads or infers for a chorale
DRUM_KEYS = {  # General MIDI percussion map
    "kick": 36, "rim": 37, "snare": 38, "clap": 39, "hat": 42, "pedal_hat": 44,
    "open_hat": 46, "crash": 49, "ride": 51, "tambourine": 54,
}
DRUM_KITS = {"standard": 0, "room": 8, "power": 16, "electronic": 24, "tr808": 25, "jazz": 32, "brush": 40}
STEP_VELOCITY = {"X": 118, "x": 92, "o": 58}  # accent, normal, ghost
DISTORTED_PROGRAMS = frozenset({29, 30})  # overdriven and distortion guitar get extra soft clipping
DISTORTION_DRIVE = 3.0
ROLE_VELOCITY = {"lead": 100, "comp": 70, "bass": 96}


@dataclass(frozen=True)
class Instrument:
    """A GM melodic instrument: the caption's words for it, its program (0-based), and the octaves
    by which it shifts the melody when it plays the lead."""

    name: str
    program: int
    octave: int = 0


@dataclass(frozen=True)
class GenreStyle:
    """How a genre re-arranges a chorale.

    Patterns are one 4/4 bar of steps (16 = sixteenths, 12 = swung triplet eighths). Comping: "x"
    starts a chord. Bass: chord degrees r(oot) t(hird) f(ifth) s(ixth) b (flat seventh) o(ctave),
    a (chromatic approach to the next root). Drums: X accent, x hit, o ghost note. A note lasts
    `gate` of the time to the next onset in its pattern.
    """

    tempo_bpm: tuple[int, int]
    modes: tuple[str, ...]
    tonics: tuple[int, ...]
    leads: tuple[Instrument, ...]
    comps: tuple[Instrument, ...]
    basses: tuple[Instrument, ...]
    voicing: str  # chorale (the original inner voices), power, triad, seventh, jazz (rootless 7th+9th)
    comp_pattern: str
    comp_gate: float
    bass_pattern: str
    drums: tuple[tuple[str, str], ...]
    kit: str
    crash_bars: int  # a crash cymbal every this many bars (0: never)
    swing: float  # where an off-beat eighth lands within its beat (0.5: straight)
    harmonic_rhythm: int  # beats per chord in the comping and bass
    levels_db: tuple[float, float, float, float]  # mix levels of lead, comping, bass and drums
    moods: tuple[str, ...]
    grooves: tuple[str, ...]  # caption phrases for the rhythm section


ALL_TONICS = tuple(range(12))
STYLES: dict[str, GenreStyle] = {
    "blues": GenreStyle(
        tempo_bpm=(66, 96), modes=("mixolydian", "dorian"), tonics=(4, 9, 7, 10, 0),
        leads=(Instrument("harmonica", 22), Instrument("clean electric guitar", 27),
               Instrument("overdriven guitar", 29, -1), Instrument("tenor saxophone", 66, -1)),
        comps=(Instrument("piano", 0), Instrument("organ", 16), Instrument("electric piano", 4)),
        basses=(Instrument("electric bass", 33), Instrument("upright bass", 32)),
        voicing="seventh", comp_pattern="x.xx.xx.xx.x", comp_gate=0.8, bass_pattern="r.rt.tf.fs.s",
        drums=(("kick", "x.....x....."), ("snare", "...X.....X.."), ("hat", "x.xx.xx.xx.x")),
        kit="room", crash_bars=0, swing=2 / 3, harmonic_rhythm=2,
        levels_db=(0, 3, -2, 0),
        moods=("melancholic", "soulful", "gritty", "wistful"),
        grooves=("a loping shuffle groove", "a slow twelve-eight shuffle", "a boogie bass line"),
    ),
    "classical": GenreStyle(
        tempo_bpm=(56, 92), modes=("major", "minor"), tonics=ALL_TONICS,
        leads=(Instrument("violin", 40), Instrument("flute", 73), Instrument("oboe", 68),
               Instrument("clarinet", 71)),
        comps=(Instrument("string ensemble", 48), Instrument("slow strings", 49)),
        basses=(Instrument("cello", 42), Instrument("contrabass", 43)),
        voicing="chorale", comp_pattern="", comp_gate=1.0, bass_pattern="",
        drums=(), kit="standard", crash_bars=0, swing=0.5, harmonic_rhythm=1,
        levels_db=(0, 8, 2, 0),
        moods=("serene", "solemn", "contemplative", "stately"),
        grooves=("four-part chorale harmony and no percussion", "flowing counterpoint without drums"),
    ),
    "country": GenreStyle(
        tempo_bpm=(96, 132), modes=("major", "mixolydian"), tonics=(7, 2, 9, 0, 4),
        leads=(Instrument("fiddle", 110), Instrument("harmonica", 22), Instrument("banjo", 105)),
        comps=(Instrument("steel-string acoustic guitar", 25), Instrument("banjo", 105),
               Instrument("piano", 0)),
        basses=(Instrument("electric bass", 33), Instrument("upright bass", 32)),
        voicing="triad", comp_pattern="....x.x.....x.x.", comp_gate=0.6, bass_pattern="r.......f.......",
        drums=(("kick", "x.......x......."), ("snare", "ooooXoooooooXooo")),
        kit="brush", crash_bars=0, swing=0.5, harmonic_rhythm=2,
        levels_db=(0, 6, -2, 5),
        moods=("cheerful", "nostalgic", "warm", "easygoing"),
        grooves=("a brushed train-beat snare", "a boom-chick bass and strummed chords"),
    ),
    "disco": GenreStyle(
        tempo_bpm=(112, 128), modes=("minor", "dorian", "major"), tonics=ALL_TONICS,
        leads=(Instrument("string section", 48), Instrument("brass section", 61),
               Instrument("synth strings", 50), Instrument("flute", 73)),
        comps=(Instrument("electric piano", 4), Instrument("funky rhythm guitar", 28),
               Instrument("clavinet", 7)),
        basses=(Instrument("slap bass", 36), Instrument("synth bass", 38), Instrument("funky bass", 33)),
        voicing="seventh", comp_pattern="..x...x...x...x.", comp_gate=0.45, bass_pattern="r.o.r.o.r.o.r.o.",
        drums=(("kick", "x...x...x...x..."), ("clap", "....x.......x..."), ("hat", "x...x...x...x..."),
               ("open_hat", "..x...x...x...x.")),
        kit="electronic", crash_bars=8, swing=0.5, harmonic_rhythm=2,
        levels_db=(0, 3, -2, 0),
        moods=("energetic", "euphoric", "danceable", "glamorous"),
        grooves=("four-on-the-floor drums", "a pulsing octave bass line and open hi-hats"),
    ),
    "hiphop": GenreStyle(
        tempo_bpm=(80, 96), modes=("minor", "dorian"), tonics=ALL_TONICS,
        leads=(Instrument("electric piano", 4), Instrument("muted trumpet", 59),
               Instrument("flute", 73), Instrument("vibraphone", 11)),
        comps=(Instrument("warm synth pad", 89), Instrument("electric piano", 4),
               Instrument("string ensemble", 49)),
        basses=(Instrument("synth bass", 38), Instrument("deep sub bass", 39)),
        voicing="jazz", comp_pattern="x.......x.......", comp_gate=0.95, bass_pattern="r......r..r.....",
        drums=(("kick", "x......x..x....."), ("snare", "....X.......X..."), ("hat", "x.x.x.x.x.x.x.xo")),
        kit="tr808", crash_bars=0, swing=0.5, harmonic_rhythm=4,
        levels_db=(-6, -3, 3, 6),
        moods=("laid-back", "moody", "confident", "nocturnal"),
        grooves=("a boom-bap beat", "heavy 808 kicks and crisp snares"),
    ),
    "jazz": GenreStyle(
        tempo_bpm=(100, 160), modes=("major", "dorian"), tonics=(5, 10, 3, 0, 7),
        leads=(Instrument("tenor saxophone", 66, -1), Instrument("alto saxophone", 65),
               Instrument("trumpet", 56), Instrument("vibraphone", 11), Instrument("jazz guitar", 26, -1)),
        comps=(Instrument("piano", 0), Instrument("jazz guitar", 26), Instrument("electric piano", 4)),
        basses=(Instrument("upright bass", 32),),
        voicing="jazz", comp_pattern="x....x......", comp_gate=0.6, bass_pattern="r..t..f..a..",
        drums=(("ride", "x..x.xx..x.x"), ("pedal_hat", "...x.....x.."), ("kick", "o.....o.....")),
        kit="jazz", crash_bars=0, swing=2 / 3, harmonic_rhythm=1,
        levels_db=(0, 6, -3, 6),
        moods=("smooth", "relaxed", "sophisticated", "playful"),
        grooves=("a swinging ride cymbal and walking bass", "swung eighths over a walking bass"),
    ),
    "metal": GenreStyle(
        tempo_bpm=(140, 184), modes=("minor", "phrygian"), tonics=(4, 2, 1, 0),
        leads=(Instrument("distorted lead guitar", 30), Instrument("overdriven lead guitar", 29)),
        comps=(Instrument("distorted rhythm guitar", 30),),
        basses=(Instrument("picked bass", 34), Instrument("electric bass", 33)),
        voicing="power", comp_pattern="x.xxx.xxx.xxx.xx", comp_gate=0.7, bass_pattern="r.rrr.rrr.rrr.rr",
        drums=(("kick", "xxxxxxxxxxxxxxxx"), ("snare", "....X.......X..."), ("crash", "x.......x.......")),
        kit="power", crash_bars=1, swing=0.5, harmonic_rhythm=2,
        levels_db=(0, 6, -2, -3),
        moods=("aggressive", "dark", "intense", "furious"),
        grooves=("pounding double-kick drums", "galloping palm-muted power chords"),
    ),
    "pop": GenreStyle(
        tempo_bpm=(96, 124), modes=("major", "minor"), tonics=ALL_TONICS,
        leads=(Instrument("synth lead", 80), Instrument("piano", 0), Instrument("bright synth", 81),
               Instrument("clean electric guitar", 27)),
        comps=(Instrument("piano", 0), Instrument("warm synth pad", 89), Instrument("clean electric guitar", 27),
               Instrument("polysynth", 90)),
        basses=(Instrument("electric bass", 33), Instrument("synth bass", 38)),
        voicing="triad", comp_pattern="x..x..x.x..x..x.", comp_gate=0.85, bass_pattern="r..r..r.r..r..r.",
        drums=(("kick", "x.......x.x....."), ("clap", "....X.......X..."), ("hat", "x.x.x.x.x.x.x.x."),
               ("tambourine", "..x...x...x...x.")),
        kit="standard", crash_bars=8, swing=0.5, harmonic_rhythm=2,
        levels_db=(3, 4, -3, 2),
        moods=("upbeat", "catchy", "bright", "romantic"),
        grooves=("a steady backbeat", "handclaps on the backbeat and a syncopated bass"),
    ),
    "reggae": GenreStyle(
        tempo_bpm=(64, 84), modes=("major", "dorian", "minor"), tonics=ALL_TONICS,
        leads=(Instrument("organ", 16), Instrument("trumpet", 56), Instrument("alto saxophone", 65),
               Instrument("harmonica", 22)),
        comps=(Instrument("skank guitar", 27), Instrument("bubble organ", 17), Instrument("piano", 0)),
        basses=(Instrument("deep electric bass", 33), Instrument("synth bass", 39)),
        voicing="triad", comp_pattern="..x...x...x...x.", comp_gate=0.3, bass_pattern="r...r.f.....o.r.",
        drums=(("kick", "........X......."), ("rim", "........x......."), ("hat", "x.x.x.x.x.x.x.x.")),
        kit="standard", crash_bars=0, swing=0.5, harmonic_rhythm=2,
        levels_db=(-2, 6, 4, 2),
        moods=("relaxed", "sunny", "mellow", "uplifting"),
        grooves=("offbeat skank chords and a one-drop beat", "a heavy bass line under offbeat chords"),
    ),
    "rock": GenreStyle(
        tempo_bpm=(100, 144), modes=("major", "mixolydian", "minor"), tonics=(4, 9, 2, 7, 0),
        leads=(Instrument("overdriven lead guitar", 29), Instrument("distorted lead guitar", 30),
               Instrument("rock organ", 18)),
        comps=(Instrument("crunchy rhythm guitar", 29), Instrument("distorted rhythm guitar", 30)),
        basses=(Instrument("picked bass", 34), Instrument("electric bass", 33)),
        voicing="power", comp_pattern="x.x.x.x.x.x.x.x.", comp_gate=0.9, bass_pattern="r.r.r.r.r.r.r.r.",
        drums=(("kick", "x.....x.x......."), ("snare", "....X.......X..."), ("hat", "x.x.x.x.x.x.x.x.")),
        kit="power", crash_bars=4, swing=0.5, harmonic_rhythm=2,
        levels_db=(2, 6, -4, 0),
        moods=("driving", "energetic", "rebellious", "anthemic"),
        grooves=("a driving backbeat", "power chords over a straight eighth-note beat"),
    ),
}
assert set(STYLES) == set(GENRES)


@dataclass(frozen=True)
class TrackStyle:
    """The deterministic attributes of one track, drawn from its genre's style.

    `piece` is a music21 corpus path; the track plays it from bar `start_bar` (modulo the piece's
    length), transposed to `tonic` (pitch class) and mapped onto `mode`.
    """

    genre: str
    track: int
    piece: str
    start_bar: int
    tempo_bpm: int
    tonic: int
    mode: str
    lead: Instrument
    comp: Instrument
    bass: Instrument
    mood: str
    groove: str

    @property
    def key(self) -> str:
        """The key as a name, e.g. "Eb minor"."""
        return f"{KEY_NAMES[self.tonic]} {self.mode}"

    @property
    def instruments(self) -> tuple[str, ...]:
        """Caption names of the parts, lead first; "drums" last when the genre has drums."""
        names = (self.lead.name, self.comp.name, self.bass.name)
        return names + ("drums",) if STYLES[self.genre].drums else names


def _rng(*names: object) -> np.random.Generator:
    """A generator seeded by a stable hash of `names` (Python's hash() is salted per process)."""
    digest = hashlib.sha256("/".join(map(str, names)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _choice(rng: np.random.Generator, options: tuple):
    return options[int(rng.integers(len(options)))]


def track_style(genre: str, track: int) -> TrackStyle:
    """Draw the attributes of track `track` of `genre`; the same arguments always give the same style.

    Tracks of one genre use distinct chorales (for `track` < len(PIECES)); every genre uses them all.
    """
    if genre not in STYLES:
        raise B2MError(f"unknown genre {genre!r}; expected one of {', '.join(GENRES)}")
    if not 0 <= track <= 99_999:
        raise B2MError(f"track number {track} of {genre} is outside GTZAN's 0-99999 (five digits)")
    style = STYLES[genre]
    rng = _rng("style", genre, track)
    piece = PIECES[(track + 6 * GENRES.index(genre)) % len(PIECES)]
    start_bar = int(rng.integers(8))
    tempo_bpm = int(rng.integers(style.tempo_bpm[0], style.tempo_bpm[1] + 1))
    tonic, mode, lead = _choice(rng, style.tonics), _choice(rng, style.modes), _choice(rng, style.leads)
    return TrackStyle(
        genre=genre,
        track=track,
        piece=piece,
        start_bar=start_bar,
        tempo_bpm=tempo_bpm,
        tonic=tonic,
        mode=mode,
        lead=lead,
        comp=_choice(rng, tuple(c for c in style.comps if c.program != lead.program) or style.comps),
        bass=_choice(rng, style.basses),
        mood=_choice(rng, style.moods),
        groove=_choice(rng, style.grooves),
    )


# ---- the score material --------------------------------------------------------------------------

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


# ---- arrangement -----------------------------------------------------------------------------------


def _pitch_map(chorale: Chorale, tonic: int, mode: str) -> np.ndarray:
    """[12] semitone shifts by source pitch class: transpose to `tonic` (by -6..+5 semitones) and
    move each scale degree of the chorale's mode onto the same degree of `mode`."""
    shift = (tonic - chorale.tonic + 6) % 12 - 6
    offsets = np.full(12, shift)
    for source, target in zip(SCALES[chorale.mode], SCALES[mode]):
        offsets[(chorale.tonic + source) % 12] += target - source
    return offsets


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


# ---- synthesis -------------------------------------------------------------------------------------


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


# ---- captions --------------------------------------------------------------------------------------

GENRE_WORDS = {"hiphop": "hip-hop"}
CAPTION_TEMPLATES = (
    "{A_mood} {genre} track at {tempo} BPM with {instruments}; {groove}.",
    "{Mood} {genre} in {key}: {lead} over {groove}, about {tempo} BPM, with {others}.",
    "This {genre} song moves at {tempo} BPM, led by {lead}, with {others}, over {groove}; the mood is {mood}.",
    "Instrumental {genre} at {tempo} BPM featuring {instruments}, {groove}, and {a_mood} feel.",
)


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption(style: TrackStyle) -> str:
    """A template caption naming the genre, tempo (BPM), instruments and mood of the track.

    The template is drawn per track, so captions vary in phrasing, deterministically.
    """
    template = _choice(_rng("caption", style.genre, style.track), CAPTION_TEMPLATES)
    melodic = [style.lead.name, style.comp.name, style.bass.name]
    a_mood = f"{'an' if style.mood[0] in 'aeiou' else 'a'} {style.mood}"
    return template.format(
        A_mood=a_mood.capitalize(),
        a_mood=a_mood,
        Mood=style.mood.capitalize(),
        mood=style.mood,
        genre=GENRE_WORDS.get(style.genre, style.genre),
        tempo=style.tempo_bpm,
        key=style.key,
        lead=style.lead.name,
        others=_listing(melodic[1:]),
        instruments=_listing(melodic),
        groove=style.groove,
    )


# ---- the GTZAN-layout folder -------------------------------------------------------------------------


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
    with tqdm(total=len(tracks), initial=len(tracks) - len(todo), desc="stimuli", unit="track") as progress:
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
