"""The evaluation's tables and terminal lines, rendered from its results (`b2m.evaluation.results`):
what summary.md, the HTML report and the command line show. Rows are found by their fields."""

from __future__ import annotations

from dataclasses import dataclass

from b2m.core.clips import GENRES
from b2m.core.metrics import METRICS
from b2m.evaluation.results import CHANCE, Result, Results

# The columns of the decoding tables: every metric on standardised dimensions, then identification
# on the raw vectors.
TABLE_METRICS = (*METRICS, "id_acc_raw")
SCORED = ("decoding", "reconstruction")
CAVEAT_MARK = " †"


@dataclass(frozen=True)
class Table:
    """A table as text: `title` (a heading), `caption` (a sentence above it), `header` and `rows` of
    cells, and `notes` (caveats said under it)."""

    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    notes: tuple[str, ...] = ()


def fmt(value) -> str:
    """A value with 3 decimals, `n/a` for a missing one."""
    return "n/a" if value is None else f"{value:.3f}"


def with_ci(row: Result | None) -> str:
    """`0.712 [0.650, 0.770]`, or the bare value when the row has no interval (`n/a` without a row)."""
    if row is None:
        return "n/a"
    if row.interval is None:
        return fmt(row.value)
    return f"{fmt(row.value)} [{fmt(row.interval[0])}, {fmt(row.interval[1])}]"


def label(row: Result) -> str:
    """What a table or figure calls the row's set, marked when it carries a caveat."""
    return row.name + (CAVEAT_MARK if row.caveat else "")


def _notes(rows: list[Result]) -> tuple[str, ...]:
    """One note per distinct caveat of `rows` (the rows carry its mark)."""
    return tuple(f"{CAVEAT_MARK.strip()} {caveat}" for caveat in dict.fromkeys(r.caveat for r in rows if r.caveat))


def scored_sets(results: Results) -> list[Result]:
    """The mean id_acc row of every scored set (`test`, baselines, reconstructions), in order: the rows
    of the decoding table and of the identification figure."""
    return results.select(section=SCORED, metric="id_acc", subject=None)


def decoding_table(results: Results) -> Table:
    sets = scored_sets(results)
    rows = [[label(r)] + [with_ci(results.sibling(r, m)) for m in TABLE_METRICS] for r in sets]
    return Table("Decoding and reconstruction",
                 "Scores that correlate embeddings are computed on dimensions standardised with the training "
                 "clips' mean and sd; `id_acc_raw` identifies on the raw vectors.",
                 ["set", *TABLE_METRICS], rows, _notes(sets))


def selection_table(results: Results) -> Table | None:
    """id_acc of brain-selected, first and random candidates and the paired differences, per kind and space."""
    firsts = results.select(section="selection", choice="brain_minus_first", metric="id_acc", subject=None)
    if not firsts:
        return None
    rows = []
    for diff in firsts:
        same = dict(set=diff.set, space=diff.space, baseline="", metric="id_acc", subject=None)
        cells = [with_ci(results.one(section="reconstruction", choice=c, **same)) for c in ("brain", "first", "random")]
        cells += [with_ci(results.one(section="selection", choice=f"brain_minus_{c}", **same))
                  for c in ("first", "random")]
        rows.append([f"{diff.set}/{diff.space}" + (CAVEAT_MARK if diff.caveat else ""), *cells])
    return Table("Brain-guided selection",
                 "Identification accuracy of the candidate whose BOLD, predicted by an encoding model fitted on the "
                 "training runs, best matches the measured test BOLD, beside the first candidate (the decoder's "
                 "nearest file, or sample 0) and a random one; the differences are paired (same bootstrap draws "
                 "of clips).",
                 ["reconstruction", "selected (brain)", "first", "random", "selected - first", "selected - random"],
                 rows, _notes(firsts))


def genre_rows(results: Results) -> list[Result]:
    """The mean genre-accuracy row of every classified set (`true`, `pred`, reconstructions), in order."""
    return [r for r in results.select(section="genre", metric="acc", part="", subject=None) if r.set]


def genre_table(results: Results) -> Table | None:
    sets = genre_rows(results)
    if not sets:
        return None
    rows = [[label(r), with_ci(r), fmt(_value(results.sibling(r, "top3"))), fmt(_value(results.sibling(r, "agreement")))]
            for r in sets]
    return Table("Genre class agreement",
                 "A logistic regression trained on the true embeddings of the training clips classifies the decoded "
                 "ones; `true` is its accuracy on the true test embeddings (the ceiling); `agreement`: same genre as "
                 "the true embedding.", ["set", "accuracy", "top-3", "agreement"], rows, _notes(sets))


