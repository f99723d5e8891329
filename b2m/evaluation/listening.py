"""A two-alternative forced-choice (2AFC) listening test of the reconstructions, and its results.

    report/listen.html                  the test: one static page beside index.html, offline, from file://
                                        (templates/listen.html; its program and draw: templates/listen.js)
    listening_<listener>_<time>.json    what a listener's browser downloads at the end of a session

A trial plays a stimulus excerpt, then two clips, A and B: the reconstruction of that excerpt (by one
subject and method) and the same subject's and method's reconstruction of another test clip (the
foil); the listener says which one matches the excerpt (chance 0.5). A session is `n_per_session`
trials of the pool, the methods interleaved and balanced; which trials, their order and the A/B
positions come from a PRNG seeded by the page's seed and the listener ID, so every listener gets their
own order and each can be reproduced. `listening_session` redraws a listener's session in Python.
`read_listening` scores a folder of downloaded results beside the page they came from (a copy of
listen.html): each file is checked against the session the page drew for its listener, then the share
of trials answered right per method (over all subjects, and per subject) is scored, with the exact
(Clopper-Pearson) binomial interval over trials.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from b2m.core.errors import B2MError
from b2m.core.io import read_text, write_text
from b2m.evaluation.results import Result
from b2m.evaluation.templates import render

FORMAT = "b2m-listening/1"
POSITIONS = ("A", "B")
# What every trial of a result file holds (the page writes them); the target's position is redrawn
# from the page, never read from the file.
TRIAL_KEYS = ("index", "subject", "method", "clip_id", "foil_clip_id", "target_position", "choice", "response_ms")
# What names a trial of the pool (one per method, subject and clip).
TRIAL_ID = ("method", "subject", "clip_id", "foil_clip_id")
# The data element's opening tag exactly as templates/listen.html writes it: a results folder's page is
# read back by it (`_read_page`).
DATA_TAG = '<script type="application/json" id="listening-data">'
UINT32 = 0xFFFFFFFF


def listening_trials(heard: dict[str, dict[str, dict[str, str]]], excerpts: dict[str, str], seed: int) -> list[dict]:
    """The pool of trials from `heard[method][subject][clip_id]` (the rel path of that clip's first
    reconstruction) and `excerpts[clip_id]` (the rel path of its stimulus): one trial per method,
    subject and clip (methods in `heard`'s order, subjects and clips sorted), whose foil is the same
    subject's and method's reconstruction of another clip, drawn with numpy's Generator seeded by
    `seed`. A foil that is the target's own file is never drawn (retrieval can return one track for two
    clips: A and B would be the same sound); a clip with no other file gets no trial."""
    rng = np.random.default_rng(seed)
    trials = []
    for method, per_subject in heard.items():
        for subject in sorted(per_subject):
            files = per_subject[subject]
            for clip_id in sorted(files):
                others = [c for c in sorted(files) if c != clip_id and files[c] != files[clip_id]]
                if not others:
                    continue
                foil = others[int(rng.integers(len(others)))]
                trials.append({"subject": subject, "method": method, "clip_id": clip_id,
                               "excerpt": excerpts[clip_id], "target": files[clip_id], "foil": files[foil],
                               "foil_clip_id": foil})
    return trials


def write_listening_page(folder: Path, trials: list[dict], seed: int, title: str, n_per_session: int,
                         caveats: dict[str, str] | None = None) -> Path:
    """Write `folder/listen.html` (templates/listen.html), the test over the pool `trials` (see
    `listening_trials`; its paths relative to `folder`) with sessions of `n_per_session` trials;
    `caveats` ({method: sentence}) are said on the start screen, for methods in the pool that are not
    reconstructions to be judged as such (a random-weight generator). Returns its path."""
    data = {"format": FORMAT, "title": title, "seed": seed, "n_per_session": n_per_session, "trials": trials}
    page = render("listen.html", title=title, n=min(n_per_session, len(trials)), caveats=dict(caveats or {}),
                  data=data)
    write_text(Path(folder) / "listen.html", page)
    return Path(folder) / "listen.html"


# ----------------------------------------------------------------- the draw, in Python
def _fnv1a(text: str) -> int:
    """FNV-1a (32 bits) over the UTF-16 code units of `text`, as `hash` in templates/listen.js (JavaScript
    strings are UTF-16: a character beyond U+FFFF is two units)."""
    units = text.encode("utf-16-le")
    h = 2166136261
    for i in range(0, len(units), 2):
        h = ((h ^ int.from_bytes(units[i:i + 2], "little")) * 16777619) & UINT32
    return h


def _mulberry32(a: int):
    """`mulberry32` in templates/listen.js: floats in [0, 1). JavaScript's int32 arithmetic is arithmetic
    mod 2**32, and `>>>` is `>>` on the unsigned value, so everything is kept in [0, 2**32)."""
    def rand() -> float:
        nonlocal a
        a = (a + 0x6D2B79F5) & UINT32
        t = ((a ^ (a >> 15)) * (1 | a)) & UINT32
        t = ((t + ((t ^ (t >> 7)) * (61 | t))) & UINT32) ^ t
        return (t ^ (t >> 14)) / 4294967296
    return rand


def _shuffle(items: list, rand) -> list:
    """`shuffle` in templates/listen.js (Fisher-Yates from the end, in place)."""
    for i in range(len(items) - 1, 0, -1):
        j = int(rand() * (i + 1))
        items[i], items[j] = items[j], items[i]
    return items


def listening_session(page: dict, listener: str) -> list[tuple[dict, str]]:
    """The session listen.html shows `listener`: `page` is its data (`seed`, `n_per_session`, the pool
    `trials`); returns (trial of the pool, target position "A" or "B") in the order shown. The same
    draw as `drawSession` in templates/listen.js, step for step: any change there must be made here."""
    rand = _mulberry32(_fnv1a(f"{page['seed']}:{listener}"))
    groups: dict[str, list[dict]] = {}  # by method, in the order of first appearance, as JS's Map
    for t in page["trials"]:
        groups.setdefault(t["method"], []).append(t)
    lists = [_shuffle(list(group), rand) for group in groups.values()]
    n = min(page["n_per_session"], len(page["trials"]))
    picked: list[dict] = []
    round_ = 0
    while len(picked) < n:
        for group in _shuffle([g for g in lists if round_ < len(g)], rand):
            if len(picked) < n:
                picked.append(group[round_])
        round_ += 1
    positions = _shuffle(["A" if i % 2 else "B" for i in range(len(picked))], rand)
    return list(zip(picked, positions))


# ----------------------------------------------------------------- results
def read_listening(folder: Path, level: float, test_clips: dict[str, list[str]]) -> list[Result]:
    """Score the result files `folder/*.json` (hidden files skipped) at confidence `level`, against
    `folder/listen.html`, a copy of the page the listeners used; every trial of the page must be one of
    `test_clips` (`{subject: [clip_id, ...]}`, the evaluated run's), or the page is another run's.

    Returns rows (section `listening`, the method as set): `n_listeners` (distinct listener IDs), per
    method `accuracy` (share of trials whose choice was the target's position, with its exact
    Clopper-Pearson interval), `n_trials` and `n_listeners`, and per subject and method `accuracy` (with
    its interval) and `n_trials`.

    The page's seed and a listener's ID fix that listener's session (`listening_session`), so a file
    is accepted only if it is exactly that session: the page's title and seed, and each trial the one
    the page showed at that place (method, subject, clip, foil, target position), none repeated, none
    missing. A choice is right when it is the redrawn target position. Since the draw is
    deterministic, a second file of one listener is that session again (a retake, or a copy with
    other times): it is refused, not counted once, as which answers to keep is the experimenter's
    call. A missing or empty folder, a missing page, and any file that fails these checks are
    B2MErrors naming the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise B2MError(f"{folder}: listening: {'not a folder' if folder.exists() else 'folder not found'} "
                       f"(expected a folder of listening-test result files)")
    files = sorted(p for p in folder.glob("*.json") if not p.name.startswith(".") and p.is_file())
    if not files:
        raise B2MError(f"{folder}: listening: no result files (*.json) in this folder")
    page_path = folder / "listen.html"
    page = _read_page(page_path)
    foreign = [t for t in page["trials"] if t["clip_id"] not in test_clips.get(t["subject"], ())]
    if foreign:
        raise B2MError(f"{page_path}: clip {foreign[0]['clip_id']!r:.60} of {foreign[0]['subject']!r:.40} is not a "
                       f"test clip of the evaluated run; the page was made for another run")
    sessions: dict[str, Path] = {}  # listener -> their file
    rows = []  # (listener, subject, method, right)
    for path in files:
        result = _read_result(path)
        listener = result["listener"]
        if result.get("page") != page["title"] or result.get("seed") != page["seed"]:
            raise B2MError(f"{path}: from another listening page (page {result.get('page')!r:.80}, seed "
                           f"{result.get('seed')!r:.20}; {page_path.name} is {page['title']!r}, seed {page['seed']})")
        if listener in sessions:
            raise B2MError(f"{path}: listener {listener!r:.60} again (also {sessions[listener].name}); the page draws "
                           f"one session per listener ID, so this is that session again: keep one file")
        sessions[listener] = path
        session = listening_session(page, listener)
        _check_session(path, result["trials"], session, listener)
        rows += [(listener, shown["subject"], shown["method"], answer["choice"] == target)
                 for answer, (shown, target) in zip(result["trials"], session)]

    results = [Result("listening", "", "n_listeners", len({r[0] for r in rows}))]
    methods = sorted({r[2] for r in rows})
    for method in methods:
        mine = [r for r in rows if r[2] == method]
        results += _scores(method, None, [r[3] for r in mine], level)
        results.append(Result("listening", method, "n_listeners", len({r[0] for r in mine})))
    for subject in sorted({r[1] for r in rows}):
        for method in methods:
            mine = [r[3] for r in rows if r[1] == subject and r[2] == method]
            if mine:
                results += _scores(method, subject, mine, level)
    return results


def _scores(method: str, subject: str | None, right: list[bool], level: float) -> list[Result]:
    """`accuracy` with its exact binomial interval, and `n_trials`."""
    k, n = sum(right), len(right)
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return [Result("listening", method, "accuracy", k / n, subject, interval=(float(ci.low), float(ci.high)), n=n),
            Result("listening", method, "n_trials", n, subject)]


def _read_page(path: Path) -> dict:
    """The data of the listening page `path` (the `listening-data` element that write_listening_page
    writes), checked as far as `listening_session` relies on it."""
    text = read_text(path, "listening page (copy the report/listen.html the listeners used beside their files)")
    start = text.find(DATA_TAG)
    end = text.find("</script>", start)
    if start < 0 or end < 0:
        raise B2MError(f"{path}: not a listening page (no listening-data element, as report/listen.html has)")
    try:
        page = json.loads(text[start + len(DATA_TAG):end])
    except json.JSONDecodeError as err:
        raise B2MError(f"{path}: listening-data is not valid JSON ({err.msg})") from None
    if not isinstance(page, dict) or page.get("format") != FORMAT:
        raise B2MError(f"{path}: not a listening page of format {FORMAT!r}")
    # String(seed) in JavaScript is Python's str(seed) only for the integers a double holds exactly.
    seed, n = page.get("seed"), page.get("n_per_session")
    if not isinstance(seed, int) or isinstance(seed, bool) or abs(seed) > 2 ** 53 - 1:
        raise B2MError(f"{path}: seed must be an integer within +-(2**53 - 1), got {seed!r:.40}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise B2MError(f"{path}: n_per_session must be an integer >= 1, got {n!r:.40}")
    trials = page.get("trials")
    if not isinstance(page.get("title"), str) or not isinstance(trials, list) or not trials or not all(
            isinstance(t, dict) and all(isinstance(t.get(k), str) for k in TRIAL_ID) for t in trials):
        raise B2MError(f"{path}: listening-data needs a title and a non-empty list of trials with "
                       f"{', '.join(TRIAL_ID)}")
    return page


def _check_session(path: Path, trials: list[dict], session: list[tuple[dict, str]], listener: str) -> None:
    """The answered `trials` of the file `path` are the `session` the page drew for `listener`, in order."""
    first: dict[tuple, int] = {}
    for i, answer in enumerate(trials):
        key = (answer["method"], answer["subject"], answer["clip_id"])  # one pool trial each
        if key in first:
            raise B2MError(f"{path}: trials[{i}]: repeats trials[{first[key]}] ({_describe(answer)})")
        first[key] = i
    for i, (answer, (shown, target)) in enumerate(zip(trials, session)):
        if answer["index"] != i or any(answer[k] != shown[k] for k in TRIAL_ID):
            raise B2MError(f"{path}: trials[{i}]: not what the page showed listener {listener!r:.60} as trial {i + 1} "
                           f"(index {i}, {_describe(shown)}); the file has index {answer['index']!r}, "
                           f"{_describe(answer)}")
        if answer["target_position"] != target:
            raise B2MError(f"{path}: trials[{i}]: target_position {answer['target_position']!r} is not where the "
                           f"page put the target for listener {listener!r:.60} ({target!r})")
    if len(trials) != len(session):
        raise B2MError(f"{path}: {len(trials)} trials; the page's session for listener {listener!r:.60} has "
                       f"{len(session)}")


def _describe(trial: dict) -> str:
    return ", ".join(f"{k} {trial[k]!r:.60}" for k in TRIAL_ID)


def _read_result(path: Path) -> dict:
    """One result file, checked; a B2MError naming the file (and trial) and what is wrong."""
    try:
        result = json.loads(read_text(path, "listening-test result file"))
    except json.JSONDecodeError as err:
        raise B2MError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    got = result.get("format") if isinstance(result, dict) else type(result).__name__
    if got != FORMAT:
        raise B2MError(f"{path}: not a listening-test result (format {got!r}, expected {FORMAT!r}, as "
                       f"report/listen.html writes)")
    for key in ("listener", "started"):
        if not isinstance(result.get(key), str) or not result[key]:
            raise B2MError(f"{path}: {key} must be a non-empty string, got {result.get(key)!r}")
    trials = result.get("trials")
    if not isinstance(trials, list) or not trials:
        raise B2MError(f"{path}: trials must be a non-empty list, got {trials!r:.60}")
    for i, trial in enumerate(trials):
        _check_trial(f"{path}: trials[{i}]", trial)
    return result


def _check_trial(where: str, trial) -> None:
    if not isinstance(trial, dict):
        raise B2MError(f"{where}: expected an object, got {trial!r:.60}")
    missing = [k for k in TRIAL_KEYS if k not in trial]
    if missing:
        raise B2MError(f"{where}: missing {', '.join(missing)}")
    for key in ("subject", "method", "clip_id", "foil_clip_id"):
        if not isinstance(trial[key], str) or not trial[key]:
            raise B2MError(f"{where}: {key} must be a non-empty string, got {trial[key]!r:.60}")
    # The subject starts the per-subject metric keys (`<subject>/listening/...`): one path segment.
    if "/" in trial["subject"]:
        raise B2MError(f"{where}: subject must not contain '/', got {trial['subject']!r:.60}")
    for key in ("target_position", "choice"):
        if trial[key] not in POSITIONS:
            raise B2MError(f"{where}: {key} must be 'A' or 'B', got {trial[key]!r:.60}")
    if not isinstance(trial["index"], int) or isinstance(trial["index"], bool):
        raise B2MError(f"{where}: index must be an integer, got {trial['index']!r:.60}")
    ms = trial["response_ms"]
    if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not 0 <= ms < float("inf"):
        raise B2MError(f"{where}: response_ms must be a number >= 0, got {ms!r:.60}")
