"""fMRIPrep derivatives: the demo's layout, reading it, confound regression against nilearn, atlas regions."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from b2m.core.config import compose
from b2m.core.errors import B2MError
from b2m.data.bids import repetition_time
from b2m.data.confounds import ConfoundConfig, load_run_confounds
from b2m.data.fmriprep import FMRIPrepDataset, parse_name
from b2m.data.nifti import open_run, read_masked
from b2m.data.preprocess import PreprocessConfig, clean, zscore
from b2m.data.rois import load_atlas, read_label_table
from b2m.data.subjects import load_preprocessed
from b2m.demo import fmriprep as demo_fmriprep
from b2m.demo.build import build_dataset

SUB = "sub-001"
FUNC = Path("derivatives/fmriprep/sub-001/func")


@pytest.fixture(scope="session")
def prep(tmp_path_factory) -> Path:
    """The tiny demo in fMRIPrep's layout (subject 1, Training runs 1-2, Test run 1); built once."""
    root = tmp_path_factory.mktemp("fmriprep") / "tiny"
    build_dataset(root, "tiny", subjects=(1,), seed=0, workers=1, layout="fmriprep")
    return root


@pytest.fixture(scope="session")
def raw(prep, tmp_path_factory) -> Path:
    """The same subject, seed and runs in the raw layout: the BOLD without the artefacts."""
    root = tmp_path_factory.mktemp("raw") / "tiny"
    root.mkdir()
    shutil.copytree(prep / "stimuli", root / "stimuli")
    build_dataset(root, "tiny", subjects=(1,), seed=0, workers=1)
    return root


@pytest.fixture
def copy(prep, tmp_path) -> Path:
    """A private copy of the fMRIPrep demo that a test may break."""
    return Path(shutil.copytree(prep, tmp_path / "copy"))


def data_cfg(root: Path, *overrides: str):
    return compose("train", ["data=fmriprep", f"data.root={root}", "data.cache_dir=null", *overrides]).data


# ---------------------------------------------------------------- the demo's layout

def test_demo_writes_fmriprep_conventions(prep):
    from nilearn.interfaces.fmriprep import load_confounds

    bold = prep / FUNC / "sub-001_task-Training_run-01_space-T1w_desc-preproc_bold.nii.gz"
    image = nib.load(str(bold))
    assert image.get_data_dtype() == np.float32 and image.shape[3] == 410
    assert image.header.get_zooms()[3] == 1.5
    mask = nib.load(str(prep / FUNC / "sub-001_task-Training_run-01_space-T1w_desc-brain_mask.nii.gz"))
    assert mask.shape == image.shape[:3] and np.allclose(mask.affine, image.affine)
    tsv = prep / FUNC / "sub-001_task-Training_run-01_desc-confounds_timeseries.tsv"
    header, first = tsv.read_text().splitlines()[:2]
    columns = header.split("\t")
    assert {"trans_x", "rot_z_derivative1_power2", "white_matter", "csf", "global_signal",
            "framewise_displacement", "std_dvars", "cosine00"} <= set(columns)
    row = dict(zip(columns, first.split("\t")))
    assert row["trans_x_derivative1"] == row["framewise_displacement"] == "n/a" and row["trans_x"] != "n/a"
    assert (prep / "sub-001/func/sub-001_task-Training_run-01_events.tsv").exists()  # events stay raw
    assert not list(prep.glob("sub-*/func/*_bold.nii*"))
    # nilearn reads every strategy the demo can support, and scrubbing finds the motion jumps.
    table, sample_mask = load_confounds(str(bold), strategy=("motion", "wm_csf", "high_pass", "global_signal",
                                                             "scrub"), motion="full", scrub=0)
    assert np.isfinite(table.to_numpy()).all() and table.shape[0] == 410
    assert sample_mask is not None and 0 < 410 - len(sample_mask) < 40


