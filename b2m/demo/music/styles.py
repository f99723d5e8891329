"""What each demo track is: the genre styles table and the seeded per-track choices.

`STYLES` says how each genre re-arranges a chorale (tempos, modes, keys, instruments, patterns,
mix levels, caption words); `track_style` draws one track's attributes from its genre's style
with a generator seeded by a stable hash of `(genre, track)`, so a track is the same in every process.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from b2m.core.clips import GENRES
from b2m.core.errors import B2MError

TRACK_SECONDS = 30.0

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
