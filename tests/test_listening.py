"""The 2AFC listening test: its pool, its page (clicked through in a real headless chromium, driven by
selenium through Debian's chromedriver), and the ingestion of the results it downloads."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import subprocess
import time
from importlib.resources import files
from pathlib import Path
from urllib.parse import unquote

import pytest
from scipy.stats import binomtest

from b2m.core.config import compose
from b2m.core.errors import B2MError
from b2m.evaluation.listening import (FORMAT, _fnv1a, listening_session, listening_trials, read_listening,
                                      write_listening_page)
from b2m.evaluation.results import Results
from b2m.jobs.evaluate import evaluate
from test_evaluation import run_cli, write_recon

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the dev extra brings it
    webdriver = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    webdriver is None or CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs selenium (pip install -e '.[dev]'), chromium and chromedriver (apt-get install chromium "
           "chromium-driver); CI installs them")
NODE = shutil.which("node")
SESSION = 10  # trials per listener session in the browser test
TITLE = "b2m listening test: run"
# The page's program and its session draw, the one copy of the draw, as the installed package ships it.
LISTEN_JS = files("b2m.evaluation") / "templates" / "listen.js"
CLIPS = {s: [f"c{i}" for i in range(4)] for s in ("sub-001", "sub-002")}  # the run's test clips


def results_page(folder: Path, seed: int = 0, title: str = TITLE, n_per_session: int = 6) -> dict:
    """`folder/listen.html` over 2 methods x 2 subjects x 4 clips (16 trials); returns its data."""
    heard = {m: {s: {f"c{i}": f"audio/{m}/{s}/c{i}.wav" for i in range(4)} for s in ("sub-001", "sub-002")}
             for m in ("retrieval", "generated")}
    pool = listening_trials(heard, {f"c{i}": f"audio/stimuli/c{i}.wav" for i in range(4)}, seed)
    return json.loads(pool_text(write_listening_page(folder, pool, seed, title, n_per_session)))


def answers(page: dict, listener: str, right) -> list[dict]:
    """`listener`'s session as the page records it, trial i answered right when `right(i)`."""
    return [{"index": i, "subject": t["subject"], "method": t["method"], "clip_id": t["clip_id"],
             "foil_clip_id": t["foil_clip_id"], "target_position": target,
             "choice": target if right(i) else ("B" if target == "A" else "A"), "response_ms": 1200}
            for i, (t, target) in enumerate(listening_session(page, listener))]


def write_result(folder: Path, name: str, listener: str, trials: list[dict], **extra) -> Path:
    """A result file as listen.html downloads it (from the page `results_page` writes, by default)."""
    doc = {"format": FORMAT, "page": TITLE, "seed": 0, "listener": listener, "started": "2024-05-01T10:00:00.000Z",
           "finished": "2024-05-01T10:20:00.000Z", "trials": trials, **extra}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(doc))
    return folder / name


def refused(folder: Path, path: Path, message: str) -> None:
    """Reading `folder` is a one-line B2MError naming `path` and saying `message` (a regex)."""
    with pytest.raises(B2MError, match=rf"^{re.escape(str(path))}: {message}") as err:
        read_listening(folder, 0.95, CLIPS)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------- the pool and the page
def test_foils_are_other_clips_of_the_same_subject_and_method_drawn_reproducibly():
    heard = {m: {s: {f"c{i}": f"audio/{m}/{s}/c{i}.wav" for i in range(6)} for s in ("sub-001", "sub-002")}
             for m in ("retrieval", "generated/brain")}
    excerpts = {f"c{i}": f"audio/stimuli/c{i}.wav" for i in range(6)}
    pool = listening_trials(heard, excerpts, seed=3)
    assert len(pool) == 2 * 2 * 6
    assert [t["method"] for t in pool[:12]] == ["retrieval"] * 12  # methods in the mapping's order
    for t in pool:
        assert t["foil_clip_id"] != t["clip_id"]
        assert t["foil"] == heard[t["method"]][t["subject"]][t["foil_clip_id"]]
        assert t["target"] == heard[t["method"]][t["subject"]][t["clip_id"]]
        assert t["excerpt"] == excerpts[t["clip_id"]]
    assert listening_trials(heard, excerpts, seed=3) == pool
    assert [t["foil"] for t in listening_trials(heard, excerpts, seed=4)] != [t["foil"] for t in pool]
    # Retrieval may return one file for two clips: that file is never the foil of either.
    same = {"retrieval": {"sub-001": {"a": "audio/r/x.wav", "b": "audio/r/x.wav", "c": "audio/r/y.wav"}}}
    pool = listening_trials(same, {c: f"{c}.wav" for c in "abc"}, seed=0)
    assert all(t["foil"] != t["target"] for t in pool)
    assert {t["clip_id"]: t["foil_clip_id"] for t in pool} == {"a": "c", "b": "c", "c": pool[2]["foil_clip_id"]}


