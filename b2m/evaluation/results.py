"""The evaluation's results as one table of typed rows, and its renderings' one contract.

Every computation of an evaluation (decoding sets, reconstructions, brain-guided selection, genre,
leave-one-genre-out, encoding models, the listening test) returns `Result` rows; everything a
person reads is rendered from them: `metrics.json` (`Results.flat`, the flat keys of the format
b2m has always written), `summary.md`, the figures, the HTML report, the command-line lines and
wandb's `eval/` keys. The flat key is made here, in `Result.key`, and nowhere parsed back: a
renderer selects rows by their fields (`Results.select`).

A row names what was scored by fields, not by a string:

    section   decoding | reconstruction | selection | genre | tags | logo | encoding | listening | run
    set       test, baseline, retrieval, generated (a reconstruction kind), true / pred (genre),
              stimulus_track (tags),
              a genre (logo), a space, a space pair or noise_ceiling (encoding), a listening method
    choice    brain-guided selection's candidate (brain, first, random) or paired difference
              (brain_minus_first, brain_minus_random); a variance partition's part (encoding)
    space     the audio space a reconstruction is embedded in
    baseline  shuffled, mean_train
    part      a region (encoding) or a genre (genre accuracy per genre)
    subject   a subject label, or None for the mean over subjects
    metric    id_acc, top1, acc, within, mean_r, accuracy, n_trials, ...

with its `value`, its `interval` (low, high: None where the metric has none; NaN bounds where no
resample gave a finite value), the `sd` across subjects of a mean row (None where not reported),
`n` (the test clips or trials it counts) and a `caveat` shown wherever the row is (a random-weight
generator's output measures the pipeline, not reconstruction).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from b2m.core.clips import GENRES
from b2m.core.errors import B2MError
from b2m.core.io import read_json_object, write_json

FORMAT = "b2m-results/1"
SECTIONS = ("run", "decoding", "reconstruction", "selection", "genre", "tags", "logo", "encoding", "listening")
# The flat key's first part, per section (`encoding/<subject>/...` puts the subject after it).
PREFIX = {"run": "", "decoding": "", "reconstruction": "", "selection": "", "genre": "genre/",
          "tags": "tags/", "logo": "logo/", "encoding": "encoding/", "listening": "listening/"}
# Chance levels: identification (two-alternative) and genre classification (one of ten).
CHANCE = {"id_acc": 0.5, "genre": 1 / len(GENRES)}
RANDOM_GENERATOR = "random-weight generator: measures the pipeline, not reconstruction"


@dataclass(frozen=True)
class Result:
    """One value of an evaluation (see the module doc for the fields)."""

    section: str
    set: str
    metric: str
    value: float | int | str | None
    subject: str | None = None
    choice: str = ""
    space: str = ""
    baseline: str = ""
    part: str = ""
    interval: tuple[float | None, float | None] | None = None
    sd: float | None = None
    n: int | None = None
    caveat: str = ""

    def __post_init__(self) -> None:
        if self.section not in SECTIONS:
            raise ValueError(f"unknown result section {self.section!r}; known: {SECTIONS}")

    @property
    def name(self) -> str:
        """What was scored, as one label: `test`, `baseline/shuffled`, `retrieval/brain/acoustic`, ..."""
        return "/".join(p for p in (self.set, self.choice, self.space, self.baseline) if p)

    @property
    def key(self) -> str:
        """The flat key of `metrics.json`: `[<subject>/]<prefix><name>/<metric>` (genre: the genre after
        the metric, `genre/pred/acc/rock`; encoding: the subject after the prefix)."""
        tail = (self.metric, self.part) if self.section == "genre" else (self.part, self.metric)
        body = "/".join(p for p in (self.name, *tail) if p)
        prefix = PREFIX[self.section]
        if self.subject is None:
            return prefix + body
        if self.section == "encoding":
            return f"{prefix}{self.subject}/{body}"
        return f"{self.subject}/{prefix}{body}"

    def flat(self) -> dict:
        """This row's entries of `metrics.json`: the value, `_ci_low`/`_ci_high` and `_sd` where it has them."""
        out = {self.key: self.value}
        if self.interval is not None:
            out[f"{self.key}_ci_low"], out[f"{self.key}_ci_high"] = self.interval
        if self.sd is not None:
            out[f"{self.key}_sd"] = self.sd
        return out


