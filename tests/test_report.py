"""The listening report, loaded from file:// in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import html.parser
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf

from b2m.core.config import compose
from b2m.jobs.evaluate import evaluate
from test_evaluation import write_recon

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
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