class Scripts(html.parser.HTMLParser):
    """The text of each <script> element by id, and the page's visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: dict[str, str] = {}
        self.text, self._script = "", None

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._script = dict(attrs).get("id", "")
            self.scripts[self._script] = ""

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._script is None:
            self.text += data
        else:
            self.scripts[self._script] += data


def pool_text(page: Path) -> str:
    parsed = Scripts()
    parsed.feed(page.read_text())
    return parsed.scripts["listening-data"]


def markup_page(tmp_path: Path) -> tuple[Path, list[dict], str]:
    title = "run <i>x</i></script><script>alert(1)</script> & co"
    clips = {c: f"audio/generated/sub-001/{c}.wav" for c in ("a</script><i>b", "c&d", "é\u2028")}
    pool = listening_trials({"generated": {"sub-001": clips}}, {c: f"audio/stimuli/{c}.wav" for c in clips}, 0)
    return write_listening_page(tmp_path, pool, seed=7, title=title, n_per_session=2), pool, title


def test_the_page_embeds_its_pool_safely(tmp_path):
    page, pool, title = markup_page(tmp_path)
    text = page.read_text()
    assert "<i>" not in text and text.count("</script>") == 2
    parsed = Scripts()
    parsed.feed(text)
    assert set(parsed.scripts) == {"listening-data", ""}
    data = json.loads(parsed.scripts["listening-data"])
    assert data == {"format": FORMAT, "title": title, "seed": 7, "n_per_session": 2, "trials": pool}
    assert title in parsed.text and "Each of the 2 trials" in parsed.text
    assert "http" not in text  # nothing from a network
    # The program is the shipped file, verbatim: the draw the node test checks is the one the page runs.
    assert parsed.scripts[""].strip() == LISTEN_JS.read_text(encoding="utf-8").strip()
    assert 'class="caveat"' not in text  # no caveat where the pool has none


def test_the_start_screen_says_the_caveats_of_the_methods_in_the_pool(tmp_path):
    pool = listening_trials({"generated": {"sub-001": {c: f"g/{c}.wav" for c in "ab"}}},
                            {c: f"s/{c}.wav" for c in "ab"}, 0)
    page = write_listening_page(tmp_path, pool, 0, TITLE, 2, caveats={"generated": "random <weights> & co"})
    parsed = Scripts()
    parsed.feed(page.read_text())
    assert "generated: random <weights> & co" in parsed.text and "report.listening_random=true" in parsed.text
    assert "random &lt;weights&gt; &amp; co" in page.read_text()
    assert json.loads(parsed.scripts["listening-data"])["trials"] == pool  # the data keeps its format


# ----------------------------------------------------------------- the session draw
LISTENERS = ["ann", "tester <1>", "", " x ", "é\u2028", "\U0001F3B5 two units", "a" * 300]


def uneven_page(seed: int, n_per_session: int) -> dict:
    """A pool of 3 methods with 6, 4 and 1 trials, not grouped by method."""
    heard = {m: {"sub-001": {f"c{i}": f"{m}/c{i}.wav" for i in range(k)}, "sub-002": {"c0": "x", "c1": "y"}}
             for m, k in (("retrieval", 4), ("generated", 2))}
    pool = listening_trials(heard, {f"c{i}": f"stimuli/c{i}.wav" for i in range(4)}, seed)
    pool.insert(1, {**pool[-1], "method": "other", "subject": "sub-001"})
    return {"seed": seed, "n_per_session": n_per_session, "trials": pool}


def test_fnv1a_gives_the_reference_values():
    # The FNV authors' test vectors (32-bit FNV-1a); the node test covers characters beyond U+FFFF.
    assert (_fnv1a(""), _fnv1a("a"), _fnv1a("foobar")) == (0x811C9DC5, 0xE40C292C, 0xBF9CF968)


def test_a_session_is_balanced_and_fixed_by_the_seed_and_listener():
    page = uneven_page(0, 8)
    session = listening_session(page, "ann")
    methods = [t["method"] for t, _ in session]
    # Rounds of one trial per method until the rarest one runs out, then the others alternate.
    assert sorted(methods[:3]) == ["generated", "other", "retrieval"]
    assert sorted(methods[3:5]) == sorted(methods[5:7]) == ["generated", "retrieval"]
    assert methods.count("other") == 1
    assert [p for _, p in session].count("A") == 4
    assert len({(t["method"], t["subject"], t["clip_id"]) for t, _ in session}) == 8
    assert listening_session(page, "ann") == session
    assert listening_session(page, "bob") != session
    assert listening_session({**page, "seed": 1}, "ann") != session
    assert len(listening_session({**page, "n_per_session": 100}, "ann")) == len(page["trials"])


@pytest.mark.skipif(NODE is None, reason="needs node to run the page's JavaScript")
@pytest.mark.parametrize("seed, n_per_session", [(0, 8), (12345, 5), (2 ** 40 + 7, 100)])
def test_the_python_draw_is_the_pages_javascript_draw(seed, n_per_session):
    page = uneven_page(seed, n_per_session)
    # The page's own draw (the shipped listen.js, which listen.html includes) for each listener, in node.
    harness = "'use strict';\n" + LISTEN_JS.read_text(encoding="utf-8") + """
    const q = JSON.parse(require('fs').readFileSync(0, 'utf8'));
    console.log(JSON.stringify(q.listeners.map(function (l) { return drawSession(q.page, l); })));
    """
    out = subprocess.run([NODE, "-e", harness], input=json.dumps({"page": page, "listeners": LISTENERS}),
                         capture_output=True, text=True, timeout=60, check=True).stdout
    js = [[(s["trial"], s["target"]) for s in session] for session in json.loads(out)]
    assert js == [listening_session(page, listener) for listener in LISTENERS]


# ----------------------------------------------------------------- reading results
def test_results_are_scored_from_choices_with_exact_intervals(tmp_path):
    folder = tmp_path / "results"
    page = results_page(folder)
    rules = {"ann": lambda i: i % 3 != 0, "bob": lambda i: i % 2 == 0}
    for listener, right in rules.items():
        trials = answers(page, listener, right)
        trials[0]["correct"] = True  # a wrong answer claiming otherwise: ignored
        write_result(folder, f"listening_{listener}.json", listener, trials)
    # Neither hidden files nor other files nor sub-folders are read.
    (folder / ".listening_ann.json").write_text("junk")
    (folder / "notes.txt").write_text("junk")
    write_result(folder / "old", "listening_carl.json", "carl", answers(page, "carl", lambda i: True))

    m = Results(read_listening(folder, 0.9, CLIPS)).flat()
    assert m["listening/n_listeners"] == 2
    marks = [(t["method"], t["subject"], rules[listener](i)) for listener in rules
             for i, (t, _) in enumerate(listening_session(page, listener))]

    def count(method: str, subject: str | None = None) -> tuple[int, int]:
        mine = [r for m_, s, r in marks if m_ == method and subject in (None, s)]
        return sum(mine), len(mine)

    def expect(prefix: str, k: int, n: int) -> None:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
        assert m[f"{prefix}/accuracy"] == pytest.approx(k / n)
        assert (m[f"{prefix}/accuracy_ci_low"], m[f"{prefix}/accuracy_ci_high"]) == pytest.approx((ci.low, ci.high))
        assert m[f"{prefix}/n_trials"] == n

    assert count("retrieval")[1] == count("generated")[1] == 6  # 3 of each per session
    for method in ("retrieval", "generated"):
        expect(f"listening/{method}", *count(method))
        assert m[f"listening/{method}/n_listeners"] == 2
        for subject in ("sub-001", "sub-002"):
            if count(method, subject)[1]:
                expect(f"{subject}/listening/{method}", *count(method, subject))
            else:
                assert f"{subject}/listening/{method}/accuracy" not in m
    assert all(isinstance(m[k], int) for k in m if k.endswith(("n_trials", "n_listeners")))


def test_a_forged_target_position_is_refused_and_never_scored(tmp_path):
    folder = tmp_path / "results"
    page = results_page(folder)
    honest = answers(page, "ann", lambda i: True)
    for t in honest:
        t["choice"] = "A"  # always A: right on the half of the trials whose target is A
    path = write_result(folder, "listening_ann.json", "ann", honest)
    assert Results(read_listening(folder, 0.95, CLIPS)).flat()["listening/retrieval/accuracy"] == pytest.approx(
        sum(t["target_position"] == "A" for t in honest if t["method"] == "retrieval") / 3)
    forged = [{**t, "target_position": t["choice"]} for t in honest]
    first = next(i for i, t in enumerate(honest) if t["target_position"] != "A")
    write_result(folder, path.name, "ann", forged)
    refused(folder, path, rf"trials\[{first}\]: target_position 'A' is not where the page put the target "
                          rf"for listener 'ann' \('B'\)")


def unoffered(page: dict, listener: str) -> dict:
    """A trial of the pool that `listener`'s session does not hold."""
    shown = [t for t, _ in listening_session(page, listener)]
    return next(t for t in page["trials"] if t not in shown)


