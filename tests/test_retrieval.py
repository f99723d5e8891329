import hashlib
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from scipy.signal import resample_poly

from b2m.core.errors import B2MError
from b2m.reconstruction import retrieval
from b2m.core.io import locked
from b2m.core.timing import fastest
from b2m.reconstruction.retrieval import (RetrievalIndex, Shard, build_index, first_pass_error,
                                          retrieve_predictions)
from b2m.core.metrics import Standardiser
from b2m.core.runs import read_predictions, write_predictions
from b2m.targets.windowed import WindowedSpace
from helpers.clock import FakeClock
from helpers.spaces import BandEnergy


def _write_db(root, n=6, seconds=2.0, rate=1000, seed=0):
    """GTZAN-like names in nested folders: `<genre>/<genre>.000NN.wav`, noise of distinct spectra."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        genre = ("blues", "jazz")[i % 2]
        path = root / genre / f"{genre}.{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        wave = np.convolve(rng.standard_normal(int(seconds * rate)), rng.standard_normal(8), mode="same")
        sf.write(path, (0.1 * wave / np.abs(wave).max()).astype(np.float32), rate)
        paths.append(path)
    return paths


def _reference_embedding(space, path):
    """Independent of the loader: read, mix to mono, fade 2 s (or half), RMS 0.1, resample with scipy."""
    wave, rate = sf.read(path, dtype="float64", always_2d=True)
    wave = wave.mean(1)
    n_fade = min(2 * rate, len(wave) // 2)
    ramp = np.arange(n_fade) / n_fade
    wave[:n_fade] *= ramp
    wave[len(wave) - n_fade:] *= ramp[::-1]
    wave *= 0.1 / np.sqrt(np.mean(wave ** 2))
    g = np.gcd(rate, space.sample_rate)
    wave = resample_poly(wave, space.sample_rate // g, rate // g)
    return space.embed_batch([wave.astype(np.float32)])[0].reshape(-1)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_index_embeds_every_format_and_skips_corrupt_files(tmp_path, capsys):
    audio = tmp_path / "audio"
    paths = _write_db(audio, n=4)
    rng = np.random.default_rng(1)
    stereo = audio / "rock" / "deep" / "rock.00009.flac"
    stereo.parent.mkdir(parents=True)
    sf.write(stereo, 0.1 * rng.standard_normal((1600, 2)), 800)
    mp3 = audio / "pop.00002.MP3"
    sf.write(mp3, (0.1 * rng.standard_normal(16000)).astype(np.float32), 8000, format="MP3")
    (audio / "blues" / "blues.00099.wav").write_bytes(b"RIFF not really a wav")
    (audio / "notes.txt").write_text("not audio")

    space = BandEnergy()
    summary = build_index(audio, tmp_path / "index", space, chunk_size=3)
    assert summary["files"] == 6 and summary["new"] == 6
    assert [e["path"] for e in summary["errors"]] == ["blues/blues.00099.wav"]
    assert "blues.00099.wav" in capsys.readouterr().err
    errors = [json.loads(line) for line in (tmp_path / "index" / "errors.jsonl").read_text().splitlines()]
    assert [e["path"] for e in errors] == ["blues/blues.00099.wav"]

    index = RetrievalIndex.load(tmp_path / "index")
    expected = sorted(paths + [stereo, mp3])
    assert index.paths == [str(p.resolve()) for p in expected]
    ref = np.stack([_reference_embedding(space, p) for p in expected])
    np.testing.assert_allclose(index.unit.numpy(), _unit(ref), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "auto"])
def test_query_matches_brute_force_numpy(precision):
    rng = np.random.default_rng(0)
    db = rng.standard_normal((500, 3, 8)).astype(np.float32)
    paths = [f"/db/{g}/{g}.{i:05d}.wav" for i, g in enumerate(np.resize(["blues", "jazz"], 500))]
    index = RetrievalIndex(db.reshape(500, -1), paths, device="cpu", precision=precision)
    queries = rng.standard_normal((7, 3, 8)).astype(np.float32)

    sims = _unit(queries.reshape(7, -1)) @ _unit(db.reshape(500, -1)).T
    order = np.argsort(-sims, axis=1)[:, :5]
    idx, scores, got_paths = index.query(queries, 5)
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, order, 1), rtol=1e-5, atol=1e-6)
    assert got_paths[2] == [paths[j] for j in order[2]]
    np.testing.assert_array_equal(index.query(queries.reshape(7, -1), 5)[0], order)  # [Q, F] too

    # Excluding each query's best track (by name or by path) yields the next ones.
    exclude = [paths[order[0, 0]].split("/")[-1].removesuffix(".wav")] + [paths[order[q, 0]] for q in range(1, 7)]
    idx, _, _ = index.query(queries, 4, exclude=exclude)
    np.testing.assert_array_equal(idx, order[:, 1:5])


def test_the_first_pass_error_bound_holds():
    rng = np.random.default_rng(3)
    for spread in (1.0, 0.01):  # spread-out vectors, and near-duplicates of one direction
        base = rng.standard_normal(768)
        a = _unit(base + spread * rng.standard_normal((64, 768))).astype(np.float32)
        b = _unit(base + spread * rng.standard_normal((4000, 768))).astype(np.float32)
        approx = (torch.from_numpy(a).bfloat16() @ torch.from_numpy(b).bfloat16().T).double().numpy()
        assert np.abs(approx - a.astype(np.float64) @ b.astype(np.float64).T).max() <= first_pass_error(768)


def test_two_pass_search_is_exact_and_falls_back_where_it_cannot_prove_it(monkeypatch):
    """Clustered data, so that many candidates crowd the k-th score: the bf16 first pass with fp32
    re-scoring returns exactly what the fp32 search does; queries whose candidates cannot be proven
    complete are retried with more, and those near a cluster of duplicates wider than any candidate
    set are searched exactly."""
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((20, 64))
    db = np.concatenate([c + 0.3 * rng.standard_normal((1500, 64)) for c in centres]).astype(np.float32)
    dupes = centres[0] + 0.1 * rng.standard_normal((1500, 64))  # 1500 within 2 eps of each other, not tied
    db = np.concatenate([db, dupes.astype(np.float32)])
    paths = [f"/db/t.{i:05d}.wav" for i in range(len(db))]
    queries = np.concatenate([c + 0.3 * rng.standard_normal((5, 64)) for c in centres[1:]]
                             + [centres[:1] + 0.001 * rng.standard_normal((3, 64))]).astype(np.float32)
    exclude = [paths[i] for i in rng.integers(0, len(db), size=len(queries))]
    exact = RetrievalIndex(db, paths, device="cpu", precision="fp32")
    fast = RetrievalIndex(db, paths, device="cpu", precision="bf16")
    assert fast.precision == "bf16" and fast.low is not None and exact.low is None
    redone = []
    real = fast._exact
    monkeypatch.setattr(fast, "_exact", lambda q, ex, k: redone.append(len(q)) or real(q, ex, k))
    for k in (1, 10):
        want_i, want_v, _ = exact.query(queries, k, exclude=exclude)
        got_i, got_v, _ = fast.query(queries, k, exclude=exclude)
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_allclose(got_v, want_v, atol=1e-6)
    # The near-duplicate queries could not be proven from 128 candidates, nor from 1024; most others could.
    assert redone[0] == 3 and 3 <= redone[1] <= len(queries) // 8, redone


def test_precision_is_checked_and_auto_measures():
    with pytest.raises(B2MError, match="precision 'int4' is not one of auto, fp32, bf16"):
        RetrievalIndex(np.eye(4, dtype=np.float32), list("abcd"), device="cpu", precision="int4")
    big = np.random.default_rng(5).standard_normal((20000, 32)).astype(np.float32)
    index = RetrievalIndex(big, [f"{i}.wav" for i in range(20000)], device="cpu")
    assert index.precision in ("fp32", "bf16")
    if ("cpu", 32, torch.get_num_threads()) in retrieval._PROBED:  # measured undisturbed: kept for the next index
        assert index.precision == retrieval.first_pass_precision(index.unit)
    small = RetrievalIndex(big[:100], [f"{i}.wav" for i in range(100)], device="cpu")
    assert small.precision == "fp32"  # too small for a first pass to pay


@pytest.mark.parametrize("bf16_times, disturbed, expected", [
    ([0.5] * 7, False, "bf16"),  # half the time: worth a first pass
    ([0.7] * 7, False, "fp32"),  # faster, but not enough to pay for the re-scoring
    ([0.5, 0.5, 4.0, 0.5, 4.0, 0.5, 0.5], True, "fp32"),  # another job on the cores in two rounds
])
def test_first_pass_precision_is_chosen_beyond_noise_and_a_disturbed_measurement_is_not_kept(
        monkeypatch, bf16_times, disturbed, expected):
    monkeypatch.setattr(retrieval, "_PROBED", {})
    monkeypatch.setattr(retrieval, "first_pass_error", lambda dim, magnitude=1.0: 1.0)  # any kernel is exact enough
    clock = FakeClock({"fp32": [1.0] * 7, "bf16": bf16_times})
    steps = clock.candidates()

    def timed(candidates, **kwargs):  # the real products run; the fake clock says how long they took
        return fastest({name: lambda name=name: (run(), steps[name]()) for name, run in candidates.items()},
                       min_sample_s=0, clock=clock, **kwargs)

    monkeypatch.setattr(retrieval, "fastest", timed)
    unit = F.normalize(torch.randn(256, 16), dim=1)
    assert retrieval.first_pass_precision(unit) == expected
    assert retrieval._PROBED == ({} if disturbed else {("cpu", 16, torch.get_num_threads()): expected})


def test_query_errors():
    index = RetrievalIndex(np.eye(4, dtype=np.float32), ["a.wav", "b.wav", "c.wav", "d.wav"], device="cpu")
    with pytest.raises(B2MError, match="query vectors have 3 values, the index 4"):
        index.query(np.ones((1, 3)), 1)
    with pytest.raises(B2MError, match="k=5"):
        index.query(np.ones((1, 4)), 5)


def test_interrupted_build_resumes_without_recomputing(tmp_path):
    audio = tmp_path / "audio"
    _write_db(audio, n=7)
    space = BandEnergy()
    real = space.embed_batch
    calls, kill_at = [], [2]

    def counted(items):
        if len(calls) == kill_at[0]:
            raise RuntimeError("killed")
        calls.append(len(items))
        return real(items)

    space.embed_batch = counted
    with pytest.raises(RuntimeError, match="killed"):
        build_index(audio, tmp_path / "index", space, chunk_size=2)
    assert len(RetrievalIndex.load(tmp_path / "index", device="cpu")) == 4  # two chunks were finished

    calls.clear(), kill_at.clear(), kill_at.append(-1)
    # What a write killed between its temporary file and the rename leaves: ignored.
    (tmp_path / "index" / "parts" / ".000002.x1y2.tmp.jsonl").write_text('{"path": "half')
    summary = build_index(audio, tmp_path / "index", space, chunk_size=2)
    assert calls == [2, 1] and summary == {"files": 7, "new": 3, "errors": []}
    resumed = RetrievalIndex.load(tmp_path / "index", device="cpu")
    build_index(audio, tmp_path / "fresh", BandEnergy(), chunk_size=5)
    fresh = RetrievalIndex.load(tmp_path / "fresh", device="cpu")
    assert resumed.paths == fresh.paths
    np.testing.assert_array_equal(resumed.unit.numpy(), fresh.unit.numpy())

    # A grown folder: only the new file is embedded.
    calls.clear()
    _write_db(audio / "more", n=1, seed=5)
    assert build_index(audio, tmp_path / "index", space, chunk_size=2)["new"] == 1
    assert calls == [1]
    grown = RetrievalIndex.load(tmp_path / "index", device="cpu").paths
    assert len(grown) == 8

    # Deleting a chunk's list redoes that chunk only, and leaves the other chunks whole.
    (tmp_path / "index" / "parts" / "000001.jsonl").unlink()
    calls.clear()
    assert build_index(audio, tmp_path / "index", space, chunk_size=2)["new"] == 2
    assert calls == [2]
    assert sorted(RetrievalIndex.load(tmp_path / "index", device="cpu").paths) == sorted(grown)


def test_worker_processes_and_shards_build_the_single_build_index(tmp_path):
    audio = tmp_path / "audio"
    _write_db(audio, n=11)
    (audio / "blues" / "blues.00099.wav").write_bytes(b"RIFF not really a wav")
    space = BandEnergy()
    single = build_index(audio, tmp_path / "single", space, chunk_size=3)
    reference = RetrievalIndex.load(tmp_path / "single", device="cpu")
    assert len(reference) == 11 and [e["path"] for e in single["errors"]] == ["blues/blues.00099.wav"]

    # Two worker processes decode and embed: the same chunks (written as they finish) and the same rows.
    parallel = build_index(audio, tmp_path / "parallel", space, chunk_size=3, workers=2)
    assert parallel == single
    chunks = lambda index: sorted(p.read_text() for p in (index / "parts").glob("*.jsonl"))  # noqa: E731
    assert chunks(tmp_path / "parallel") == chunks(tmp_path / "single") and len(chunks(tmp_path / "single")) == 4
    loaded = RetrievalIndex.load(tmp_path / "parallel", device="cpu")
    assert loaded.paths == reference.paths
    np.testing.assert_array_equal(loaded.unit.numpy(), reference.unit.numpy())

    # Three shards build one folder: each embeds its own files (a split by path hash, not by position).
    shards = [build_index(audio, tmp_path / "sharded", space, chunk_size=2, shard=Shard(i, 3)) for i in range(3)]
    assert sum(s["new"] for s in shards) == 11 and all(s["new"] > 0 for s in shards)
    names = sorted(p.name for p in (tmp_path / "sharded" / "parts").glob("*.jsonl"))
    assert names[0].startswith("0of3-000000") and names[-1].startswith("2of3-")
    assert shards[-1]["files"] == 11 and shards[-1]["errors"] == single["errors"]
    # A shard built again embeds nothing; a build without shards has nothing left to do.
    assert build_index(audio, tmp_path / "sharded", space, shard=Shard(1, 3))["new"] == 0
    assert build_index(audio, tmp_path / "sharded", space) == {**single, "new": 0}
    merged = RetrievalIndex.load(tmp_path / "sharded", device="cpu")
    assert merged.paths == reference.paths
    np.testing.assert_array_equal(merged.unit.numpy(), reference.unit.numpy())

    # A shard that does not exist, and a second build of a shard in progress, are refused.
    with pytest.raises(B2MError, match="shard 3 of 3 does not exist; shards are 0 to 2"):
        Shard(3, 3)
    with locked(tmp_path / "sharded" / "parts" / "1of3-"):
        with pytest.raises(B2MError, match="another b2m job"):
            build_index(audio, tmp_path / "sharded", space, shard=Shard(1, 3))


def test_a_file_listed_by_two_chunks_is_one_row(tmp_path):
    audio = tmp_path / "audio"
    _write_db(audio, n=3)
    build_index(audio, tmp_path / "index", BandEnergy(), chunk_size=2)
    parts = tmp_path / "index" / "parts"
    # What an older shard split leaves beside a newer one: the same file embedded in two chunks.
    for suffix in (".npy", ".jsonl"):
        (parts / f"1of2-000000{suffix}").write_bytes((parts / f"000000{suffix}").read_bytes())
    index = RetrievalIndex.load(tmp_path / "index", device="cpu")
    assert index.paths == sorted(index.paths) and len(index) == 3


def test_index_refuses_another_space_or_folder(tmp_path):
    audio = tmp_path / "audio"
    _write_db(audio, n=2)
    build_index(audio, tmp_path / "index", BandEnergy())
    with pytest.raises(B2MError, match="index.json: index was built with space"):
        build_index(audio, tmp_path / "index", BandEnergy(bands=2))
    with pytest.raises(B2MError, match="index.json: index was built with space"):
        build_index(tmp_path, tmp_path / "index", BandEnergy())
    with pytest.raises(B2MError, match="not a retrieval index"):
        RetrievalIndex.load(tmp_path / "audio")
    with pytest.raises(B2MError, match="audio folder not found"):
        build_index(tmp_path / "nope", tmp_path / "index2", BandEnergy())


@pytest.mark.parametrize("link", ["symlink", "copy"])
def test_retrieve_predictions_writes_manifest_and_audio(tmp_path, link):
    audio = tmp_path / "audio"
    paths = _write_db(audio, n=6)
    space = BandEnergy()
    build_index(audio, tmp_path / "index", space)
    index = RetrievalIndex.load(tmp_path / "index", device="cpu")
    # Predictions equal to the embeddings of tracks 0 and 3: with the stimulus excluded
    # they must not retrieve themselves.
    pred = np.stack([_reference_embedding(space, paths[i]) for i in (0, 3)])[:, None, :]
    clip_ids = np.array(["blues.00000_1.50", "jazz.00003_0.00"])
    predictions = read_predictions(write_predictions(tmp_path / "train", "sub-001", pred, pred, list(clip_ids),
                                                     Standardiser.fit(pred)))
    stimuli = ["blues.00000", "jazz.00003"]

    out = tmp_path / "retrieved"
    manifest = retrieve_predictions(predictions, index, 2, out, stimuli, link=link)
    assert json.loads((out / "retrieval_sub-001.json").read_text()) == manifest
    _, _, ref_paths = index.query(pred, 3)
    for q, clip_id in enumerate(clip_ids):
        hits = manifest["clips"][clip_id]["ranks"]
        assert manifest["clips"][clip_id]["input_hash"] == predictions.input_hash(q)
        assert ref_paths[q][0] == str(paths[(0, 3)[q]].resolve())  # without exclusion: itself
        assert [h["path"] for h in hits] == ref_paths[q][1:]
        assert [h["rank"] for h in hits] == [1, 2] and hits[0]["score"] >= hits[1]["score"]
        for h in hits:
            dest = out / h["file"]
            assert dest.name == f"{clip_id}_top{h['rank']}.wav" and dest.parent == out / "sub-001"
            assert dest.read_bytes() == open(h["path"], "rb").read()
            assert h["sha256"] == hashlib.sha256(dest.read_bytes()).hexdigest()
            assert dest.is_symlink() == (link == "symlink")
            if link == "symlink":
                assert not os.path.isabs(os.readlink(dest))
    # Run again: links and copies are replaced, not an error.
    assert retrieve_predictions(predictions, index, 2, out, stimuli, link=link) == manifest

    kept = retrieve_predictions(predictions, index, 1, tmp_path / "with_self", exclude=None)
    assert kept["clips"]["blues.00000_1.50"]["ranks"][0]["path"] == str(paths[0].resolve())


def test_retrieve_rejects_a_bad_link_mode(tmp_path):
    index = RetrievalIndex(np.eye(2, dtype=np.float32), ["a.wav", "b.wav"], device="cpu")
    pred = np.zeros((1, 1, 2), np.float32)
    predictions = read_predictions(write_predictions(tmp_path, "sub-001", pred, pred, ["blues.00000_0.00"], Standardiser.fit(pred)))
    with pytest.raises(B2MError, match="'hardlink' is not 'symlink' or 'copy'"):
        retrieve_predictions(predictions, index, 1, tmp_path, link="hardlink")


def test_a_file_the_space_rejects_is_skipped_not_its_chunk(tmp_path):
    audio = tmp_path / "audio"
    _write_db(audio, n=3, seconds=2.0)
    _write_db(audio / "short", n=1, seconds=0.5, seed=9)
    space = WindowedSpace(BandEnergy(), window_s=1.0, stride_s=0.5, clip_s=2.0)
    summary = build_index(audio, tmp_path / "index", space, chunk_size=10)
    assert summary["files"] == 3
    assert [e["path"] for e in summary["errors"]] == ["short/blues/blues.00000.wav"]
    assert "shorter than its windows" in summary["errors"][0]["error"]
    index = RetrievalIndex.load(tmp_path / "index", device="cpu")
    assert index.unit.shape == (3, 3 * 4)


def test_clip_ids_that_sanitise_alike_keep_their_own_files_and_hidden_files_are_skipped(tmp_path):
    audio = tmp_path / "audio"
    _write_db(audio, n=4)
    # What a killed copy leaves: a hidden temporary beside the real files; never part of the database.
    sf.write(audio / "blues" / ".blues.00000.tmp.wav", np.zeros(1000, np.float32), 1000)
    space = BandEnergy()
    build_index(audio, tmp_path / "index", space)
    index = RetrievalIndex.load(tmp_path / "index", device="cpu")
    assert len(index) == 4 and not any("/." in p for p in index.paths)
    pred = np.random.default_rng(0).standard_normal((3, 1, space.shape[1])).astype(np.float32)
    ids = ["a/b", "a_b", "a:b"]  # one safe name, two that a plain substitution maps onto it
    predictions = read_predictions(write_predictions(tmp_path / "train", "sub-001", pred, pred, ids,
                                                     Standardiser.fit(pred)))
    manifest = retrieve_predictions(predictions, index, 1, tmp_path / "out", link="copy")
    files = [manifest["clips"][c]["ranks"][0]["file"] for c in ids]
    assert len(set(files)) == 3 and files[1] == "sub-001/a_b_top1.wav"
    assert all((tmp_path / "out" / f).is_file() for f in files)