def test_regression_removes_the_artefacts(prep, raw):
    """The BOLD under the artefacts is the raw layout's: regression brings the two closer."""
    run = FMRIPrepDataset(prep, None, "T1w").runs(SUB, "Training")[0]
    image = open_run(run.bold)
    mask = nib.load(str(run.mask)).get_fdata() > 0
    truth = read_masked(open_run(raw / "sub-001/func/sub-001_task-Training_run-01_bold.nii"), mask)
    derivative = read_masked(image, mask)
    cfg = PreprocessConfig(detrend="poly")

    def agreement(strategy):
        """Mean correlation per voxel of the cleaned derivative with the artefact-free BOLD cleaned alike."""
        conf = load_run_confounds(run, ConfoundConfig(strategy, {"motion": "full"}), image.n_volumes)
        a, b = (zscore(clean(x, 1.5, cfg, conf.regressors, conf.censored), conf.censored)[0]
                for x in (derivative, truth))
        kept = ~conf.censored
        return np.mean((a[kept] * b[kept]).mean(axis=0))

    none, motion, full = agreement(()), agreement(("motion",)), agreement(("motion", "wm_csf", "high_pass"))
    assert none < 0.7 < motion < full and full > 0.95


# ---------------------------------------------------------------- reading the layout

def test_runs_spaces_and_padding(copy):
    runs = FMRIPrepDataset(copy, None, "T1w").runs(SUB, "Training")
    assert [r.run for r in runs] == [1, 2]
    assert runs[0].events == copy / "sub-001/func/sub-001_task-Training_run-01_events.tsv"
    assert runs[0].confounds.name == "sub-001_task-Training_run-01_desc-confounds_timeseries.tsv"
    # fMRIPrep versions that drop the zero padding, and an MNI space at two resolutions.
    folder = copy / FUNC
    for path in list(folder.glob("*run-02*")):
        path.rename(folder / path.name.replace("run-02", "run-2"))
    for path in list(folder.glob("*space-T1w*")):
        for res in ("1", "2"):
            shutil.copy(path, folder / path.name.replace("space-T1w", f"space-MNI152NLin2009cAsym_res-{res}"))
    runs = FMRIPrepDataset(copy, None, "MNI152NLin2009cAsym:res-2").runs(SUB, "Training")
    assert [r.run for r in runs] == [1, 2] and "res-2" in runs[1].bold.name and "run-2_" in runs[1].bold.name
    with pytest.raises(B2MError, match="several outputs.*MNI152NLin2009cAsym:res-1, MNI152NLin2009cAsym:res-2"):
        FMRIPrepDataset(copy, None, "MNI152NLin2009cAsym").runs(SUB, "Training")
    with pytest.raises(B2MError, match=r"no space-MNI152NLin6Asym output.*spaces present: MNI152NLin2009cAsym:res-1, "
                                       r"MNI152NLin2009cAsym:res-2, T1w"):
        FMRIPrepDataset(copy, None, "MNI152NLin6Asym").runs(SUB, "Test")
    assert parse_name(".sub-001_task-Test_bold.nii.gz.tmp") is None


def test_missing_derivatives_are_one_line_errors(copy, tmp_path):
    for path in (copy / FUNC).glob("*task-Test_run-01*"):
        path.unlink()
    with pytest.raises(B2MError, match="sub-001_task-Test_run-01_events.tsv: run has no fMRIPrep derivatives"):
        FMRIPrepDataset(copy, None, "T1w").runs(SUB, "Test")
    with pytest.raises(B2MError, match="fMRIPrep derivatives folder not found"):
        FMRIPrepDataset(copy, tmp_path / "nowhere", "T1w")
    with pytest.raises(B2MError, match="data.space: expected a space"):
        FMRIPrepDataset(copy, None, "T1w/../x")