def set_trial(i: int, **values):
    return lambda doc, page: doc["trials"][i].update(values)


def offer(i: int):
    """Trial i becomes one of the pool the page never showed this listener (its choice and target kept)."""
    return lambda doc, page: doc["trials"][i].update(
        {k: unoffered(page, "bob")[k] for k in ("subject", "method", "clip_id", "foil_clip_id")})


@pytest.mark.parametrize("fault, message", [
    ("{", r"not valid JSON"),
    ([], r"not a listening-test result \(format 'list'"),
    ({"format": "b2m-listening/2"}, r"not a listening-test result \(format 'b2m-listening/2'"),
    ({"listener": ""}, r"listener must be a non-empty string"),
    ({"trials": []}, r"trials must be a non-empty list"),
    ({"trials": [{"subject": "sub-001"}]}, r"trials\[0\]: missing index, method, clip_id"),
    (set_trial(0, choice="C"), r"trials\[0\]: choice must be 'A' or 'B', got 'C'"),
    (set_trial(0, target_position="a"), r"trials\[0\]: target_position must be 'A' or 'B'"),
    (set_trial(0, response_ms="fast"), r"trials\[0\]: response_ms must be a number"),
    (set_trial(0, subject="sub/1"), r"trials\[0\]: subject must not contain '/'"),
    # Not the page's session: another page, a trial never offered, a repeat, a missing or moved one.
    ({"seed": 1}, r"from another listening page \(page 'b2m listening test: run', seed 1; listen.html is "
                  r"'b2m listening test: run', seed 0\)"),
    ({"page": "b2m listening test: other"}, r"from another listening page \(page 'b2m listening test: other'"),
    (offer(2), r"trials\[2\]: not what the page showed listener 'bob' as trial 3 \(index 2, method "),
    (set_trial(1, clip_id="c9"), r"trials\[1\]: not what the page showed listener 'bob' as trial 2 .* clip_id 'c9'"),
    (set_trial(4, foil_clip_id="c9"), r"trials\[4\]: not what the page showed .* foil_clip_id 'c9'$"),
    (set_trial(3, index=0), r"trials\[3\]: not what the page showed listener 'bob' as trial 4 .* index 0, "),
    (lambda doc, page: doc["trials"].append({**doc["trials"][1], "index": 6}),
     r"trials\[6\]: repeats trials\[1\] \(method "),
    (lambda doc, page: doc["trials"].__setitem__(5, {**doc["trials"][0], "index": 5}),
     r"trials\[5\]: repeats trials\[0\]"),
    (lambda doc, page: doc["trials"].append({**doc["trials"][0], **unoffered(page, "bob"), "index": 6}),
     r"7 trials; the page's session for listener 'bob' has 6$"),
    (lambda doc, page: doc["trials"].pop(), r"5 trials; the page's session for listener 'bob' has 6$"),
    (lambda doc, page: doc["trials"].reverse(), r"trials\[0\]: not what the page showed listener 'bob'"),
])
def test_a_bad_result_file_is_an_error_naming_it(tmp_path, fault, message):
    folder = tmp_path / "results"
    page = results_page(folder)
    write_result(folder, "good.json", "ann", answers(page, "ann", lambda i: i % 2 == 0))
    if isinstance(fault, str):
        (folder / "bad.json").write_text(fault)
    elif isinstance(fault, list):
        (folder / "bad.json").write_text(json.dumps(fault))
    else:
        write_result(folder, "bad.json", "bob", answers(page, "bob", lambda i: i % 2 == 0))
        doc = json.loads((folder / "bad.json").read_text())
        if isinstance(fault, dict):
            doc.update(fault)
        else:
            fault(doc, page)
        (folder / "bad.json").write_text(json.dumps(doc))
    refused(folder, folder / "bad.json", message)


