"""The listening report, loaded from file:// in a real headless browser (Debian's chromium), and its
templates, shipped in the package."""

from __future__ import annotations

import fnmatch
import html.parser
import json
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf

from b2m.core.config import compose
from b2m.core.runs import load_run
from b2m.evaluation.reconstruction import ReconSet
from b2m.evaluation.report import write_report
from b2m.evaluation.tables import Table
from b2m.jobs.evaluate import evaluate
from test_evaluation import write_recon

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:  # the dev extra brings it
    webdriver = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    webdriver is None or CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs selenium (pip install -e '.[dev]'), chromium and chromedriver (apt-get install chromium "
           "chromium-driver); CI installs them")
REPO = Path(__file__).resolve().parent.parent
TEMPLATES = files("b2m.evaluation") / "templates"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


class Page(html.parser.HTMLParser):
    """Collects the audio elements (their src and data-state), images, and the status line."""

    def __init__(self) -> None:
        super().__init__()
        self.audio: list[dict] = []
        self.images: list[str] = []
        self.status, self._in_status = "", False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "audio":
            self.audio.append(attrs)
        elif tag == "img":
            self.images.append(attrs["src"])
        self._in_status = attrs.get("id") == "audio-status"

    def handle_data(self, data):
        if self._in_status:
            self.status += data


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tuned_run, tmp_path_factory) -> Path:
    """An evaluation's report with retrieved and generated audio, alone in its folder; built once."""
    tmp_path = tmp_path_factory.mktemp("report")
    retrieval = write_recon(tuned_run, tmp_path / "retr", "retrieval", stimulus=True)
    generated = write_recon(tuned_run, tmp_path / "gen", "generated", stimulus=False)
    # A run folder whose name holds markup: the page must show it as text, never as markup.
    run = tmp_path / "run <i>x</i> & co"
    shutil.copytree(tuned_run, run)
    cfg = compose("evaluate", [f"run='{run}'", f"out_dir={tmp_path / 'ev'}", "n_boot=50", "logo=false",
                                   f"retrieval={retrieval}", f"generated={generated}", "report.retrieved=2",
                                   "report.generated=1"])
    evaluate(cfg)
    # Zip-ability: the report must not reach outside its folder; move it away from everything else.
    moved = tmp_path / "shared" / "report"
    shutil.copytree(tmp_path / "ev" / "report", moved)
    for folder in (tmp_path / "ev", retrieval, generated, run):
        shutil.rmtree(folder)
    return moved / "index.html"


def test_every_player_lists_its_top_tags(report):
    """The tagger's top tags of the stimulus and of every reconstruction shown beside its player."""
    text = report.read_text()
    assert text.count('<div class="tags">tags: ') == 20 * (1 + 2 + 1)
    first = text[text.index('<div class="clip">'):]
    assert len(first[first.index('<div class="tags">tags: '):].split("</div>")[0].split(", ")) == 5  # tags.top_k


def test_report_files_are_relative_copies(report):
    page = Page()
    page.feed(report.read_text())
    assert len(page.audio) == 20 * (1 + 2 + 1)  # per test clip: stimulus, 2 retrieved, 1 generated
    for attrs in page.audio:
        src = unquote(attrs["src"])
        assert not src.startswith(("/", "file:", "http")) and ".." not in src
        path = report.parent / src
        assert path.is_file() and not path.is_symlink()
        assert sf.info(str(path)).frames > 0
    stimulus = sorted((report.parent / "audio" / "stimuli").glob("*.wav"))
    assert len(stimulus) == 20
    wave, rate = sf.read(stimulus[0])
    assert rate == 22050 and len(wave) == 15 * 22050 and np.sqrt(np.mean(wave ** 2)) == pytest.approx(0.1, rel=0.02)
    for src in page.images:
        assert (report.parent / src).is_file()
    text = report.read_text()
    assert "<table>" in text and "identification.png" in text
    assert "<i>" not in text and "run &lt;i&gt;x&lt;/i&gt; &amp; co" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium); CI installs it")