def test_train_and_evaluate_on_the_fmriprep_layout(prep, tmp_path):
    from b2m.jobs.evaluate import evaluate
    from b2m.jobs.train import train

    atlas, table = demo_fmriprep.atlas_paths(prep, 1)
    out = tmp_path / "run"
    cfg = compose("train", ["data=fmriprep", f"data.root={prep}", f"out_dir={out}", "decoder.n_folds=3",
                            "trainer.logger=none", f"data.rois.atlas={str(atlas).replace('sub-001', '{subject}')!r}",
                            f"data.rois.labels={table}", "data.confounds=[motion,wm_csf,high_pass,scrub]"])
    metrics = train(cfg)
    assert 0.0 <= metrics["test/id_acc"] <= 1.0 and (out / "metrics.json").exists()
    ev = evaluate(compose("evaluate", [f"run={out}", f"out_dir={tmp_path / 'ev'}", "n_boot=20", "genre=false",
                                       "logo=false", "report.enabled=false", "encoding.enabled=true",
                                       "encoding.n_perm=20", "encoding.spaces=[acoustic]"])).flat()
    summary = (tmp_path / "ev" / "encoding" / "summary.md").read_text()
    assert "atlas regions" in summary and "| ctx-lh-superiortemporal |" in summary
    assert "encoding/acoustic/ctx-rh-superiortemporal/mean_r" in ev


def test_raw_bids_says_there_was_no_motion_correction(raw):
    cfg = compose("train", [f"data.root={raw}", "data.cache_dir=null", "data.preprocess.mask=null"]).data
    with pytest.warns(UserWarning, match="no motion correction"):
        load_preprocessed(cfg, SUB)
    with pytest.raises(B2MError, match="data.confounds: raw BIDS has no confounds"):
        load_preprocessed(compose("train", [f"data.root={raw}", "data.confounds=[motion]"]).data, SUB)


# ---------------------------------------------------------------- confounds

def confounds_file(root: Path, run: str = "Training_run-01") -> Path:
    return root / FUNC / f"sub-001_task-{run}_desc-confounds_timeseries.tsv"


def set_cell(rows: list[str], line: int, column: str, value: str) -> list[str]:
    """`rows` with the value of `column` on file line `line` (the header is line 1) set to `value`."""
    cells = rows[line - 1].split("\t")
    cells[rows[0].split("\t").index(column)] = value
    return rows[:line - 1] + ["\t".join(cells)] + rows[line:]


def rename_column(rows: list[str], index: int, name: str) -> list[str]:
    header = rows[0].split("\t")
    header[index] = name
    return ["\t".join(header)] + rows[1:]


@pytest.mark.parametrize("edit, message", [
    (lambda rows: [r.split("\t", 1)[1] for r in rows], "missing.*trans_x"),
    (lambda rows: rows[:-1], "409 rows, the BOLD .* has 410 volumes"),
    (lambda rows: rows[:100], "99 rows, the BOLD .* has 410 volumes"),
    (lambda rows: rows[:1], "0 rows, the BOLD .* has 410 volumes"),
    (lambda rows: [], "confounds file is empty"),
    (lambda rows: rows[:5] + ["\t".join(["n/a"] * len(rows[0].split("\t")))] + rows[6:], "non-finite"),
    (lambda rows: set_cell(rows, 6, "trans_x", "n/a"),
     "column trans_x has non-finite values \\(first at volume 4, counting from 0\\)"),
    # A text value, in a column that the strategy uses and in one that only scrubbing would.
    (lambda rows: set_cell(rows, 8, "trans_y", "0.1mm"), "line 8, column trans_y: '0.1mm' is not a number"),
    (lambda rows: set_cell(rows, 300, "framewise_displacement", "high"),
     "line 300, column framewise_displacement: 'high' is not a number"),
    (lambda rows: rename_column(rows, 1, rows[0].split("\t")[0]), "column trans_x appears twice in the header"),
    (lambda rows: rename_column(rows, 2, ""), "column 3 of the header has no name"),
    (lambda rows: rows[:5] + [rows[5] + "\t0.5"] + rows[6:], "line 6 has 70 fields, the header has 69"),
    (lambda rows: rows[:5] + [rows[5].rsplit("\t", 1)[0]] + rows[6:], "line 6 has 68 fields, the header has 69"),
])
def test_bad_confounds_are_one_line_errors(copy, edit, message):
    path = confounds_file(copy)
    assert len(path.read_text().splitlines()[0].split("\t")) == 69  # the counts the messages name
    path.write_text("".join(row + "\n" for row in edit(path.read_text().splitlines())))
    with pytest.raises(B2MError, match=message) as err:
        load_preprocessed(data_cfg(copy), SUB)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_blank_lines_in_confounds_are_skipped_and_lines_counted(copy):
    path = confounds_file(copy)
    rows = path.read_text().splitlines()
    path.write_text("\n".join(rows[:3] + [""] + rows[3:]) + "\n\n")
    assert load_preprocessed(data_cfg(copy), SUB).data.n_voxels > 0
    edited = set_cell(rows, 9, "rot_x", "x")
    path.write_text("\n".join(edited[:3] + [""] + edited[3:]) + "\n")
    with pytest.raises(B2MError, match="line 10, column rot_x: 'x' is not a number"):
        load_preprocessed(data_cfg(copy), SUB)


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ("[1]", r"a JSON list where a confounds sidecar \(a JSON object\) belongs"),
    ('{"trans_x": 3}', "the entry of trans_x is not a JSON object"),
])
def test_bad_confounds_sidecars_are_one_line_errors(copy, text, message):
    sidecar = confounds_file(copy).with_suffix(".json")
    sidecar.write_text(text)
    for strategy in ("[motion]", "[compcor,high_pass]"):  # nilearn reads it for any strategy
        with pytest.raises(B2MError, match=message) as err:
            load_preprocessed(data_cfg(copy, f"data.confounds={strategy}"), SUB)
        assert str(sidecar) in str(err.value) and "\n" not in str(err.value)
    sidecar.unlink()  # optional but for CompCor
    assert load_preprocessed(data_cfg(copy, "data.confounds=[motion]"), SUB).data.n_voxels > 0


