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
    return ["n_boot=20", "report.enabled=false", "logo=false", "genre=false", "tags.enabled=false"]


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


def test_an_empty_input_path_is_no_input(shared_run, tmp_path, capsys, monkeypatch):
    """`retrieval=` (empty) means no retrieval, as evaluate reads it: not the current folder, which
    out_dir would then lie inside."""
    monkeypatch.chdir(tmp_path)
    status, err = job("evaluate", capsys, f"run={shared_run}", f"out_dir={tmp_path / 'ev'}", "retrieval=",
                      *fast_evaluation())
    assert status == 0, err


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


# ----------------------------------------------------------------- silently wrong results, tracebacks
@pytest.mark.parametrize("tr", [True, float("inf"), float("nan"), 0, -1.5, "1.5"])
def test_a_repetition_time_that_is_not_a_finite_positive_number_is_refused(tmp_path, tr):
    from b2m.data.bids import Run, repetition_time

    sidecar = tmp_path / "sub-001_task-Test_run-01_bold.json"
    sidecar.write_text(json.dumps({"RepetitionTime": tr}))  # Infinity and NaN as Python's json writes them
    run = Run("sub-001", "Test", 1, tmp_path / "bold.nii", tmp_path / "events.tsv", sidecar)
    with pytest.raises(B2MError, match="RepetitionTime missing or not a finite positive number"):
        repetition_time(run)


def test_a_path_template_replaces_only_the_subject():
    from b2m.data.nifti import subject_path

    assert subject_path("/d/{0}/{sub}/{subject}_mask.nii.gz", "sub-002") == Path("/d/{0}/{sub}/sub-002_mask.nii.gz")


@pytest.mark.parametrize("header", ["rate", "nan"])
def test_audio_out_of_range_or_not_finite_costs_only_itself(tmp_path, header):
    import soundfile as sf

    from b2m.data.stimuli import read_mono
    from b2m.reconstruction.retrieval import build_index
    from helpers.spaces import BandEnergy

    audio = tmp_path / "db"
    audio.mkdir()
    sf.write(audio / "good.00000.wav", 0.1 * np.random.default_rng(0).standard_normal(1600), 800)
    bad = audio / "bad.00001.wav"
    if header == "rate":  # 40 kB that claim 1 Hz: 20,000 s of audio, refused from the header alone
        sf.write(bad, np.zeros(20000, np.float32), 1, subtype="PCM_16")
        match = "out of range"
    else:
        wave = np.zeros(1600, np.float32)
        wave[5] = np.nan
        sf.write(bad, wave, 800, subtype="FLOAT")
        match = "NaN or infinite samples"
    with pytest.raises(B2MError, match=match):
        read_mono(bad)
    summary = build_index(audio, tmp_path / "index", BandEnergy())
    assert summary["files"] == 1 and [e["path"] for e in summary["errors"]] == ["bad.00001.wav"]


def test_the_excluded_stimulus_never_fills_the_top_k():
    from b2m.reconstruction.retrieval import RetrievalIndex

    rng = np.random.default_rng(0)
    index = RetrievalIndex(rng.normal(size=(4, 3)), ["/db/a.00001.wav", "/db/x/a.00001.mp3", "/db/b.00002.wav",
                                                     "/db/c.00003.wav"], device="cpu", precision="fp32")
    _, _, paths = index.query(rng.normal(size=(1, 3)), 2, exclude=["a.00001"])
    assert all("a.00001" not in p for p in paths[0])
    with pytest.raises(B2MError, match="k=3 is more than the 2 database files left"):
        index.query(rng.normal(size=(1, 3)), 3, exclude=["a.00001"])


def test_a_constructor_failure_names_its_cause():
    from b2m.core.config import compose
    from b2m.decoders import build_decoder

    cfg = compose("train", ["decoder=transformer", "decoder.heads=3"]).decoder  # width 128 is not divisible by 3
    with pytest.raises(B2MError, match=r"config: decoder: building b2m.decoders.transformer.TransformerDecoder "
                                       r"failed: AssertionError: .*divisible"):
        build_decoder(cfg, n_voxels=[4], n_window=2, target_shape=(1, 3))


@pytest.mark.parametrize("override, key", [("data.training_runs=[1,1]", "data.training_runs"),
                                           ("data.test_runs=[2,3,2]", "data.test_runs"),
                                           ("data.delays_tr=[3,3]", "data.delays_tr"),
                                           ("data.subjects=[1,sub-001]", "data.subjects")])
def test_a_list_that_repeats_an_item_is_refused(bids, override, key):
    from b2m.core.config import compose
    from b2m.jobs.train import train

    with pytest.raises(B2MError, match=f"config: {key}"):
        train(compose("train", [f"data.root={bids}", override, "trainer.logger=none"]))