def test_report_in_headless_chromium(report, tmp_path):
    res = chromium("--dump-dom", report.as_uri(), profile=tmp_path / "profile-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    page = Page()
    page.feed(res.stdout)
    n = 20 * 4
    assert len(page.audio) == n
    # The page's own script marks every player whose audio the browser loaded.
    assert [a.get("data-state") for a in page.audio] == ["ok"] * n, page.status
    assert page.status.strip() == f"{n} of {n} audio files loaded, 0 missing"

    shot = tmp_path / "report.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri(), profile=tmp_path / "profile-png")
    assert res.returncode == 0, res.stderr[-2000:]
    import matplotlib.image

    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (1600, 1200) and image.std() > 0.05


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium); CI installs it")
def test_a_missing_audio_file_shows_in_the_browser(report, tmp_path):
    report = shutil.copytree(report.parent, tmp_path / "report") / "index.html"
    victim = sorted((report.parent / "audio" / "generated").rglob("*.wav"))[0]
    victim.unlink()
    res = chromium("--dump-dom", report.as_uri(), profile=tmp_path / "profile")
    page = Page()
    page.feed(res.stdout)
    states = [a.get("data-state") for a in page.audio]
    assert states.count("missing") == 1 and states.count("ok") == len(states) - 1
    missing = next(a for a in page.audio if a.get("data-state") == "missing")
    assert unquote(missing["src"]).endswith(victim.name)


# ----------------------------------------------------------------- write_report itself
CAVEAT = "random-weight generator: measures the pipeline, not reconstruction"
MARKUP = '<b>&"x'
TABLES = [Table("Decoding <i>1</i>", "Identification accuracy & co", ["set", MARKUP, "top1"],
                [["test", "0.712 [0.650, 0.770]", MARKUP], ["baseline/shuffled", "0.500", "0.050"]],
                notes=("a note <script>alert(1)</script>",)),
          Table("Genre", "", ["genre classified from", "accuracy"], [["true", "0.9"]])]


@pytest.fixture(scope="module")
def made(tuned_run, tmp_path_factory) -> tuple:
    """The run, and hand-made retrieved and generated audio of its test clips as `recon` ({kind: {subject:
    {clip_id: [files]}}}), for calling write_report directly; made once."""
    tmp = tmp_path_factory.mktemp("made")
    recon = {}
    for kind, stimulus in (("retrieval", True), ("generated", False)):
        folder = write_recon(tuned_run, tmp / kind, kind, stimulus=stimulus)
        recon[kind] = {s.name: {} for s in folder.iterdir() if s.is_dir()}
        for subject, clips in recon[kind].items():
            for wav in sorted((folder / subject).glob("*.wav")):
                clips.setdefault(wav.stem.rsplit("_", 1)[0], []).append(wav)
    return load_run(tuned_run), recon


def report_of(made, folder: Path, kinds: tuple[str, ...], caveats: dict[str, str], random: bool = False) -> Path:
    """write_report over the `kinds` of `made`'s audio (with their `caveats`), one sample shown per clip;
    returns index.html."""
    run, recon = made
    rcfg = compose("evaluate", ["report.retrieved=1", "report.generated=1",
                                f"report.listening_random={str(random).lower()}"]).report
    sets = [ReconSet(k, "", recon[k], caveats.get(k, "")) for k in kinds]
    return write_report(folder, run, TABLES, [], sets, {}, rcfg, folder.parent, 0, 0.9)


def trials_of(listen: Path) -> list[dict]:
    text = listen.read_text()
    start = text.index('id="listening-data">') + len('id="listening-data">')
    return json.loads(text[start:text.index("</script>", start)])["trials"]


def test_a_kind_with_a_caveat_says_it_and_stays_out_of_the_listening_test(made, tmp_path):
    index = report_of(made, tmp_path / "out" / "report", ("retrieval", "generated"), {"generated": CAVEAT})
    text = index.read_text()
    n_clips = text.count('<div class="clip">')
    assert n_clips == 20
    # Once at the top (before the first table), and in the generated column of every clip's table.
    assert f'<p class="caveat">generated: {CAVEAT}</p>' in text[:text.index("<table>")]
    assert text.count(f'<th>generated<div class="caveat">{CAVEAT}</div></th>') == n_clips
    assert text.count("<th>retrieval</th>") == n_clips
    assert "it leaves out generated" in text and '<a href="listen.html">' in text
    listen = index.parent / "listen.html"
    assert {t["method"] for t in trials_of(listen)} == {"retrieval"}
    assert CAVEAT not in listen.read_text()

    # report.listening_random=true: the kind is heard too, and the start screen says why it is there.
    index = report_of(made, tmp_path / "random" / "report", ("retrieval", "generated"), {"generated": CAVEAT}, True)
    listen = index.parent / "listen.html"
    assert {t["method"] for t in trials_of(listen)} == {"retrieval", "generated"}
    intro = listen.read_text().split('<form id="intro">')[1].split("</form>")[0]
    assert f'<li class="caveat">generated: {CAVEAT}</li>' in intro
    assert "leaves out" not in index.read_text()

    # Every kind left out: no listening test, and the page says why, in one line.
    index = report_of(made, tmp_path / "none" / "report", ("generated",), {"generated": CAVEAT})
    assert not (index.parent / "listen.html").exists()
    (line,) = [line for line in index.read_text().splitlines() if "listening test" in line.lower()]
    assert line.startswith("<p>No listening test: every reconstruction kind here has a caveat (generated)")
    assert "listen.html" not in index.read_text()