def test_the_preprocessing_cache_follows_the_confound_values(copy, monkeypatch):
    from b2m.data import preprocess

    cfg = data_cfg(copy, f"data.cache_dir={copy / 'cache'}")
    first = load_preprocessed(cfg, SUB).data.runs["Training-01"].copy()
    reads = []
    original = preprocess.read_masked
    monkeypatch.setattr(preprocess, "read_masked", lambda *a: reads.append(a) or original(*a))
    load_preprocessed(cfg, SUB)
    assert reads == []
    # One motion value changed, the file's size and modification time kept.
    path = confounds_file(copy)
    stat = path.stat()
    rows = path.read_text().splitlines()
    old = rows[100].split("\t")[rows[0].split("\t").index("trans_x")]
    path.write_text("".join(row + "\n" for row in set_cell(rows, 101, "trans_x", "5" * len(old))))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    second = load_preprocessed(cfg, SUB).data.runs["Training-01"]
    assert len(reads) == 3 and not np.array_equal(first, second)


def test_confound_config_is_checked(copy):
    with pytest.raises(B2MError, match="data.confounds: unknown strategy 'motions'"):
        load_preprocessed(data_cfg(copy, "data.confounds=[motions]"), SUB)
    with pytest.raises(B2MError, match="data.confound_options.motion: expected one of basic"):
        load_preprocessed(data_cfg(copy, "data.confound_options.motion=all"), SUB)
    confounds_file(copy).unlink()
    with pytest.raises(B2MError, match=r"confounds file missing \(or set data.confounds=\[\]\)"):
        load_preprocessed(data_cfg(copy), SUB)
    confounds_file(copy).mkdir()
    with pytest.raises(B2MError, match="timeseries.tsv: confounds file expected, found a folder"):
        load_preprocessed(data_cfg(copy), SUB)
    assert load_preprocessed(data_cfg(copy, "data.confounds=[]"), SUB).data.n_voxels > 0


