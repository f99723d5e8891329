"""The listening report: static HTML pages that open from file:// with no server.

    report/index.html
    report/listen.html                         the listening test (b2m.evaluation.listening)
    report/figures/*.png, *.svg                the evaluation's plots (each PNG links to its SVG)
    report/audio/stimuli/<clip_id>.wav         the stimulus excerpt as presented (fades, RMS-normalised)
    report/audio/<kind>/<subject>/<file>       copies of retrieved / generated audio

Every reference is relative and every file is a copy, so the folder can be zipped and
shared. All text is HTML-escaped. A small inline script marks each player
`data-state="ok"` once its audio loads (or `"missing"`), and counts them at the top.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import soundfile as sf
from omegaconf import DictConfig

from b2m.data.bids import subject_label
from b2m.core.clips import Clip
from b2m.data.stimuli import StimulusSet
from b2m.data.subjects import data_paths
from b2m.core.runs import Run
from b2m.reconstruction import Reconstructions
from b2m.evaluation.listening import listening_trials, write_listening_page
from b2m.evaluation.summary import (SELECTION_HEADER, TABLE_METRICS, decoding_prefixes, fmt, genre_sets,
                                    listening_table, selection_rows, with_ci)
from b2m.core.io import atomic_path, write_text

STIMULUS_RATE = 22050  # GTZAN's rate

STYLE = """
body { font-family: sans-serif; margin: 1.5em; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; vertical-align: top; }
th { background: #f0f0f0; }
img { max-width: 100%; height: auto; margin: 4px; border: 1px solid #ddd; }
audio { width: 220px; height: 32px; display: block; }
audio[data-state="missing"] { outline: 3px solid #d00; }
.clip { border-top: 2px solid #888; margin-top: 1.2em; }
.right { color: #080; } .wrong { color: #b00; }
"""

# Marks every player once its audio has loaded or failed; the status line counts them.
SCRIPT = """
(function () {
  var players = document.querySelectorAll('audio');
  function update() {
    var ok = document.querySelectorAll('audio[data-state="ok"]').length;
    var bad = document.querySelectorAll('audio[data-state="missing"]').length;
    document.getElementById('audio-status').textContent =
      ok + ' of ' + players.length + ' audio files loaded, ' + bad + ' missing';
  }
  players.forEach(function (a) {
    function good() { a.setAttribute('data-state', 'ok'); update(); }
    function bad() { a.setAttribute('data-state', 'missing'); update(); }
    a.addEventListener('loadedmetadata', good);
    a.addEventListener('error', bad);
    if (a.error) { bad(); } else if (a.readyState >= 1) { good(); }
  });
  update();
})();
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _copy(src: Path, dest: Path) -> None:
    """Copy `src` (following symlinks) to `dest`, atomically."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _class_name(section) -> str:
    """The class a config section builds (`RidgeDecoder`, `AcousticSpace`), or `?`."""
    return str((section or {}).get("_target_", "?")).rsplit(".", 1)[-1]


def _player(rel: str, label: str) -> str:
    return f'<div>{esc(label)}<audio controls preload="metadata" src="{esc(rel)}"></audio></div>'


def _label(kind: str, n: int, src: Path) -> str:
    """A player's label: the rank and track of a retrieved file (retrieval links its files to the database
    by default, so the link's target names the track), a sample's index, or the selected candidate."""
    name = src.resolve().stem if kind.startswith("retrieval") else src.stem
    if kind.endswith("/brain"):
        return f"selected: {name}"
    return f"#{n + 1}: {name}" if kind == "retrieval" else f"sample {n}"


def write_stimulus(stimuli: StimulusSet, clip: Clip, dest: Path) -> None:
    """The clip as presented, as 16-bit wav at `STIMULUS_RATE` Hz."""
    wave = stimuli.load_clip(clip, STIMULUS_RATE)
    with atomic_path(dest) as tmp:
        sf.write(str(tmp), wave, STIMULUS_RATE, subtype="PCM_16")


def metrics_tables(metrics: dict) -> list[str]:
    """The decoding / reconstruction table and the genre table as HTML."""
    out = ["<table><tr><th>set</th>" + "".join(f"<th>{esc(m)}</th>" for m in TABLE_METRICS) + "</tr>"]
    for prefix in decoding_prefixes(metrics):
        cells = "".join(f"<td>{esc(with_ci(metrics, f'{prefix}/{m}'))}</td>" for m in TABLE_METRICS)
        out.append(f"<tr><td>{esc(prefix)}</td>{cells}</tr>")
    out.append("</table>")
    if selection_rows(metrics):
        out.append("<p>Brain-guided selection (identification accuracy; the differences are paired):</p><table><tr>"
                   + "".join(f"<th>{esc(h)}</th>" for h in SELECTION_HEADER) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in selection_rows(metrics)]
        out.append("</table>")
    if genre_sets(metrics):
        out.append("<table><tr><th>genre classified from</th><th>accuracy</th><th>top-3</th><th>agreement</th></tr>")
        for s in genre_sets(metrics):
            out.append(f"<tr><td>{esc(s)}</td><td>{esc(with_ci(metrics, f'genre/{s}/acc'))}</td>"
                       f"<td>{esc(fmt(metrics.get(f'genre/{s}/top3')))}</td>"
                       f"<td>{esc(fmt(metrics.get(f'genre/{s}/agreement')))}</td></tr>")
        out.append("</table>")
    return out


def listening_html(metrics: dict) -> list[str]:
    """The human-identification section of index.html (nothing without listening metrics)."""
    header, rows = listening_table(metrics)
    if not rows:
        return []
    level = f"{metrics.get('ci_level', 0.95):.0%}"
    out = ["<h2>Human identification (listening test)</h2>",
           f"<p>Two-alternative forced choice: the share of trials in which listeners picked the excerpt's "
           f"reconstruction over another clip's (chance 0.5) [{esc(level)} exact binomial interval over "
           f"trials]; {esc(metrics.get('listening/n_listeners'))} listener(s).</p>",
           "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
    return out + ["</table>"]


def write_report(folder: Path, run: Run, metrics: dict, figures: list[str], recon: dict[str, Reconstructions],
                 decoded_genres: dict[str, dict[str, str]], rcfg: DictConfig, eval_dir: Path, seed: int) -> Path:
    """Write the report folder, with the listening test listen.html when there are reconstructions
    (`seed` draws its foils and seeds the listeners' orders); returns the path of index.html."""
    folder = Path(folder)
    chosen = None if rcfg.subjects is None else {subject_label(s) for s in rcfg.subjects}
    subjects = [s for s in run.subjects if chosen is None or s in chosen]
    # Per kind, the files shown per clip; a selection's first and random candidates are only scored.
    counts = {"retrieval": int(rcfg.retrieved), "generated": int(rcfg.generated)}
    shown = {kind: counts.get(kind, 1) for kind in recon if not kind.endswith(("/first", "/random"))}
    stimuli = StimulusSet(data_paths(run.cfg.data)["stimuli"])

    level = f"{metrics.get('ci_level', 0.95):.0%}"
    body = [f"<h1>Listening report: {esc(run.path)}</h1>",
            f"<p id=\"audio-status\">{esc('audio not checked (scripts disabled)')}</p>",
            f"<p>Subjects: {esc(', '.join(subjects))}. Decoder: {esc(_class_name(run.cfg.get('decoder')))}; "
            f"target space: {esc(_class_name(run.cfg.target))}. Values: mean over subjects "
            f"[{esc(level)} bootstrap interval].</p>"]
    body += metrics_tables(metrics) + listening_html(metrics)
    for name in figures:
        vector = Path(name).with_suffix(".svg").as_posix()
        for file in (name, vector):
            _copy(eval_dir / file, folder / "figures" / file)
        # At its own size (wide figures stay readable); the SVG for print.
        body.append(f'<a href="{esc("figures/" + vector)}"><img src="{esc("figures/" + name)}" alt="{esc(name)}"></a>')

    clips: dict[str, Clip] = {}
    for subject in subjects:
        clips.update({c.clip_id: c for c in run.test_clips(subject)})
    # The listening test's pool: rel paths of the stimuli and of each clip's first reconstruction.
    excerpts: dict[str, str] = {}
    heard: dict[str, dict[str, dict[str, str]]] = {}
    for clip_id in sorted(clips):
        clip = clips[clip_id]
        rel = f"audio/stimuli/{clip_id}.wav"
        write_stimulus(stimuli, clip, folder / rel)
        excerpts[clip_id] = rel
        body.append(f'<div class="clip"><h3>{esc(clip_id)} ({esc(clip.genre)}, {clip.start:.2f}-{clip.end:.2f} s '
                    f'of {esc(clip.track_name)})</h3>{_player(rel, "stimulus")}')
        head = "<tr><th>subject</th><th>decoded genre</th>" + "".join(f"<th>{esc(k)}</th>" for k in shown) + "</tr>"
        body.append(f"<table>{head}")
        for subject in subjects:
            if clip_id not in run.subjects[subject].clip_ids:
                continue
            genre = decoded_genres.get(subject, {}).get(clip_id)
            mark = "" if genre is None else ("right" if genre == clip.genre else "wrong")
            cells = [f"<td>{esc(subject)}</td>", f'<td class="{mark}">{esc(genre or "n/a")}</td>']
            for kind, n_shown in shown.items():
                players = []
                for n, src in enumerate(recon[kind].get(subject, {}).get(clip_id, [])[:n_shown]):
                    rel = f"audio/{kind}/{subject}/{src.name}"
                    _copy(src, folder / rel)
                    if n == 0:
                        heard.setdefault(kind, {}).setdefault(subject, {})[clip_id] = rel
                    players.append(_player(rel, _label(kind, n, src)))
                cells.append(f"<td>{''.join(players) or 'none'}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        body.append("</table></div>")

    trials = listening_trials(heard, excerpts, seed)
    if trials:
        write_listening_page(folder, trials, seed, f"b2m listening test: {run.path}", int(rcfg.listening_trials))
        body.insert(1, '<p><a href="listen.html">listening test</a>: for human listeners, which of two '
                       'reconstructions matches an excerpt (its results: <code>evaluate.py listening=</code>)</p>')
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc('b2m listening report: ' + run.path.name)}</title><style>{STYLE}</style></head>\n"
            "<body>\n" + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")
    write_text(folder / "index.html", page)
    return folder / "index.html"
