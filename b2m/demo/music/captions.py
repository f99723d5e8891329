"""Captions: one template sentence per track naming its genre, tempo, key, instruments, groove and mood."""

from __future__ import annotations

from b2m.demo.music.styles import TrackStyle, _choice, _rng

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