def test_one_listeners_session_is_read_once(tmp_path):
    folder = tmp_path / "results"
    page = results_page(folder)
    first = write_result(folder, "listening_ann_1.json", "ann", answers(page, "ann", lambda i: False))
    # The same session again, later and answered better: refused, not counted.
    write_result(folder, "listening_ann_2.json", "ann", answers(page, "ann", lambda i: True),
                 started="2024-05-02T09:00:00.000Z", finished="2024-05-02T09:20:00.000Z")
    refused(folder, folder / "listening_ann_2.json",
            r"listener 'ann' again \(also listening_ann_1.json\); the page draws one session per listener ID")
    (folder / "listening_ann_2.json").unlink()
    shutil.copyfile(first, folder / "listening_ann_1_copy.json")
    refused(folder, folder / "listening_ann_1_copy.json", r"listener 'ann' again \(also listening_ann_1.json\)")


def test_missing_empty_and_pageless_results_are_errors(tmp_path):
    with pytest.raises(B2MError, match=rf"^{re.escape(str(tmp_path / 'none'))}: listening: folder not found"):
        read_listening(tmp_path / "none", 0.95, CLIPS)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden.json").write_text("{}")
    with pytest.raises(B2MError, match=rf"^{re.escape(str(tmp_path / 'empty'))}: listening: no result files"):
        read_listening(tmp_path / "empty", 0.95, CLIPS)
    folder = tmp_path / "results"
    page = results_page(tmp_path / "report")
    write_result(folder, "listening_ann.json", "ann", answers(page, "ann", lambda i: True))
    refused(folder, folder / "listen.html", r"listening page \(copy the report/listen.html the listeners used")
    (folder / "listen.html").write_text("<html><body>index</body></html>")
    refused(folder, folder / "listen.html", r"not a listening page")
    shutil.copyfile(tmp_path / "report" / "listen.html", folder / "listen.html")
    assert Results(read_listening(folder, 0.95, CLIPS)).flat()["listening/n_listeners"] == 1


