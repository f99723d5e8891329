"""A run folder, an index or an out_dir from someone else: nothing in it runs code, and no job deletes
what it did not write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from b2m.core import outputs
from b2m.core.config import check_targets, choices, group_config, packaged_targets
from b2m.core.errors import B2MError
from b2m.jobs.cli import run as cli_run


def job(name: str, capsys, *overrides: str) -> tuple[int, str]:
    """Run a job in this process as its command line would; returns (exit status, stderr)."""
    capsys.readouterr()
    status = cli_run(name, [*overrides, "wandb=false"] if name == "evaluate" else list(overrides))
    return status, capsys.readouterr().err


def fast_evaluation() -> list[str]:
    return ["n_boot=20", "report.enabled=false", "logo=false", "genre=false"]


@pytest.fixture
def shared_run(tuned_run: Path, tmp_path: Path) -> Path:
    """A copy of a training run, as a colleague would share it."""
    return Path(shutil.copytree(tuned_run, tmp_path / "shared" / "run", symlinks=True))


def plant(run: Path, section: str, sentinel: Path) -> None:
    """Edit the run's config so that building `section` would create `sentinel` (Hydra calls `_target_`)."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg[section]["normalise"] = {"_target_": "builtins.open", "_args_": [str(sentinel), "w"]}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_every_packaged_config_builds_only_packaged_classes():
    assert {"b2m.decoders.linear.RidgeDecoder", "b2m.targets.acoustic.AcousticSpace",
            "b2m.targets.windowed.WindowedSpace"} <= packaged_targets()
    for group in ("target", "decoder"):
        for choice in choices(group):
            check_targets(group_config(group, choice), group)


@pytest.mark.parametrize("target", ["numpy.load", "builtins.open", "shutil.copyfile", "os.system", "${oc.env:HOME}"])
def test_a_foreign_target_at_any_depth_is_refused(target):
    cfg = OmegaConf.create({"_target_": "b2m.targets.acoustic.AcousticSpace",
                            "inner": {"more": [{"_target_": target}]}})
    with pytest.raises(B2MError, match=r"config: target\.inner\.more\[0\]\._target_: .* is not a class of b2m"):
        check_targets(cfg, "target")


@pytest.mark.parametrize("section", ["target", "decoder"])
def test_a_planted_target_in_a_shared_run_never_runs(shared_run, tmp_path, capsys, section):
    from b2m.decoders import load_decoder

    sentinel = tmp_path / "ran"
    plant(shared_run, section, sentinel)
    if section == "target":
        (tmp_path / "db").mkdir()
        status, err = job("retrieve", capsys, f"run={shared_run}", f"out_dir={tmp_path / 'r'}",
                          f"database={tmp_path / 'db'}")
        assert status == 2 and "builtins.open" in err and "not a class of b2m" in err, err
        status, err = job("evaluate", capsys, f"run={shared_run}", f"out_dir={tmp_path / 'e'}", "spaces=[acoustic]",
                          f"retrieval={shared_run}", *fast_evaluation())
        assert status == 2 and len(err.strip().splitlines()) == 1
    else:
        with pytest.raises(B2MError, match=r"decoder\.normalise\._target_: 'builtins.open' is not a class"):
            load_decoder(shared_run)
    assert not sentinel.exists()
    assert not (tmp_path / "r").exists() and not (tmp_path / "e").exists()


def test_an_edited_interpolation_in_a_run_config_is_refused(shared_run):
    from b2m.core.runs import load_run

    text = (shared_run / "config.yaml").read_text().replace("seed: 0", "seed: ${oc.env:HOME}")
    (shared_run / "config.yaml").write_text(text)
    with pytest.raises(B2MError, match=r"config.yaml: seed holds an interpolation"):
        load_run(shared_run)


def test_evaluate_never_deletes_what_it_did_not_write(shared_run, tmp_path, capsys):
    before = sorted(p.relative_to(shared_run) for p in shared_run.rglob("*"))
    sibling = shared_run.parent / "other_run"
    sibling.mkdir()
    (sibling / "notes.txt").write_text("keep me")
    # The run itself, the folder of runs, and a folder inside the run's own entries.
    for out in (shared_run, shared_run.parent, shared_run / "predictions" / "x"):
        status, err = job("evaluate", capsys, f"run={shared_run}", f"out_dir={out}", *fast_evaluation())
        assert status == 2 and "out_dir" in err and len(err.strip().splitlines()) == 1, err
    # A folder of someone else's files.
    status, err = job("evaluate", capsys, f"run={shared_run}", f"out_dir={sibling}", *fast_evaluation())
    assert status == 2 and "notes.txt" in err and "not a previous b2m evaluate output" in err, err
    assert sorted(p.relative_to(shared_run) for p in shared_run.rglob("*")) == before
    assert (sibling / "notes.txt").read_text() == "keep me"

    # Its own output, the default sub-folder of the run, is replaced on a rerun.
    out = shared_run / "evaluation"
    for _ in range(2):
        status, err = job("evaluate", capsys, f"run={shared_run}", *fast_evaluation())
        assert status == 0, err
    assert json.loads((out / outputs.MARKER).read_text()) == {"job": "evaluate"}
    # ... unless something else was put there since.
    (out / "thesis.tex").write_text("keep me too")
    status, err = job("evaluate", capsys, f"run={shared_run}", *fast_evaluation())
    assert status == 2 and "thesis.tex" in err
    assert (out / "thesis.tex").exists() and (out / "metrics.json").exists()
    # And no other job takes an evaluation folder.
    (out / "thesis.tex").unlink()
    (tmp_path / "db").mkdir()
    status, err = job("retrieve", capsys, f"run={shared_run}", f"out_dir={out}", f"database={tmp_path / 'db'}")
    assert status == 2 and "a b2m evaluate output" in err