def tag_table(results: Results) -> Table | None:
    """Tag agreement of every reconstruction set, its shuffled baseline and the stimulus-track ceiling."""
    rows = results.select(section="tags", subject=None)
    metrics = list(dict.fromkeys(r.metric for r in rows))
    sets = [r for r in rows if r.metric == metrics[0]] if rows else []
    if not sets:
        return None
    return Table("Tag agreement (musicnn)",
                 "A trained music tagger (musicnn) tags each stimulus excerpt and each reconstruction; per clip, the "
                 "Pearson r of the two taggrams over the 50 tags, the share of the stimulus's top tags among the "
                 "reconstruction's, and the same top genre tag; `stimulus_track` (the track the excerpt was cut "
                 "from) is the ceiling.", ["set", *metrics],
                 [[label(r)] + [with_ci(results.sibling(r, m)) for m in metrics] for r in sets], _notes(sets))


def listening_table(results: Results, level: float) -> Table | None:
    """The human-identification table: one row per method over all subjects, then per subject and method."""
    overall = results.select(section="listening", metric="accuracy", subject=None)
    if not overall:
        return None
    per_subject = [r for r in results.select(section="listening", metric="accuracy") if r.subject is not None]
    rows = [[r.set, "all", with_ci(r), str(r.n), str(results.sibling(r, "n_listeners").value)] for r in overall]
    rows += [[r.set, r.subject, with_ci(r), str(r.n), ""] for r in per_subject]
    n = results.value(section="listening", set="", metric="n_listeners", subject=None)
    return Table("Human identification (listening test)",
                 f"Two-alternative forced choice (report/listen.html): the share of trials in which listeners picked "
                 f"the excerpt's reconstruction over another clip's (chance 0.5), with {level:.0%} exact binomial "
                 f"intervals over trials; {n} listener(s).", ["method", "subjects", "accuracy", "trials", "listeners"],
                 rows)


def logo_table(results: Results) -> Table | None:
    rows = [[g, fmt(results.value(section="logo", set=g, metric="within", subject=None)),
             fmt(results.value(section="logo", set=g, metric="all", subject=None))]
            for g in GENRES if results.one(section="logo", set=g, metric="all", subject=None)]
    if not rows:
        return None
    return Table("Leave one genre out", "Identification of each held-out genre's test clips among themselves "
                 "(`within`) and among all test clips (`all`).", ["held-out genre", "within", "all"], rows)


def encoding_table(results: Results) -> Table | None:
    rows = sorted(["/".join(p for p in (r.name, r.part, r.metric) if p), fmt(r.value)]
                  for r in results.select(section="encoding", subject=None) if isinstance(r.value, (int, float)))
    if not rows:
        return None
    return Table("Encoding models", "Voxelwise Pearson r on the test runs (mean over subjects); maps and "
                 "per-subject tables in `encoding/`.", ["key", "value"], rows)


def tables(results: Results) -> list[Table]:
    """Every table of an evaluation, in the order summary.md and the report show them."""
    level = results.value(section="run", metric="ci_level")
    found = [decoding_table(results), selection_table(results), genre_table(results), tag_table(results),
             listening_table(results, level), logo_table(results), encoding_table(results)]
    return [t for t in found if t is not None]


def _value(row: Result | None):
    return None if row is None else row.value


def terminal_lines(results: Results) -> list[str]:
    """The command line's result lines: the decoder's test identification with its baselines, each
    reconstruction set, each listening method and the genre of the predictions."""
    level = f"{results.value(section='run', metric='ci_level'):.0%}"

    def ci(row: Result) -> str:
        return f"{level} CI {fmt(row.interval[0])}-{fmt(row.interval[1])}"

    test = results.one(section="decoding", set="test", metric="id_acc", subject=None)
    base = {name: results.value(section="decoding", set="baseline", baseline=name, metric="id_acc", subject=None)
            for name in ("mean_train", "shuffled")}
    lines = [f"test/id_acc = {fmt(test.value)} ({ci(test)}; baselines: mean {fmt(base['mean_train'])}, "
             f"shuffled {fmt(base['shuffled'])}; chance {CHANCE['id_acc']})",
             "test: " + ", ".join(f"{m} {fmt(_value(results.sibling(test, m)))}" for m in TABLE_METRICS[1:])]
    for row in results.select(section=("reconstruction", "selection"), baseline="", metric="id_acc", subject=None):
        caveat = f"; {row.caveat}" if row.caveat else ""
        lines.append(f"{row.name}/id_acc = {fmt(row.value)} ({ci(row)}{caveat})")
    for row in results.select(section="tags", baseline="", metric="taggram_r", subject=None):
        caveat = f"; {row.caveat}" if row.caveat else ""
        lines.append(f"tags/{row.name}/taggram_r = {fmt(row.value)} ({ci(row)}{caveat})")
    for row in results.select(section="listening", metric="accuracy", subject=None):
        lines.append(f"listening/{row.set}/accuracy = {fmt(row.value)} ({ci(row)}, {row.n} trials; chance 0.5)")
    pred = results.value(section="genre", set="pred", metric="acc", part="", subject=None)
    if pred is not None:
        true = results.value(section="genre", set="true", metric="acc", part="", subject=None)
        lines.append(f"genre/pred/acc = {fmt(pred)} (chance {CHANCE['genre']:g}; true embeddings {fmt(true)})")
    return lines