# ----------------------------------------------------------------- the job
@pytest.fixture(scope="module")
def evaluated(tuned_run, tmp_path_factory) -> tuple[Path, list[str]]:
    """An evaluation with retrieved and generated audio (its report holds listen.html, the generated noise
    included on purpose: it is labelled as a random-weight generator's), and the overrides that evaluate
    the run again."""
    tmp = tmp_path_factory.mktemp("listening")
    retrieval = write_recon(tuned_run, tmp / "retr", "retrieval", stimulus=True)
    generated = write_recon(tuned_run, tmp / "gen", "generated", stimulus=False)
    base = [f"run={tuned_run}", "n_boot=20", "logo=false", "genre=false", "wandb=false", "tags.enabled=false"]
    evaluate(compose("evaluate", [*base, f"out_dir={tmp / 'ev'}", f"retrieval={retrieval}",
                                  f"generated={generated}", "report.retrieved=1", "report.generated=1",
                                  f"report.listening_trials={SESSION}", "report.listening_random=true"]))
    return tmp / "ev", base


def test_the_report_links_its_listening_test(evaluated):
    report = evaluated[0] / "report"
    assert '<a href="listen.html">listening test</a>' in (report / "index.html").read_text()
    data = json.loads(pool_text(report / "listen.html"))
    assert data["n_per_session"] == SESSION and len(data["trials"]) == 2 * 20  # sub-001's 20 clips, 2 methods
    for t in data["trials"]:
        for key in ("excerpt", "target", "foil"):
            assert (report / t[key]).is_file() and not t[key].startswith(("/", "."))
        assert Path(t["target"]).name == f"{t['clip_id']}_0.wav"
        assert Path(t["foil"]).name == f"{t['foil_clip_id']}_0.wav"


