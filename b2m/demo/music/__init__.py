"""Synthetic GTZAN-layout stimuli: Bach chorales re-arranged in ten genre styles, with captions.

A track is a deterministic function of `(genre, track)`: `track_style` draws a chorale from the
music21 corpus, a tempo, a key and mode, instruments and a mood from the genre's style;
`arrange` re-arranges the chorale's melody, harmony and bass as General MIDI parts with the
genre's comping, bass and drum patterns (pretty_midi); `render_track` synthesises them with
tinysoundfont through the GM SoundFont that pretty_midi bundles. Everything runs offline.

One module per step, each importing only those before it:

- `styles`: the genre styles table and `track_style`, the seeded per-track choices
- `scores`: chorales parsed from the music21 corpus (`load_chorale`) and their pitch mapping
- `arrange`: `arrange`, a track as MIDI parts
- `synth`: `render_stems` and `render_track`, MIDI parts to audio
- `captions`: `caption`, a track's caption
- `stimuli`: `write_stimuli`, the GTZAN-layout folder of wavs and `captions.csv`
"""

from b2m.demo.music.arrange import DRUM_KEYS, arrange
from b2m.demo.music.captions import GENRE_WORDS, caption
from b2m.demo.music.scores import SCALES, Chorale, load_chorale
from b2m.demo.music.stimuli import stimulus_path, write_stimuli
from b2m.demo.music.styles import PIECES, STYLES, TRACK_SECONDS, GenreStyle, Instrument, TrackStyle, track_style
from b2m.demo.music.synth import SAMPLE_RATE, render_stems, render_track

__all__ = [
    "DRUM_KEYS",
    "GENRE_WORDS",
    "PIECES",
    "SAMPLE_RATE",
    "SCALES",
    "STYLES",
    "TRACK_SECONDS",
    "Chorale",
    "GenreStyle",
    "Instrument",
    "TrackStyle",
    "arrange",
    "caption",
    "load_chorale",
    "render_stems",
    "render_track",
    "stimulus_path",
    "track_style",
    "write_stimuli",
]
