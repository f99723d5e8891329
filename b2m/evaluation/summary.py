"""`summary.md`: the evaluation's tables in Markdown, built from the flat metrics dict."""

from __future__ import annotations

from pathlib import Path

from b2m.core.clips import GENRES
from b2m.core.io import write_text
from b2m.core.metrics import METRICS

CHANCE = {"id_acc": 0.5, "genre": 1 / len(GENRES)}
# The columns of the decoding tables: every metric on standardised dimensions, then identification
# on the raw vectors.
TABLE_METRICS = (*METRICS, "id_acc_raw")


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def with_ci(metrics: dict, key: str) -> str:
    """`0.712 [0.650, 0.770]`, or the bare value when the key has no interval."""
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    text = fmt(metrics.get(key))
    return text if low is None else f"{text} [{fmt(low)}, {fmt(high)}]"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def decoding_prefixes(metrics: dict) -> list[str]:
    """The scored sets of the decoding table (`test`, baselines, reconstructions), in insertion order;
    the differences of brain-guided selection have their own table (`selection_rows`)."""
    return [k[: -len("/id_acc")] for k in metrics
            if k.endswith("/id_acc") and not k.startswith(("sub-", "genre/", "logo/", "encoding/"))
            and "/brain_minus_" not in k]


SELECTION_HEADER = ["reconstruction", "selected (brain)", "first", "random", "selected - first",
                    "selected - random"]


def selection_rows(metrics: dict) -> list[list[str]]:
    """id_acc of brain-selected, first and random candidates and the paired differences, per kind and space."""
    rows = []
    for key in metrics:
        kind, found, space = key.partition("/brain_minus_first/")
        if found and space.endswith("/id_acc") and not key.startswith("sub-"):
            space = space[: -len("/id_acc")]
            rows.append([f"{kind}/{space}"] + [with_ci(metrics, f"{kind}/{c}/{space}/id_acc")
                                               for c in ("brain", "first", "random")]
                        + [with_ci(metrics, f"{kind}/brain_minus_{c}/{space}/id_acc") for c in ("first", "random")])
    return rows


def genre_sets(metrics: dict) -> list[str]:
    """The sets the genre classifier scored (`true`, `pred`, `retrieval/acoustic`, ...), in insertion order."""
    return [k[len("genre/"): -len("/acc")] for k in metrics
            if k.startswith("genre/") and k.endswith("/acc") and k.count("/") >= 2]


def listening_table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """The human-identification table as text: header and rows, one per method over all subjects,
    then one per subject and method; no rows when `metrics` has no listening keys."""
    header = ["method", "subjects", "accuracy", "trials", "listeners"]
    rows = []
    for key in metrics:
        if key.startswith("listening/") and key.endswith("/accuracy"):
            prefix = key[: -len("/accuracy")]
            rows.append([prefix[len("listening/"):], "all", with_ci(metrics, f"{prefix}/accuracy"),
                         str(metrics[f"{prefix}/n_trials"]), str(metrics[f"{prefix}/n_listeners"])])
    for key in metrics:
        subject, sep, rest = key.partition("/listening/")
        if sep and rest.endswith("/accuracy"):
            prefix = key[: -len("/accuracy")]
            rows.append([rest[: -len("/accuracy")], subject, with_ci(metrics, f"{prefix}/accuracy"),
                         str(metrics[f"{prefix}/n_trials"]), ""])
    return header, rows


def summary_lines(metrics: dict, figures: list[str], notes: list[str]) -> list[str]:
    level = metrics.get("ci_level", 0.95)
    lines = ["# Evaluation summary", "",
             f"{metrics.get('n_test_clips')} test clips per subject; values are means over subjects with "
             f"{level:.0%} bootstrap intervals over clips ({metrics.get('n_boot')} resamples). "
             "Identification accuracy: chance 0.5; genre accuracy: chance 0.1.", "",
             "## Decoding and reconstruction", ""]
    rows = [[p] + [with_ci(metrics, f"{p}/{m}") for m in TABLE_METRICS] for p in decoding_prefixes(metrics)]
    lines += ["Scores that correlate embeddings are computed on dimensions standardised with the training "
              "clips' mean and sd; `id_acc_raw` identifies on the raw vectors.", ""]
    lines += table(["set"] + list(TABLE_METRICS), rows)
    if selection_rows(metrics):
        lines += ["", "## Brain-guided selection", "",
                  "Identification accuracy of the candidate whose BOLD, predicted by an encoding model fitted on "
                  "the training runs, best matches the measured test BOLD, beside the first candidate (the "
                  "decoder's nearest file, or sample 0) and a random one; the differences are paired (same "
                  "bootstrap draws of clips).", ""]
        lines += table(SELECTION_HEADER, selection_rows(metrics))
    if genre_sets(metrics):
        lines += ["", "## Genre class agreement", "",
                  "A logistic regression trained on the true embeddings of the training clips classifies the "
                  "decoded ones; `true` is its accuracy on the true test embeddings (the ceiling); `agreement`: "
                  "same genre as the true embedding.", ""]
        rows = [[s, with_ci(metrics, f"genre/{s}/acc"), fmt(metrics.get(f"genre/{s}/top3")),
                 fmt(metrics.get(f"genre/{s}/agreement"))] for s in genre_sets(metrics)]
        lines += table(["set", "accuracy", "top-3", "agreement"], rows)
    header, rows = listening_table(metrics)
    if rows:
        lines += ["", "## Human identification (listening test)", "",
                  f"Two-alternative forced choice (report/listen.html): the share of trials in which listeners "
                  f"picked the excerpt's reconstruction over another clip's (chance 0.5), with {level:.0%} exact "
                  f"binomial intervals over trials; {metrics.get('listening/n_listeners')} listener(s).", ""]
        lines += table(header, rows)
    if any(k.startswith("logo/") for k in metrics):
        lines += ["", "## Leave one genre out", "",
                  "Identification of each held-out genre's test clips among themselves (`within`) and among all "
                  "test clips (`all`).", ""]
        rows = [[g, fmt(metrics.get(f"logo/{g}/within")), fmt(metrics.get(f"logo/{g}/all"))]
                for g in GENRES if f"logo/{g}/all" in metrics]
        lines += table(["held-out genre", "within", "all"], rows)
    encoding = sorted(k for k in metrics if k.startswith("encoding/") and not k.startswith("encoding/sub-"))
    if encoding:
        lines += ["", "## Encoding models", "", "Voxelwise Pearson r on the test runs (mean over subjects); "
                  "maps and per-subject tables in `encoding/`.", ""]
        lines += table(["key", "value"], [[k[len("encoding/"):], fmt(metrics[k])] for k in encoding
                                          if isinstance(metrics[k], (int, float))])
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if figures:
        lines += ["", "## Figures", "", "Each PNG has a vector copy beside it (`.svg`, for papers).", ""]
        lines += [f"![{name}]({name})" for name in figures]
    return lines


def write_summary(path: Path, metrics: dict, figures: list[str], notes: list[str]) -> None:
    """Write the Markdown summary (figures linked relative to its folder)."""
    write_text(path, "\n".join(summary_lines(metrics, figures, notes)) + "\n")
