"""Damaged or odd input files: each one a one-line B2MError naming the file, or read right."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest

from b2m.core.clips import Clip
from b2m.core.errors import B2MError
from b2m.data.bids import read_events
from b2m.data.captions import read_captions
from b2m.data.nifti import open_run, read_masked
from b2m.targets.base import embed_clips
from helpers.spaces import BandEnergy

EVENTS = "onset\tduration\tgenre\ttrack\tstart\tend\n"


def _gz_run(path, shape=(3, 3, 2, 40)):
    data = np.random.default_rng(0).integers(0, 1000, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return data


def test_nii_gz_whose_checksum_fails_is_refused(tmp_path):
    path = tmp_path / "run_bold.nii.gz"
    data = _gz_run(path)
    mask = np.ones(data.shape[:3], bool)
    np.testing.assert_array_equal(read_masked(open_run(path), mask), data.reshape(-1, 40).T)
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # the CRC32 of the gzip trailer: the data still inflates, only the check fails
    path.write_bytes(bytes(raw))
    with pytest.raises(B2MError, match=r"run_bold.nii.gz: unreadable data \(CRC check failed"):
        read_masked(open_run(path), mask)


def test_truncated_nii_gz_is_refused(tmp_path):
    path = tmp_path / "run_bold.nii.gz"
    _gz_run(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(B2MError, match="run_bold.nii.gz: "):
        image = open_run(path)
        read_masked(image, np.ones(image.grid, bool))


@pytest.mark.parametrize("row, message", [
    ("-1.5\t15\tblues\t1\t0\t15", "must be finite and >= 0"),
    ("nan\t15\tblues\t1\t0\t15", "must be finite and >= 0"),
    ("3\t15\tblues\t1\tinf\t15", "must be finite and >= 0"),
    ("3\t15\tblues\t1\t-2\t15", "must be finite and >= 0"),
    ("3\t15\tblues\t1\t10\t5", "end 5.0 s is not after start 10.0 s"),
])
def test_bad_event_times_name_the_line(tmp_path, row, message):
    path = tmp_path / "events.tsv"
    path.write_text(EVENTS + "0\t15\tjazz\t2\t0\t15\n" + row + "\n")
    with pytest.raises(B2MError, match=f"events.tsv: line 3: .*{message}"):
        read_events(path)


def test_folders_and_unreadable_bytes_where_files_belong(tmp_path):
    (tmp_path / "events.tsv").mkdir()
    with pytest.raises(B2MError, match="events.tsv: events file expected, found a folder"):
        read_events(tmp_path / "events.tsv")
    (tmp_path / "captions.csv").mkdir()
    with pytest.raises(B2MError, match="captions.csv: captions file expected, found a folder"):
        read_captions(tmp_path / "captions.csv")


def test_latin1_captions_are_read(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_bytes("genre,track,caption\nblues,1,Caf\u00e9 blues with a se\u00f1or's guitar\n".encode("latin-1"))
    assert read_captions(path) == {("blues", 1): "Caf\u00e9 blues with a se\u00f1or's guitar"}
    path.write_bytes("\ufeffgenre,track,caption\nblues,1,na\u00efve\n".encode("utf-8"))  # with a BOM
    assert read_captions(path) == {("blues", 1): "na\u00efve"}


class Counting(BandEnergy):
    calls = 0

    def embed_batch(self, items):
        Counting.calls += len(items)
        return super().embed_batch(items)


def test_embedding_cache_follows_the_source_and_survives_damage(tmp_path):
    space = Counting()
    clips = [Clip("blues", i, 0.0, 1.0) for i in range(3)]
    waves = {c: np.random.default_rng(c.track).standard_normal(800).astype(np.float32) for c in clips}
    key = {c: "v1" for c in clips}

    def run():
        return embed_clips(space, clips, waves.__getitem__, tmp_path, source_key=key.__getitem__)

    first = run()
    assert Counting.calls == 3
    np.testing.assert_array_equal(run(), first)
    assert Counting.calls == 3  # all cached
    # An edited source (a caption, a replaced file) has another key: embedded again, the others not.
    waves[clips[1]] = -waves[clips[1]] * 2
    key[clips[1]] = "v2"
    second = run()
    assert Counting.calls == 4
    np.testing.assert_array_equal(second[1], space.embed_batch([waves[clips[1]]])[0])
    # A cache file cut short by a killed write is computed again, not a traceback.
    (cached,) = (tmp_path / space.cache_key()).glob("blues.00000_*.npy")
    cached.write_bytes(cached.read_bytes()[:20])
    np.testing.assert_array_equal(run(), second)



def test_damaged_preprocessing_cache_is_computed_again(tmp_path):
    from b2m.core.config import compose
    from b2m.jobs.train import train
    from helpers.bids import make_bids

    root = make_bids(tmp_path / "bids", training_runs=(1, 2), test_runs=(1,))
    args = [f"data.root={root}", "data.preprocess.mask=null", "decoder.n_folds=3", "trainer.logger=none"]
    first = train(compose("train", [*args, f"out_dir={tmp_path / 'a'}"]))
    runs = sorted((root / "derivatives" / "b2m" / "preproc").rglob("Training-*.npy"))
    assert runs
    runs[0].write_bytes(runs[0].read_bytes()[:200])  # what a full disk or a killed copy leaves
    with pytest.warns(UserWarning, match="damaged preprocessing cache; computing it again"):
        again = train(compose("train", [*args, f"out_dir={tmp_path / 'b'}"]))
    assert again == first


def test_truncated_predictions_file_is_one_error(tmp_path):
    from b2m.core.metrics import Standardiser
    from b2m.core.runs import read_predictions, write_predictions

    pred = np.random.default_rng(0).standard_normal((4, 1, 3)).astype(np.float32)
    path = write_predictions(tmp_path, "sub-001", pred, pred, ["a", "b", "c", "d"], Standardiser.fit(pred))
    path.write_bytes(path.read_bytes()[:300])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # the file is closed, not left to the collector
        with pytest.raises(B2MError, match="sub-001.npz: unreadable predictions file"):
            read_predictions(path)