def test_bad_listening_input_stops_the_job_before_it_writes(tuned_run, tmp_path):
    out = tmp_path / "ev"
    with pytest.raises(B2MError, match="report.listening_trials must be an integer >= 1"):
        evaluate(compose("evaluate", [f"run={tuned_run}", f"out_dir={out}", "report.listening_trials=0"]))
    with pytest.raises(B2MError, match=rf"^{tmp_path / 'none'}: listening: folder not found"):
        evaluate(compose("evaluate", [f"run={tuned_run}", f"out_dir={out}", f"listening={tmp_path / 'none'}"]))
    results_page(tmp_path / "results")
    (tmp_path / "results" / "listening_ann.json").write_text('{"format": "b2m-listening/1", "listener": "ann"')
    res = run_cli(f"run={tuned_run}", f"out_dir={out}", f"listening={tmp_path / 'results'}")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    # The page (over clips c0..c3) is not this run's: refused before any result file is read.
    assert res.stderr.startswith(f"error: {tmp_path / 'results' / 'listen.html'}: clip 'c0' of 'sub-001' is not a "
                                 f"test clip of the evaluated run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no out_dir, no .ev.partial


# ----------------------------------------------------------------- in the browser
@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless chromium under selenium; downloads go to the folder `browser.downloads`. Nothing is
    fetched: the driver and the browser are Debian's, given by path (selenium-manager is never asked)."""
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1200,1000"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def start(driver, page: Path, listener: str) -> None:
    driver.get(page.as_uri())
    assert not driver.find_element(By.ID, "choose-A").is_displayed()
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "start").is_enabled())
    driver.find_element(By.ID, "listener").send_keys(listener)
    driver.find_element(By.ID, "start").click()


def shown(driver) -> dict:
    """The trial on screen: its data attributes and the files its players play (rel paths)."""
    el = driver.find_element(By.ID, "trial")
    page = Path(unquote(driver.current_url.removeprefix("file://"))).parent
    files = {name: Path(unquote(driver.find_element(By.ID, name).get_attribute("src").removeprefix("file://")))
             .relative_to(page).as_posix() for name in ("excerpt", "audio-A", "audio-B")}
    return {"index": int(el.get_attribute("data-index")), "method": el.get_attribute("data-method"),
            "subject": el.get_attribute("data-subject"), "clip_id": el.get_attribute("data-clip-id"),
            "target": el.get_attribute("data-target-position"), "progress": driver.find_element(By.ID, "progress").text,
            **files}