def test_the_report_escapes_its_tables(made, tmp_path):
    text = report_of(made, tmp_path / "report", ("retrieval",), {}).read_text()
    assert "<b>" not in text and "<i>1" not in text and "alert(1)</script>" not in text
    assert "&lt;b&gt;&amp;&#34;x" in text and "Decoding &lt;i&gt;1&lt;/i&gt;" in text
    assert 'class="caveat"' in text and text.count("<script>") == 1  # the page's own, only


@pytest.fixture(scope="module")
def driver():
    """Headless chromium under selenium; nothing is fetched (Debian's browser and driver, by path)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1200,1000"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield browser
    browser.quit()


@needs_browser
def test_the_reports_tables_in_chromium(made, tmp_path, driver):
    index = report_of(made, tmp_path / "report", ("retrieval", "generated"), {"generated": CAVEAT})
    driver.get(index.as_uri())
    assert [h.text for h in driver.find_elements(By.TAG_NAME, "h2")] == ["Decoding <i>1</i>", "Genre"]
    tables = driver.find_elements(By.TAG_NAME, "table")
    assert len(tables) == 2 + 20  # the tables passed in, then one per test clip
    for table, want in zip(tables, TABLES):
        rows = [[cell.text for cell in tr.find_elements(By.CSS_SELECTOR, "th, td")]
                for tr in table.find_elements(By.TAG_NAME, "tr")]
        assert rows == [want.header, *want.rows]  # in order, the markup as literal text
        assert table.find_elements(By.TAG_NAME, "b") == []
    captions = [p.text for p in driver.find_elements(By.XPATH, "//h2/following-sibling::p[1]")]
    assert captions[0] == "Identification accuracy & co"
    notes = [p.text for p in driver.find_elements(By.CSS_SELECTOR, "p.caveat")]
    assert notes == [f"generated: {CAVEAT}", "a note <script>alert(1)</script>"]
    assert driver.execute_script("return document.querySelectorAll('script').length") == 1
    # The caveat in the generated column of the first clip's table, seen by a reader.
    header = tables[2].find_elements(By.TAG_NAME, "th")
    assert [th.text.split("\n")[0] for th in header] == ["subject", "decoded genre", "retrieval", "generated"]
    assert header[3].find_element(By.CLASS_NAME, "caveat").text == CAVEAT
    assert header[3].find_element(By.CLASS_NAME, "caveat").is_displayed()


# ----------------------------------------------------------------- the templates, shipped
NAMES = {"page.html", "report.html", "listen.html", "report.css", "listen.css", "report.js", "listen.js"}


def test_the_templates_ship_in_the_package_and_render_from_it(tmp_path):
    shipped = {p.name for p in TEMPLATES.iterdir() if p.name != "__init__.py" and p.is_file()}
    assert NAMES <= shipped
    # A wheel carries them: every file matches a package-data pattern of pyproject.toml.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["b2m"]
    for name in shipped:
        assert any(fnmatch.fnmatch(f"evaluation/templates/{name}", p) for p in patterns), name
    for name in shipped - {"page.html", "report.html", "listen.html"}:
        text = (TEMPLATES / name).read_text(encoding="utf-8")
        # Included verbatim into a <style> or <script> element: no template syntax, nothing that ends it.
        assert not any(s in text for s in ("{{", "{%", "{#", "</")), name

    # A fresh interpreter, away from the repository, finds them through the installed package.
    probe = ("import json, sys, b2m.evaluation.listening as l, jinja2\n"
             "from b2m.evaluation.templates import render\n"
             "page = l.write_listening_page(sys.argv[1], [{'subject': 's', 'method': 'm', 'clip_id': 'a',"
             " 'excerpt': 'a.wav', 'target': 't.wav', 'foil': 'f.wav', 'foil_clip_id': 'b'}], 3, 'T', 5)\n"
             "try:\n    render('report.html')\nexcept jinja2.UndefinedError as err:\n    print('strict:', err)\n"
             "print(json.dumps([l.__file__, page.read_text()]))\n")
    res = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    strict, data = res.stdout.split("\n", 1)
    assert strict.startswith("strict: ") and "is undefined" in strict  # a missing value is an error, not ""
    where, page = json.loads(data)
    assert Path(where).is_relative_to(REPO / "b2m")  # the editable install of this checkout
    assert page == (tmp_path / "listen.html").read_text()
    assert (TEMPLATES / "listen.js").read_text(encoding="utf-8").strip() in page
    assert "Each of the 1 trials" in page and '"seed": 3' in page
