"""fMRIPrep confounds through nilearn: the nuisance regressors and censored volumes of one run.

Strategies and their options are nilearn's (`nilearn.interfaces.fmriprep.load_confounds`),
spelled as nilearn spells them. Volumes that a strategy removes (scrubbing, non-steady
state) are returned as `censored`; preprocessing turns each into a spike regressor, which
is the same as leaving the volume out of the fit, and keeps the run's time grid intact.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from b2m.core.errors import B2MError
from b2m.core.io import read_json_object
from b2m.data.bids import Run
from b2m.data.nifti import require_file

STRATEGIES = ("motion", "high_pass", "wm_csf", "global_signal", "compcor", "ica_aroma", "tedana", "scrub",
              "non_steady_state")
# The options of each strategy and their allowed values (None: a number), as nilearn defines them.
OPTIONS = {
    "motion": ("motion", ("basic", "power2", "derivatives", "full")),
    "wm_csf": ("wm_csf", ("basic", "power2", "derivatives", "full")),
    "global_signal": ("global_signal", ("basic", "power2", "derivatives", "full")),
    "compcor": ("compcor", ("anat_combined", "anat_separated", "temporal", "temporal_anat_combined",
                            "temporal_anat_separated")),
    "ica_aroma": ("ica_aroma", ("full", "basic")),
    "tedana": ("tedana", ("aggressive", "non-aggressive")),
}
NUMERIC_OPTIONS = {"scrub": ("scrub", "fd_threshold", "std_dvars_threshold"), "compcor": ("n_compcor",)}


@dataclass(frozen=True)
class ConfoundConfig:
    """`strategy`: nilearn strategy names (empty: no regression); `options`: nilearn's keyword
    arguments for them (`motion`, `wm_csf`, `scrub`, `fd_threshold`, ...)."""

    strategy: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategy if s not in STRATEGIES]
        if unknown:
            raise B2MError(f"data.confounds: unknown strategy {unknown[0]!r} (nilearn's: {', '.join(STRATEGIES)})")
        known = {key for key, _ in OPTIONS.values()} | {k for keys in NUMERIC_OPTIONS.values() for k in keys}
        for key, value in self.options.items():
            if key not in known:
                raise B2MError(f"data.confound_options.{key}: unknown option (known: {', '.join(sorted(known))})")
            choices = next((c for k, c in OPTIONS.values() if k == key), None)
            if choices is not None and value not in choices:
                raise B2MError(f"data.confound_options.{key}: expected one of {', '.join(choices)}, got {value!r}")
            if choices is None and not (value == "all" and key == "n_compcor"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise B2MError(f"data.confound_options.{key}: expected a number >= 0, got {value!r}")


@dataclass
class RunConfounds:
    """`regressors` float64 `[T, K]` (K = 0 without confounds), their `names` `[K]`, `censored` bool `[T]`."""

    regressors: np.ndarray
    names: list[str]
    censored: np.ndarray


def load_run_confounds(run: Run, cfg: ConfoundConfig, n_volumes: int) -> RunConfounds:
    """The nuisance regressors of `run` (`n_volumes` TRs) under `cfg`, from its fMRIPrep confounds TSV."""
    none = RunConfounds(np.zeros((n_volumes, 0)), [], np.zeros(n_volumes, dtype=bool))
    if not cfg.strategy:
        return none
    path = run.confounds
    if path is None:
        raise B2MError(f"data.confounds: {run.bold} is raw BIDS without fMRIPrep confounds; "
                       f"use data=fmriprep or data.confounds=[]")
    require_file(path, "confounds", " (or set data.confounds=[])")
    check_table(path, n_volumes, run.bold.name)
    check_sidecar(path.with_suffix(".json"))

    from nilearn.interfaces.fmriprep import load_confounds  # imports pandas: only when confounds are used

    options = {key: value for strategy in cfg.strategy for key in _option_keys(strategy)
               if (value := cfg.options.get(key)) is not None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nilearn's notes on strategy defaults
            # nilearn finds the TSV from the image's name and never opens the image; it accepts only
            # .nii.gz names, so an uncompressed run is named as its gzipped twin.
            image = run.bold if run.bold.name.endswith(".gz") else run.bold.with_name(run.bold.name + ".gz")
            table, sample_mask = load_confounds(str(image), strategy=tuple(cfg.strategy), **options)
    except (ValueError, KeyError, FileNotFoundError) as err:
        message = " ".join(str(err).split())
        raise B2MError(f"{path}: {message}") from None
    if table is None:
        return none
    regressors = table.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(regressors)
    if bad.any():
        column = int(np.flatnonzero(bad.any(axis=0))[0])
        volume = int(np.flatnonzero(bad[:, column])[0])
        raise B2MError(f"{path}: column {table.columns[column]} has non-finite values (first at volume {volume}, "
                       f"counting from 0)")
    censored = np.zeros(n_volumes, dtype=bool)
    if sample_mask is not None:
        censored[:] = True
        censored[np.asarray(sample_mask, dtype=int)] = False
    return RunConfounds(regressors, [str(c) for c in table.columns], censored)


def check_table(path: Path, n_volumes: int, bold: str) -> None:
    """Refuse a confounds TSV that nilearn would fail on with a traceback or read wrongly in silence:
    no header, an empty or repeated column name (pandas would rename it `x.1`), a row with another number
    of fields than the header (pandas fills a short one with NaN), other than `n_volumes` rows (the BOLD
    `bold`'s volumes), or a value that is neither a number nor empty / `n/a`."""
    import pandas as pd  # nilearn reads the table with pandas: the values are checked as it sees them

    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t")
            # (line number, fields) of the lines that are not empty, which pandas skips too
            lines = [(reader.line_num, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise B2MError(f"{path}: unreadable confounds file ({err})") from None
    if not lines:
        raise B2MError(f"{path}: confounds file is empty (expected a header and one row per volume)")
    header = lines[0][1]
    for i, name in enumerate(header):
        if not name.strip():
            raise B2MError(f"{path}: column {i + 1} of the header has no name")
        if name in header[:i]:
            raise B2MError(f"{path}: column {name} appears twice in the header")
    for line, row in lines[1:]:
        if len(row) != len(header):
            raise B2MError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
    if len(lines) - 1 != n_volumes:
        raise B2MError(f"{path}: {len(lines) - 1} rows, the BOLD {bold} has {n_volumes} volumes")
    try:
        table = pd.read_csv(path, delimiter="\t", encoding="utf-8")  # as nilearn reads it
    except ValueError as err:  # pandas' ParserError: a quote left open, say
        raise B2MError(f"{path}: unreadable confounds file ({' '.join(str(err).split())})") from None
    for i, column in enumerate(table.columns):
        values = table[column]
        if not pd.api.types.is_numeric_dtype(values):
            row = int(np.flatnonzero((values.notna() & pd.to_numeric(values, errors="coerce").isna()).to_numpy())[0])
            raise B2MError(f"{path}: line {lines[row + 1][0]}, column {header[i]}: {values.iloc[row]!r} is not a "
                           f"number (nor n/a)")


def check_sidecar(path: Path) -> None:
    """Refuse a confounds JSON sidecar (optional; CompCor reads it) that is not an object of objects, one
    per regressor: nilearn reads it whenever it is there, and fails on another shape with a traceback."""
    if not path.exists():
        return
    meta = read_json_object(path, "confounds sidecar")
    wrong = next((key for key, value in meta.items() if not isinstance(value, dict)), None)
    if wrong is not None:
        raise B2MError(f"{path}: the entry of {wrong} is not a JSON object")


def _option_keys(strategy: str) -> tuple[str, ...]:
    own = (OPTIONS[strategy][0],) if strategy in OPTIONS else ()
    return own + NUMERIC_OPTIONS.get(strategy, ())