@needs_browser
def test_a_listener_session_in_chromium_is_ingested_by_evaluate(evaluated, browser, tuned_run):
    out, base = evaluated
    page = out / "report" / "listen.html"
    pool = {(t["subject"], t["method"], t["clip_id"]): t for t in json.loads(pool_text(page))["trials"]}
    start(browser, page, "tester <1>")
    # The players load their audio from the report folder (file://, relative paths).
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(
        "return ['excerpt', 'audio-A', 'audio-B'].every(function (id) {"
        " var a = document.getElementById(id); return a.error === null && a.readyState >= 1; })"))
    right: dict[str, list[bool]] = {}
    seen = []
    for i in range(SESSION):
        now = shown(browser)
        assert now["index"] == i and now["progress"] == f"trial {i + 1} of {SESSION}"
        t = pool[(now["subject"], now["method"], now["clip_id"])]
        # The page plays what it says: the excerpt, the target at the position it records, the foil at the other.
        other = "B" if now["target"] == "A" else "A"
        assert (now["excerpt"], now[f"audio-{now['target']}"], now[f"audio-{other}"]) == (
            t["excerpt"], t["target"], t["foil"])
        choice = now["target"] if i % 2 == 0 else other  # right on even trials, wrong on odd ones
        right.setdefault(now["method"], []).append(choice == now["target"])
        seen.append((now["clip_id"], now["method"], now["target"]))
        browser.find_element(By.ID, f"choose-{choice}").click()
    # Methods interleaved and balanced; the target is A in half of the trials.
    assert {m: len(v) for m, v in right.items()} == {"retrieval": SESSION // 2, "generated": SESSION // 2}
    assert [s[2] for s in seen].count("A") == SESSION // 2
    assert len({s[0] for s in seen if s[1] == "retrieval"}) == SESSION // 2  # no clip twice per method

    assert not browser.find_element(By.ID, "trial").is_displayed()
    browser.find_element(By.ID, "download").click()
    deadline = time.monotonic() + 20
    while not list(browser.downloads.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    files = list(browser.downloads.glob("*.json"))
    assert len(files) == 1 and files[0].name.startswith("listening_tester_1__"), files
    result = json.loads(files[0].read_text())
    assert result["format"] == FORMAT and result["listener"] == "tester <1>" and result["seed"] == 0
    assert result["page"] == f"b2m listening test: {tuned_run}"
    assert [(t["clip_id"], t["method"], t["target_position"]) for t in result["trials"]] == seen
    # The page's draw is the Python one.
    drawn = listening_session(json.loads(pool_text(page)), "tester <1>")
    assert [(t["clip_id"], t["method"], target) for t, target in drawn] == seen

    # The same listener ID gets the same session again; another ID another one.
    start(browser, page, "tester <1>")
    first = shown(browser)
    assert (first["clip_id"], first["method"], first["target"]) == seen[0]
    start(browser, page, "someone else")
    others = []
    for _ in range(3):
        now = shown(browser)
        others.append((now["clip_id"], now["method"], now["target"]))
        browser.find_element(By.ID, "choose-A").click()
    assert others != seen[:3]

    shutil.copyfile(page, browser.downloads / "listen.html")  # the results are read beside their page
    metrics = evaluate(compose("evaluate", [*base, f"out_dir={out.parent / 'ev2'}",
                                            f"listening={browser.downloads}"])).flat()
    for method, marks in right.items():
        assert metrics[f"listening/{method}/accuracy"] == pytest.approx(sum(marks) / len(marks))
        assert metrics[f"listening/{method}/n_trials"] == len(marks) == metrics[f"sub-001/listening/{method}/n_trials"]
        assert metrics[f"listening/{method}/n_listeners"] == 1
    assert metrics["listening/n_listeners"] == 1
    on_disk = json.loads((out.parent / "ev2" / "metrics.json").read_text())
    assert on_disk["listening/retrieval/accuracy"] == metrics["listening/retrieval/accuracy"]
    acc = metrics["listening/retrieval/accuracy"]
    row = f"| retrieval | all | {acc:.3f} [{metrics['listening/retrieval/accuracy_ci_low']:.3f}"
    assert row in (out.parent / "ev2" / "summary.md").read_text()
    assert "Human identification" in (out.parent / "ev2" / "report" / "index.html").read_text()


@needs_browser
def test_markup_in_the_pool_does_not_break_the_page_in_chromium(tmp_path, browser):
    page, pool, title = markup_page(tmp_path)
    start(browser, page, "x")  # the page's script ran: it enables Start last
    assert browser.find_element(By.TAG_NAME, "h1").text == title
    assert browser.find_element(By.ID, "progress").text == "trial 1 of 2"
    assert shown(browser)["clip_id"] in {t["clip_id"] for t in pool}
    assert browser.execute_script("return document.querySelectorAll('i, script').length") == 2


def test_a_page_made_for_another_run_is_refused(tmp_path):
    folder = tmp_path / "results"
    page = results_page(folder)
    write_result(folder, "listening_ann.json", "ann", answers(page, "ann", lambda i: True))
    other = {"sub-001": CLIPS["sub-001"], "sub-002": ["c0", "c1"]}  # the run evaluated has other test clips
    with pytest.raises(B2MError, match=r"listen\.html: clip 'c[23]' of 'sub-002' is not a test clip of the "
                                       r"evaluated run; the page was made for another run"):
        read_listening(folder, 0.95, other)