def test_the_tr_of_a_derivative_must_agree_with_the_raw_sidecar_and_its_header(copy):
    run = FMRIPrepDataset(copy, None, "T1w").runs(SUB, "Training")[0]
    raw = copy / "sub-001/func/sub-001_task-Training_run-01_bold.json"
    meta = json.loads(raw.read_text())
    assert repetition_time(run) == meta["RepetitionTime"] == 1.5
    raw.write_text(json.dumps({**meta, "RepetitionTime": 2.0}))
    with pytest.raises(B2MError, match="desc-preproc_bold.json: RepetitionTime 1.5 s disagrees with the raw sidecar "
                                       ".*Training_run-01_bold.json's 2 s") as err:
        load_preprocessed(data_cfg(copy), SUB)
    assert str(raw) in str(err.value) and str(run.sidecar) in str(err.value) and "\n" not in str(err.value)
    raw.write_text(json.dumps({**meta, "RepetitionTime": 1.5005}))  # rounding, within 1e-3
    assert repetition_time(run) == 1.5
    # A raw sidecar that inherits its TR from a higher level, or none at all, states nothing to compare.
    raw.write_text(json.dumps({k: v for k, v in meta.items() if k != "RepetitionTime"}))
    assert repetition_time(run) == 1.5
    raw.unlink()
    assert repetition_time(run) == 1.5
    # The derivative's sidecar against its own header (1.5 s in pixdim[4]).
    run.sidecar.write_text(json.dumps({**json.loads(run.sidecar.read_text()), "RepetitionTime": 2.0}))
    with pytest.raises(B2MError, match=f"desc-preproc_bold.json: RepetitionTime 2 s disagrees with the NIfTI header "
                                       f"of {run.bold} \\(1.5 s in pixdim\\[4\\]\\)"):
        load_preprocessed(data_cfg(copy), SUB)


def test_mask_on_another_grid_is_refused(copy):
    path = copy / FUNC / "sub-001_task-Test_run-01_space-T1w_desc-brain_mask.nii.gz"
    image = nib.load(str(path))
    moved = image.affine.copy()
    moved[0, 3] += 2.0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), moved), str(path))
    with pytest.raises(B2MError, match="desc-brain_mask.nii.gz: mask is on another grid than the BOLD"):
        load_preprocessed(data_cfg(copy), SUB)