def test_a_partial_folder_that_is_a_link_is_unlinked_not_followed(shared_run, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me")
    (shared_run / ".evaluation.partial").symlink_to(precious)
    status, err = job("evaluate", capsys, f"run={shared_run}", *fast_evaluation())
    assert status == 0, err
    assert (precious / "data.txt").read_text() == "keep me"
    assert not (shared_run / ".evaluation.partial").exists()
    # A real folder under that name that b2m did not make is refused.
    (shared_run / ".evaluation.partial").mkdir()
    (shared_run / ".evaluation.partial" / "mine.txt").write_text("keep")
    status, err = job("evaluate", capsys, f"run={shared_run}", *fast_evaluation())
    assert status == 2 and "mine.txt" in err
    assert (shared_run / ".evaluation.partial" / "mine.txt").exists()


def test_a_failed_job_leaves_an_empty_out_dir_empty(shared_run, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    status, err = job("evaluate", capsys, f"run={shared_run}", f"out_dir={out}", "spaces=[nope]", *fast_evaluation())
    assert status == 2 and "unknown space" in err
    assert list(out.iterdir()) == []


def test_an_unresolved_interpolation_in_an_override_is_one_line(shared_run, tmp_path, capsys):
    status, err = job("evaluate", capsys, f"run={shared_run}", "out_dir=${nowhere}", *fast_evaluation())
    assert status == 2 and err.startswith("error: config:") and len(err.strip().splitlines()) == 1, err


def test_an_output_from_before_the_marker_is_still_the_jobs_own(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "metrics.json").write_text("{}")
    (old / "genre.png").write_bytes(b"")
    outputs.check_out_dir(old, "evaluate", {})
    with pytest.raises(B2MError, match="not a previous b2m train output"):
        outputs.check_out_dir(old, "train", {})


def test_retrieve_keeps_out_of_the_database(shared_run, tmp_path, capsys):
    database = tmp_path / "music" / "db"
    database.mkdir(parents=True)
    for out in (database, database / "results", database.parent):
        status, err = job("retrieve", capsys, f"run={shared_run}", f"out_dir={out}", f"database={database}")
        assert status == 2 and "database" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("entry", ["../../secret.wav", "/etc/passwd", "a/../../secret.wav", ".hidden/x.wav", ""])
def test_an_index_entry_that_leaves_the_database_is_refused(tmp_path, entry):
    from b2m.reconstruction.retrieval import RetrievalIndex

    index = tmp_path / "index"
    (index / "parts").mkdir(parents=True)
    (index / "index.json").write_text(json.dumps({"audio_root": str(tmp_path / "db"), "shape": [1, 2],
                                                  "cache_key": "k"}))
    np.save(index / "parts" / "000000.npy", np.ones((2, 2), np.float32))
    (index / "parts" / "000000.jsonl").write_text(json.dumps({"path": "fine/a.wav"}) + "\n"
                                                  + json.dumps({"path": entry}) + "\n")
    with pytest.raises(B2MError, match="000000.jsonl: index entry .* is not a path inside the audio folder"):
        RetrievalIndex.load(index)


@pytest.mark.parametrize("damage", ["index.json", "parts/000000.jsonl", "parts/000000.npy"])
def test_a_damaged_index_is_one_error_naming_the_file(tmp_path, damage):
    from b2m.reconstruction.retrieval import RetrievalIndex

    index = tmp_path / "index"
    (index / "parts").mkdir(parents=True)
    (index / "index.json").write_text(json.dumps({"audio_root": str(tmp_path), "shape": [1, 2], "cache_key": "k"}))
    np.save(index / "parts" / "000000.npy", np.ones((1, 2), np.float32))
    (index / "parts" / "000000.jsonl").write_text(json.dumps({"path": "a.wav"}) + "\n")
    (index / damage).write_bytes(b"\x93NUMPY{" if damage.endswith(".npy") else b"{\"trunc")
    with pytest.raises(B2MError, match=damage.split("/")[-1]):
        RetrievalIndex.load(index)