def test_another_runs_decoder_file_is_refused(shared_run):
    from b2m.core.config import compose
    from b2m.decoders import build_decoder, load_decoder, save_decoder

    assert load_decoder(shared_run).target_shape  # its own file loads
    other = build_decoder(compose("train", []).decoder, n_voxels=[40], n_window=3, target_shape=(1, 5))
    save_decoder(shared_run, other)
    with pytest.raises(B2MError, match="decoder.safetensors: a decoder of 1 subject.* target shape \\[1, 5\\].* "
                                       "another run's"):
        load_decoder(shared_run)


# ----------------------------------------------------------------- stale indexes, reconstruction provenance
def test_a_replaced_or_deleted_database_file_leaves_the_index(tmp_path):
    import soundfile as sf

    from b2m.reconstruction.retrieval import RetrievalIndex, build_index
    from helpers.spaces import BandEnergy

    audio, rng = tmp_path / "db", np.random.default_rng(0)
    audio.mkdir()
    for n in range(4):
        sf.write(audio / f"blues.0000{n}.wav", 0.1 * rng.standard_normal(1600), 800)
    space = BandEnergy()
    build_index(audio, tmp_path / "index", space, chunk_size=2)
    replaced, deleted = audio / "blues.00000.wav", audio / "blues.00003.wav"
    sf.write(replaced, 0.5 * np.sin(np.arange(3200) / 3.0), 800)  # same name, other music
    deleted.unlink()
    summary = build_index(audio, tmp_path / "index", space, chunk_size=2)
    assert summary["files"] == 3 and summary["new"] == 3  # both touched chunks redone, whole
    index = RetrievalIndex.load(tmp_path / "index", device="cpu", precision="fp32")
    assert sorted(Path(p).name for p in index.paths) == ["blues.00000.wav", "blues.00001.wav", "blues.00002.wav"]
    fresh = build_index(audio, tmp_path / "fresh", space)
    assert fresh["files"] == 3
    again = RetrievalIndex.load(tmp_path / "fresh", device="cpu", precision="fp32")
    by_name = dict(zip(index.paths, index.unit.numpy()))
    for path, row in zip(again.paths, again.unit.numpy()):
        np.testing.assert_allclose(by_name[path], row, atol=1e-6)  # the replaced file's new embedding
    assert build_index(audio, tmp_path / "index", space)["new"] == 0  # nothing changed: nothing redone


@pytest.fixture(scope="module")
def retrieved(tuned_run, tmp_path_factory) -> Path:
    """A retrieval folder (k=2, copies) of the tuned run, built once; tests tamper with copies of it."""
    from b2m.core.config import compose
    from b2m.jobs.retrieve import retrieve

    out = tmp_path_factory.mktemp("retrieved") / "retr"
    database = Path(OmegaConf.load(tuned_run / "config.yaml").data.root) / "stimuli"
    retrieve(compose("retrieve", [f"run={tuned_run}", f"database={database}", f"out_dir={out}", "k=2",
                                  "link=copy", "select=brain"]))
    return out


def tampered(retrieved: Path, tmp_path: Path) -> tuple[Path, dict, Path]:
    folder = Path(shutil.copytree(retrieved, tmp_path / "retr", symlinks=True))
    return folder, json.loads((folder / "retrieval_sub-001.json").read_text()), folder / "retrieval_sub-001.json"


def check_retrieval(folder: Path, run: Path) -> None:
    from b2m.core.runs import load_run
    from b2m.reconstruction.retrieval import read_retrieval
    from b2m.reconstruction.selection import read_selection

    loaded = load_run(run)
    manifest = read_retrieval(folder, sorted(loaded.subjects))
    manifest.check(loaded)
    read_selection(manifest)


def test_an_untouched_retrieval_folder_passes(retrieved, tuned_run):
    check_retrieval(retrieved, tuned_run)


@pytest.mark.parametrize("tamper, message", [
    ("drop a clip", r"covers (\d+) of the \d+ test clips of sub-001 \(no "),
    ("other predictions", "was made from other predictions"),
    ("swap a file", "changed since it was written"),
    ("outside", "is not a path inside"),
    ("ranks", "ranks are not 1 to 2"),
    ("no subject", "no retrieval_<subject>.json"),
])
def test_a_retrieval_folder_that_is_not_this_runs_is_refused(retrieved, tuned_run, tmp_path, tamper, message):
    folder, manifest, path = tampered(retrieved, tmp_path)
    clip_id = sorted(manifest["clips"])[0]
    clip = manifest["clips"][clip_id]
    if tamper == "drop a clip":
        del manifest["clips"][clip_id]
    elif tamper == "other predictions":
        clip["input_hash"] = "0" * 16
    elif tamper == "swap a file":
        (folder / clip["ranks"][0]["file"]).write_bytes((folder / clip["ranks"][1]["file"]).read_bytes())
    elif tamper == "outside":
        clip["ranks"][0]["file"] = "../../stimuli/genres/blues/blues.00000.wav"
    elif tamper == "ranks":
        clip["ranks"][1]["rank"] = 3
    else:
        path.unlink()
    if path.exists():
        path.write_text(json.dumps(manifest))
    with pytest.raises(B2MError, match=message):
        check_retrieval(folder, tuned_run)