def test_clean_matches_nilearn_and_censoring_is_leaving_volumes_out():
    from nilearn.signal import clean as nilearn_clean

    rng = np.random.default_rng(0)
    t, v = 200, 30
    confounds = rng.standard_normal((t, 4))
    x = (rng.standard_normal((t, v)) + confounds @ rng.standard_normal((4, v)) + np.linspace(0, 3, t)[:, None])
    ours = clean(x, 1.5, PreprocessConfig(detrend="poly", poly_order=1), confounds)
    theirs = nilearn_clean(x, detrend=True, standardize=None, confounds=confounds, filter=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # Collinear regressors (a confound that repeats the linear trend) change nothing.
    doubled = np.column_stack([confounds, np.linspace(-1, 1, t)])
    np.testing.assert_allclose(clean(x, 1.5, PreprocessConfig(detrend="poly", poly_order=1), doubled), ours,
                               atol=1e-4)
    # A censored volume: the fit ignores it (numpy's lstsq on the kept volumes), its residual is 0.
    censored = np.zeros(t, dtype=bool)
    censored[[10, 11, 150]] = True
    got = clean(x, 1.5, PreprocessConfig(detrend="poly", poly_order=2), confounds, censored)
    design = np.column_stack([np.vander(np.linspace(-1, 1, t), 3), confounds])
    coef, *_ = np.linalg.lstsq(design[~censored], x[~censored], rcond=None)
    np.testing.assert_allclose(got[~censored], (x - design @ coef)[~censored], atol=1e-4)
    np.testing.assert_allclose(got[censored], 0.0, atol=1e-4)


def test_float32_gzip_reading_is_blockwise_and_exact(tmp_path):
    data = np.random.default_rng(3).standard_normal((6, 5, 4, 70)).astype(np.float32)
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    mask = data[..., 0] > 0
    np.testing.assert_array_equal(read_masked(open_run(path), mask), data[mask].T)
    truncated = tmp_path / "b.nii.gz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(B2MError, match="b.nii.gz"):
        read_masked(open_run(truncated), mask)


# ---------------------------------------------------------------- atlas regions

def test_label_tables_bids_and_freesurfer(tmp_path):
    tsv = tmp_path / "dseg.tsv"
    tsv.write_text("index\tname\n0\tUnknown\n2\tLeft-Cerebral-White-Matter\n1030\tctx-lh-superiortemporal\n")
    lut = tmp_path / "FreeSurferColorLUT.txt"
    lut.write_text("#No. Label Name: R G B A\n\n0  Unknown 0 0 0 0\n2  Left-Cerebral-White-Matter 245 245 245 0\n"
                   "1030    ctx-lh-superiortemporal 140 220 220 0\n")
    expected = {2: "Left-Cerebral-White-Matter", 1030: "ctx-lh-superiortemporal"}
    assert read_label_table(tsv) == read_label_table(lut) == expected
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\tlabel\n1\tx\n")
    with pytest.raises(B2MError, match="bad.tsv: a dseg.tsv needs columns index and name"):
        read_label_table(bad)


def test_atlas_selection_grid_and_resampling(prep, tmp_path):
    from nilearn.image import resample_img
    from omegaconf import OmegaConf

    atlas_path, table = demo_fmriprep.atlas_paths(prep, 1)
    bold = open_run(prep / FUNC / "sub-001_task-Test_run-01_space-T1w_desc-preproc_bold.nii.gz")
    cfg = OmegaConf.create({"atlas": str(atlas_path), "labels": str(table), "resample": False})
    atlas = load_atlas(cfg, SUB, bold.grid, bold.affine)
    temporal = atlas.select(["ctx-*-superiortemporal"])
    assert temporal.any() and set(np.unique(atlas.labels[temporal])) == {1030, 2030}
    with pytest.raises(B2MError, match="matches no region"):
        atlas.select(["V1*"])
    # fMRIPrep's anatomical resolution: twice as fine. Refused unless resampling is asked for.
    source = nib.load(str(atlas_path))
    fine_affine = source.affine.copy()
    fine_affine[:3, :3] /= 2
    fine = resample_img(source, target_affine=fine_affine, target_shape=tuple(2 * s for s in bold.grid),
                        interpolation="nearest", force_resample=True, copy_header=True)
    fine_path = tmp_path / "fine.nii.gz"
    nib.save(fine, str(fine_path))
    cfg.atlas = str(fine_path)
    with pytest.raises(B2MError, match="fine.nii.gz: atlas has shape .*data.rois.resample=true"):
        load_atlas(cfg, SUB, bold.grid, bold.affine)
    cfg.resample = True
    back = load_atlas(cfg, SUB, bold.grid, bold.affine)
    assert np.mean(back.labels == atlas.labels) > 0.97


@pytest.mark.parametrize("resample", ["false", "true"])
def test_an_atlas_must_be_one_3d_label_image(prep, tmp_path, resample):
    atlas_path, table = demo_fmriprep.atlas_paths(prep, 1)
    source = nib.load(str(atlas_path))
    labels = np.asarray(source.dataobj)

    def cfg(path):
        return data_cfg(prep, f"data.rois.atlas={path}", f"data.rois.labels={table}", f"data.rois.resample={resample}",
                        "data.rois.select=[ctx-*-superiortemporal]")

    # A probabilistic or multi-volume atlas: one volume per region, or several label images.
    stacked = tmp_path / "probseg.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([labels, labels], axis=-1), source.affine), str(stacked))
    with pytest.raises(B2MError, match=r"probseg.nii.gz: atlas must be a 3D image \(one value per voxel\), "
                                       r"found shape \(10, 10, 8, 2\)$") as err:
        load_preprocessed(cfg(stacked), SUB)
    assert "\n" not in str(err.value)
    with pytest.raises(B2MError, match="atlas file expected, found a folder"):
        load_preprocessed(cfg(tmp_path), SUB)
    # One volume in a 4D image is a 3D atlas, as is.
    single = tmp_path / "single.nii.gz"
    nib.save(nib.Nifti1Image(labels[..., None], source.affine), str(single))
    bold = open_run(prep / FUNC / "sub-001_task-Test_run-01_space-T1w_desc-preproc_bold.nii.gz")
    atlas = load_atlas(cfg(single).rois, SUB, bold.grid, bold.affine)
    np.testing.assert_array_equal(atlas.labels, labels)


def test_demo_layouts_do_not_mix_in_one_folder(copy):
    with pytest.raises(B2MError, match="was built with .*'layout': 'fmriprep'"):
        build_dataset(copy, "tiny", subjects=(1,), seed=0, workers=1)
    with pytest.raises(B2MError, match="--layout: unknown layout 'afni'"):
        build_dataset(copy, "tiny", subjects=(1,), seed=0, workers=1, layout="afni")


def test_layout_and_roi_keys_are_checked(prep):
    with pytest.raises(B2MError, match="data.layout: expected one of bids, fmriprep, got 'afni'"):
        load_preprocessed(data_cfg(prep, "data.layout=afni"), SUB)
    with pytest.raises(B2MError, match="data.rois.select: needs data.rois.atlas"):
        load_preprocessed(data_cfg(prep, "data.rois.select=[ctx-*]"), SUB)
    atlas, _ = demo_fmriprep.atlas_paths(prep, 1)
    with pytest.raises(B2MError, match="data.rois.labels: the atlas needs its label table"):
        load_preprocessed(data_cfg(prep, f"data.rois.atlas={atlas}"), SUB)


def test_uncompressed_derivatives_and_old_confounds_names(copy):
    import gzip

    folder = copy / FUNC
    for path in list(folder.glob("*task-Test_run-01_space-T1w_desc-*.nii.gz")):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    old = confounds_file(copy, "Test_run-01")  # fMRIPrep < 20.2 named it desc-confounds_regressors
    old.rename(old.with_name(old.name.replace("_timeseries", "_regressors")))
    run = FMRIPrepDataset(copy, None, "T1w").runs(SUB, "Test")[0]
    assert run.bold.suffix == run.mask.suffix == ".nii" and run.confounds.name.endswith("_regressors.tsv")
    assert load_preprocessed(data_cfg(copy), SUB).data.n_voxels > 0


def test_median_detrend_with_confounds_is_one_regression_after_the_filter():
    from scipy.ndimage import median_filter

    rng = np.random.default_rng(1)
    t, v = 300, 12
    confounds = rng.standard_normal((t, 3)).cumsum(axis=0)
    x = rng.standard_normal((t, v)) + confounds @ rng.standard_normal((3, v))
    cfg = PreprocessConfig(detrend="median", median_window_s=60.0)
    window = 41  # 60 s / 1.5 s, odd

    def filtered(a):
        return a - median_filter(a, size=(window, 1), mode="nearest")

    xd, cd = filtered(x), filtered(confounds)
    design = np.column_stack([np.ones(t), cd])
    coef, *_ = np.linalg.lstsq(design, xd, rcond=None)
    np.testing.assert_allclose(clean(x, 1.5, cfg, confounds), xd - design @ coef, atol=1e-4)


def test_maps_are_drawn_over_the_t1w_in_the_bolds_space_else_the_mean_epi(copy, tmp_path):
    from b2m.evaluation.encoding import anatomy
    from b2m.evaluation.plots import plot_map

    pre = load_preprocessed(data_cfg(copy), SUB)
    first = pre.runs["Training"][0].bold
    image, name = anatomy(pre)
    bold = nib.load(first)
    assert name == f"mean EPI of {first.name}" and np.allclose(image.affine, bold.affine)
    np.testing.assert_allclose(image.get_fdata(), bold.get_fdata().mean(axis=3), rtol=1e-5, atol=1e-3)
    anat = copy / "derivatives/fmriprep" / SUB / "anat"
    t1w = nib.Nifti1Image(np.random.default_rng(0).uniform(size=(8, 8, 8)).astype(np.float32), np.diag([3, 3, 3, 1]))
    nib.save(t1w, anat / f"{SUB}_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz")  # another space: not used
    assert anatomy(pre)[1].startswith("mean EPI")
    nib.save(t1w, anat / f"{SUB}_desc-preproc_T1w.nii.gz")
    image, name = anatomy(pre)
    assert name == f"T1w ({SUB}_desc-preproc_T1w.nii.gz)" and image.shape == (8, 8, 8)
    # A map on the BOLD's grid drawn over the T1w on its own grid, as PNG and SVG.
    stat = nib.Nifti1Image(np.random.default_rng(1).normal(size=bold.shape[:3]).astype(np.float32), bold.affine)
    plot_map(stat, image, tmp_path / "map.png", "a map")
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG" and "a map" in (tmp_path / "map.svg").read_text()
