"""The demo stimulus renderer: deterministic, well-formed, genre-distinct audio and captions."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf

from b2m.core.clips import GENRES
from b2m.core.errors import B2MError
from b2m.demo import music
from b2m.demo.music.scores import _pitch_map


def genre_features(audio: np.ndarray, sample_rate: int, n_fft: int = 512, n_mels: int = 32) -> np.ndarray:
    """Log-mel band means [n_mels] and log modulation spectra of 4 band groups [4 * 6] (0.5-8 Hz)."""
    hop = n_fft // 2
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel_max = 2595 * np.log10(1 + sample_rate / 2 / 700)
    edges = 700 * (10 ** (np.linspace(0, mel_max, n_mels + 2) / 2595) - 1)
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bank = np.maximum(0, np.minimum((freqs - low) / (centre - low), (high - freqs) / (high - centre)))
    log_mel = np.log(power @ bank.T + 1e-3)  # [frames, n_mels]
    envelopes = np.stack([group.mean(1) for group in np.array_split(log_mel, 4, axis=1)], axis=1)
    modulation = np.abs(np.fft.rfft(envelopes - envelopes.mean(0), axis=0))
    rates = np.fft.rfftfreq(len(envelopes), hop / sample_rate)
    bands = [modulation[(rates >= lo) & (rates < 1.6 * lo)].mean(0) for lo in (0.5, 0.8, 1.3, 2, 3.2, 5)]
    return np.concatenate([log_mel.mean(0), np.log(np.concatenate(bands) + 1e-3)])


def test_render_is_deterministic_and_well_formed():
    audio = music.render_track("jazz", 2, sample_rate=8000, seconds=3.0)
    assert audio.shape == (24000,) and audio.dtype == np.float32
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.02  # not silence
    np.testing.assert_array_equal(audio, music.render_track("jazz", 2, sample_rate=8000, seconds=3.0))


def test_stems_do_not_leak_into_each_other():
    parts = music.arrange(music.track_style("rock", 3), seconds=2.0).instruments
    together = music.render_stems(parts, 8000, 16000)
    assert together.shape == (len(parts), 16000) and together.dtype == np.float32
    for part, stem in zip(parts, together):
        np.testing.assert_array_equal(stem, music.render_stems([part], 8000, 16000)[0])


def test_track_style_is_deterministic_and_varies_within_a_genre():
    assert music.track_style("pop", 7) == music.track_style("pop", 7)
    styles = [music.track_style("pop", track) for track in range(12)]
    assert len({s.piece for s in styles}) == 12
    assert len({s.tempo_bpm for s in styles}) > 3 and len({s.tonic for s in styles}) > 3
    low, high = music.STYLES["pop"].tempo_bpm
    assert all(low <= s.tempo_bpm <= high for s in styles)
    assert music.track_style("classical", 0).instruments[-1] != "drums"
    assert music.track_style("metal", 0).instruments[-1] == "drums"


def test_bad_genre_or_track_is_a_user_error(tmp_path):
    with pytest.raises(B2MError, match="polka"):
        music.track_style("polka", 0)
    with pytest.raises(B2MError, match="track number -1 of rock"):
        music.write_stimuli(tmp_path, [("rock", 0), ("rock", -1)])
    assert not (tmp_path / "genres").exists()  # nothing rendered before the check


def test_pitch_map_moves_scale_degrees_onto_the_target_mode():
    chorale = music.Chorale(tonic=2, mode="major", length_beats=4, voices=((), (), (), ()), chords=())
    offsets = _pitch_map(chorale, tonic=4, mode="phrygian")
    for source, target in zip(music.SCALES["major"], music.SCALES["phrygian"]):
        pitch_class = (2 + source) % 12
        assert (pitch_class + offsets[pitch_class]) % 12 == (4 + target) % 12
    assert offsets[3] == 2  # a chromatic note (D#) is only transposed


@pytest.mark.parametrize("genre, kicks_per_beat", [("disco", 1), ("metal", 4)])
def test_drum_patterns(genre, kicks_per_beat):
    style = music.track_style(genre, 1)
    midi = music.arrange(style, seconds=4.0)
    drums = [i for i in midi.instruments if i.is_drum]
    assert len(drums) == 1
    kicks = sorted(n.start for n in drums[0].notes if n.pitch == music.DRUM_KEYS["kick"])
    np.testing.assert_allclose(np.diff(kicks), 60.0 / style.tempo_bpm / kicks_per_beat)


def test_arrangements_stay_in_playable_registers():
    for genre in GENRES:
        for track in range(4):
            style = music.track_style(genre, track)
            lead, comp, bass = music.arrange(style).instruments[:3]
            assert all(36 <= n.pitch <= 96 for n in lead.notes + comp.notes), (genre, track)
            assert all(24 <= n.pitch <= 67 for n in bass.notes), (genre, track)  # a chorale bass reaches G4
            assert all(n.end > n.start >= 0 for n in lead.notes + comp.notes + bass.notes)


def test_classical_plays_the_four_chorale_voices_without_drums():
    style = music.track_style("classical", 3)
    midi = music.arrange(style, seconds=4.0)
    assert [i.program for i in midi.instruments] == [style.lead.program, style.comp.program, style.bass.program]
    lead, inner, bass = (np.mean([n.pitch for n in i.notes]) for i in midi.instruments)
    assert lead - 12 * style.lead.octave > inner > bass


def test_genres_are_acoustically_distinct():
    """Leave-one-out nearest-centroid genre classification on spectro-temporal features beats chance (0.1)."""
    sample_rate, tracks = 11025, 4
    features = np.array([genre_features(music.render_track(g, t, sample_rate, seconds=6.0), sample_rate)
                         for g in GENRES for t in range(tracks)])
    labels = np.repeat(np.arange(len(GENRES)), tracks)
    features = (features - features.mean(0)) / features.std(0)
    correct = 0
    for i in range(len(labels)):
        others = np.arange(len(labels)) != i
        centroids = np.array([features[others & (labels == g)].mean(0) for g in range(len(GENRES))])
        correct += np.argmin(((centroids - features[i]) ** 2).sum(1)) == labels[i]
    assert correct / len(labels) >= 0.4


def test_captions_name_genre_tempo_instruments_and_mood():
    for genre in GENRES:
        style = music.track_style(genre, 5)
        text = music.caption(style)
        assert music.GENRE_WORDS.get(genre, genre) in text and f"{style.tempo_bpm} BPM" in text
        assert style.lead.name in text and style.mood in text.lower()
    openings = {music.caption(music.track_style("rock", t)).split()[0] for t in range(12)}
    assert len(openings) > 1  # the phrasing varies


def test_write_stimuli_writes_resumes_and_repairs(tmp_path):
    tracks = [("rock", 1), ("blues", 0)]
    music.write_stimuli(tmp_path, tracks, workers=2)
    paths = [tmp_path / "genres" / "blues" / "blues.00000.wav", tmp_path / "genres" / "rock" / "rock.00001.wav"]
    for (genre, track), path in zip(sorted(tracks), paths):
        audio, rate = sf.read(path, dtype="float32")
        assert rate == 22050 and audio.shape == (661500,) and sf.info(path).subtype == "PCM_16"
        # Rendered in a worker process, equal to a render here up to 16-bit quantisation.
        np.testing.assert_allclose(audio, music.render_track(genre, track), atol=1.5 / 32768)
    with open(tmp_path / "captions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["genre", "track", "caption"]] + [
        [g, str(t), music.caption(music.track_style(g, t))] for g, t in sorted(tracks)]

    outputs = paths + [tmp_path / "captions.csv"]
    mtimes = [p.stat().st_mtime_ns for p in outputs]
    music.write_stimuli(tmp_path, tracks, workers=1)
    assert [p.stat().st_mtime_ns for p in outputs] == mtimes

    complete = paths[1].read_bytes()
    with open(paths[1], "r+b") as f:
        f.truncate(len(complete) // 2)
    music.write_stimuli(tmp_path, tracks, workers=1)
    assert paths[1].read_bytes() == complete
    assert paths[0].stat().st_mtime_ns == mtimes[0]
    assert not list(tmp_path.rglob(".*.tmp*"))  # no temporary files left behind
