"""`summary.md`: the evaluation's tables (`b2m.evaluation.tables`) in Markdown."""

from __future__ import annotations

from pathlib import Path

from b2m.core.io import write_text
from b2m.evaluation.results import CHANCE, Results
from b2m.evaluation.tables import Table, tables


def markdown_table(table: Table) -> list[str]:
    """A table as a Markdown section: heading, caption, the table and its notes."""
    lines = ["", f"## {table.title}", "", table.caption, "",
             "| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return lines + ([""] + list(table.notes) if table.notes else [])


def summary_lines(results: Results, figures: list[str], notes: list[str]) -> list[str]:
    level = results.value(section="run", metric="ci_level")
    lines = ["# Evaluation summary", "",
             f"{results.value(section='run', metric='n_test_clips')} test clips per subject; values are means over "
             f"subjects with {level:.0%} bootstrap intervals over clips ({results.value(section='run', metric='n_boot')} "
             f"resamples). Identification accuracy: chance {CHANCE['id_acc']}; genre accuracy: chance "
             f"{CHANCE['genre']:g}."]
    for table in tables(results):
        lines += markdown_table(table)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if figures:
        lines += ["", "## Figures", "", "Each PNG has a vector copy beside it (`.svg`, for papers).", ""]
        lines += [f"![{name}]({name})" for name in figures]
    return lines


def write_summary(path: Path, results: Results, figures: list[str], notes: list[str]) -> None:
    """Write the Markdown summary (figures linked relative to its folder)."""
    write_text(path, "\n".join(summary_lines(results, figures, notes)) + "\n")