@dataclass
class Results:
    """The rows of one evaluation, in the order they were computed."""

    rows: list[Result] = field(default_factory=list)

    def __iter__(self) -> Iterator[Result]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, rows: Iterable[Result]) -> None:
        self.rows.extend(rows)

    def select(self, **fields) -> list[Result]:
        """The rows whose fields equal `fields` (a tuple value: any of them), in order. `subject=None`
        selects the means over subjects; without `subject`, every subject and the means."""
        def match(row: Result) -> bool:
            return all(getattr(row, k) in v if isinstance(v, tuple) else getattr(row, k) == v
                       for k, v in fields.items())
        return [r for r in self.rows if match(r)]

    def one(self, **fields) -> Result | None:
        """The single row matching (see `select`), or None."""
        found = self.select(**fields)
        if len(found) > 1:
            raise ValueError(f"{len(found)} results match {fields}")
        return found[0] if found else None

    def value(self, **fields):
        """The value of the single matching row, or None."""
        row = self.one(**fields)
        return None if row is None else row.value

    def sibling(self, row: Result, metric: str) -> Result | None:
        """The row of the same set, subject and part as `row`, for another `metric`."""
        return self.one(section=row.section, set=row.set, choice=row.choice, space=row.space, baseline=row.baseline,
                        part=row.part, subject=row.subject, metric=metric)

    def flat(self) -> dict:
        """`metrics.json`: every row flattened (strict JSON: a non-finite float is None)."""
        out: dict = {}
        for row in self.rows:
            out.update(row.flat())
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}

    def write(self, path: Path) -> None:
        """`results.json`: the rows as JSON objects (a non-finite float is None), for the jobs that read
        an evaluation back (`read_results`)."""
        rows = [{k: _finite(v) for k, v in asdict(row).items()} for row in self.rows]
        for row in rows:
            if row["interval"] is not None:
                row["interval"] = [_finite(v) for v in row["interval"]]
        write_json(path, {"format": FORMAT, "rows": rows})


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_results(path: Path) -> Results:
    """The rows that `Results.write` wrote to `path`; a file of another format is a B2MError naming it."""
    data = read_json_object(path, "evaluation results")
    names = {f.name for f in fields(Result)}
    try:
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
        rows = []
        for item in data["rows"]:
            if not isinstance(item, dict) or set(item) != names:
                raise ValueError(f"a row with fields {sorted(item) if isinstance(item, dict) else item!r:.200}")
            interval = item["interval"]
            rows.append(Result(**item | {"interval": None if interval is None else tuple(interval)}))
    except (KeyError, TypeError, ValueError) as err:
        raise B2MError(f"{path}: not the results of a b2m evaluation ({err}); evaluate the run again") from None
    return Results(rows)


def subject_means(per_subject: list[Result], sd: bool = True) -> list[Result]:
    """`per_subject` rows and, for each distinct row over subjects, the mean row: the mean of the subjects
    that have a value (None where none has), with `sd` the sd across them (ddof 1; 0 for one subject;
    NaN where none has a value). Interval and n of the mean rows are set by the caller."""
    groups: dict[Result, list[Result]] = {}
    for row in per_subject:
        groups.setdefault(replace(row, subject=None, value=None, interval=None, sd=None, n=None), []).append(row)
    means = []
    for template, rows in groups.items():
        values = [r.value for r in rows if r.value is not None]
        spread = None
        if sd:
            spread = float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else float("nan"))
        means.append(replace(template, value=float(np.mean(values)) if values else None, sd=spread))
    return list(per_subject) + means
