"""The package layers: the import contract in pyproject.toml holds (import-linter)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


@pytest.mark.parametrize("module, imported", [
    ("decoders/base.py", "b2m.evaluation.decoding"),  # decoders <-> evaluation, as before the layers
    ("data/datamodule.py", "b2m.targets.dataset"),  # data <-> targets, as before the layers
])
def test_the_contract_forbids_the_old_cycles(tmp_path, module, imported):
    """A copy of the package with one of the old upward imports put back breaks the contract."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "b2m", copy / "b2m", ignore=shutil.ignore_patterns("__pycache__", "conf"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    path = copy / "b2m" / module
    path.write_text(f"import {imported}  # noqa: F401\n" + path.read_text())
    lint = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, cwd=copy, timeout=120,
                         env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    source = "b2m." + module[: -len(".py")].replace("/", ".")
    assert res.returncode == 1 and f"{source} -> {imported}" in res.stdout, res.stdout[-2000:]