@pytest.mark.parametrize("tamper, message", [
    (-1, "selected = -1 is not a candidate's index"),
    (1.5, "selected = 1.5 is not a candidate's index"),
    (True, "selected = True is not a candidate's index"),
    (2, "selected = 2 is not a candidate's index"),
    ("stimulus", "are not its files in retrieval_sub-001.json"),
    ("newer manifest", "made from another retrieval_sub-001.json than the one beside it"),
])
def test_a_selection_file_that_does_not_describe_its_manifest_is_refused(retrieved, tuned_run, tmp_path, tamper,
                                                                          message):
    folder, manifest, path = tampered(retrieved, tmp_path)
    selection = json.loads((folder / "selection_sub-001.json").read_text())
    entry = selection["clips"][sorted(selection["clips"])[0]]
    if tamper == "stimulus":  # the heard stimulus itself, copied in as a candidate, would score 1.000
        stimuli = Path(OmegaConf.load(tuned_run / "config.yaml").data.root) / "stimuli"
        shutil.copyfile(next(stimuli.rglob("*.wav")), folder / "sub-001" / "stimulus.wav")
        entry["candidates"][0] = "sub-001/stimulus.wav"
    elif tamper == "newer manifest":  # what a kill between the manifest's and the selection's write leaves
        manifest["k"] = 2.0
        path.write_text(json.dumps(manifest))
    else:
        entry["selected"] = tamper
    (folder / "selection_sub-001.json").write_text(json.dumps(selection))
    with pytest.raises(B2MError, match=message):
        check_retrieval(folder, tuned_run)


def test_retrieve_removes_the_selection_before_it_rewrites_the_manifests(retrieved, tuned_run, tmp_path, capsys):
    folder, _, _ = tampered(retrieved, tmp_path)
    database = Path(OmegaConf.load(tuned_run / "config.yaml").data.root) / "stimuli"
    status, err = job("retrieve", capsys, f"run={tuned_run}", f"database={database}", f"out_dir={folder}", "k=3",
                      "link=copy")
    assert status == 0, err
    assert not (folder / "selection_sub-001.json").exists()
    check_retrieval(folder, tuned_run)


def test_a_database_file_deleted_after_indexing_is_one_line(tmp_path):
    import soundfile as sf

    from b2m.core.metrics import Standardiser
    from b2m.core.runs import read_predictions, write_predictions
    from b2m.reconstruction.retrieval import RetrievalIndex, build_index, retrieve_predictions
    from helpers.spaces import BandEnergy

    audio = tmp_path / "db"
    audio.mkdir()
    sf.write(audio / "blues.00000.wav", 0.1 * np.random.default_rng(0).standard_normal(1600), 800)
    space = BandEnergy()
    build_index(audio, tmp_path / "index", space)
    index = RetrievalIndex.load(tmp_path / "index", device="cpu")
    (audio / "blues.00000.wav").unlink()
    pred = np.ones((1, *space.shape), np.float32)
    predictions = read_predictions(write_predictions(tmp_path / "run", "sub-001", pred, pred, ["jazz.00001_0.00"],
                                                     Standardiser.fit(pred)))
    with pytest.raises(B2MError, match="blues.00000.wav: retrieved, but no longer in the database"):
        retrieve_predictions(predictions, index, 1, tmp_path / "out", link="copy")


@pytest.mark.parametrize("tamper, message", [
    ("twice", "listed twice"),
    ("gap", r"are k = \[0, 2\], not 0 to 1"),
    ("outside", "is not a path inside"),
    ("fractional", "sample index k = 1.5"),
])
def test_a_damaged_generation_manifest_is_refused(tmp_path, tamper, message):
    from b2m.reconstruction.musicgen.batch import read_generated

    folder = tmp_path / "gen"
    folder.mkdir()
    records = [{"subject": "sub-001", "clip_id": "c", "k": k, "path": f"sub-001/c_{k}.wav", "sha256": "0",
                "input_hash": "1", "random_weights": True, "predictions": str(tmp_path / "sub-001.npz")}
               for k in range(2)]
    if tamper == "twice":
        records[1]["k"] = 0
    elif tamper == "gap":
        records[1]["k"] = 2
    elif tamper == "outside":
        records[1]["path"] = "../stimuli/c.wav"
    else:
        records[1]["k"] = 1.5
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(B2MError, match=message):
        read_generated(folder)
