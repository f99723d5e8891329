"""A built wheel carries the configs, so a non-editable install composes them; licence and citation agree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_holds_the_configs_and_composes_them(tmp_path):
    # Built from a copy: a build writes build/ and *.egg-info beside the sources.
    source = tmp_path / "source"
    shutil.copytree(REPO / "b2m", source / "b2m", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = tmp_path.glob("b2m-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {p.relative_to(REPO).as_posix() for p in (REPO / "b2m" / "conf").rglob("*.yaml")}
    assert packaged and packaged <= set(names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("import b2m, b2m.core.config as c; print(b2m.__file__); "
             "print(c.compose('train', ['target=acoustic_windows']).target.inner._target_)")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    where, target = res.stdout.split()
    assert where.startswith(str(site)) and target == "b2m.targets.acoustic.AcousticSpace"


def test_licence_and_citation_match_the_package():
    import pytest
    import yaml

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "MIT" and "MIT License" in (REPO / "LICENSE").read_text()
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert str(citation["version"]) == project["version"]


def test_dockerfile_passes_hadolint_and_leaves_local_state_out():
    import pytest

    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev extra installs it on x86_64 Linux)")
    res = subprocess.run([hadolint, "--no-color", str(REPO / "docker" / "Dockerfile")], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    # A copied .venv carries its install stamp (scripts/setup.sh would skip the install); data and outputs
    # are gigabytes the image does not need.
    assert {".venv", "data", "outputs", ".git"} <= ignored
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert "--index-url" in text and "torch==${TORCH_VERSION}" in text
