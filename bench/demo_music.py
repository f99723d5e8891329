"""Speed of the demo stimulus renderer: seconds per 30 s track, by stage, against real time.

    python bench/demo_music.py [--stage-tracks-per-genre 2] [--per-genre 54] [--workers 2]

Prints per stage the wall and CPU seconds per track and the ratio of audio duration to wall
time (x real time) in one process, then the wall and worker CPU time of write_stimuli with a
process pool (54 per genre: the demo dataset's 540 tracks). The machine's load skews wall
times; CPU seconds are the steadier figure.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from b2m.core.clips import GENRES
from b2m.demo import music


def timed(function, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage-tracks-per-genre", type=int, default=2)
    parser.add_argument("--per-genre", type=int, default=54)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tracks = [(genre, track) for genre in GENRES for track in range(args.stage_tracks_per_genre)]

    totals = {"parse chorale (once per process)": [0.0, 0.0], "arrange (MIDI)": [0.0, 0.0],
              "synthesise + mix": [0.0, 0.0]}
    for genre, track in tracks:
        style = music.track_style(genre, track)
        for stage, (_, wall, cpu) in zip(totals, (
            timed(music.load_chorale, style.piece),
            timed(music.arrange, style),
            timed(music.render_track, genre, track),  # parse and arrangement are cached or cheap here
        )):
            totals[stage][0] += wall
            totals[stage][1] += cpu

    n = len(tracks)
    print(f"{n} tracks of {music.TRACK_SECONDS:.0f} s at {music.SAMPLE_RATE} Hz, one process")
    print(f"{'stage':36s} {'wall s/track':>12s} {'cpu s/track':>12s} {'x real time':>12s}")
    for stage, (wall, cpu) in totals.items():
        print(f"{stage:36s} {wall / n:12.3f} {cpu / n:12.3f} {music.TRACK_SECONDS * n / wall:12.1f}")
    wall = sum(w for w, _ in totals.values())
    cpu = sum(c for _, c in totals.values())
    print(f"{'total':36s} {wall / n:12.3f} {cpu / n:12.3f} {music.TRACK_SECONDS * n / wall:12.1f}")

    tracks = [(genre, track) for genre in GENRES for track in range(args.per_genre)]
    n = len(tracks)
    children_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        _, pool_wall, _ = timed(music.write_stimuli, Path(tmp), tracks, args.workers)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    pool_cpu = (after.ru_utime + after.ru_stime) - (children_cpu.ru_utime + children_cpu.ru_stime)
    print(f"\nwrite_stimuli, {args.workers} worker processes, {n} tracks: {pool_wall:.1f} s wall "
          f"({pool_wall / n:.3f} s/track, {music.TRACK_SECONDS * n / pool_wall:.1f} x real time), "
          f"{pool_cpu:.1f} s CPU in the workers ({pool_cpu / n:.3f} s/track, start-up and parsing included)")

if __name__ == "__main__":
    main()
