"""Brain2Music's comparison of embedding spaces in one command: every space x decoder x subject.

    python -m b2m.experiments.brain2music [--spaces clap mert ...] [--decoders ridge ...]
        [--weights clap=laion/larger_clap_music_and_speech ...] [--out DIR] [--n-boot N] [KEY=VALUE ...]

For each space and decoder, one `train` run over the subjects (`data.subjects`; the
KEY=VALUE overrides go to every run, e.g. `data.root=...`), then `evaluate` (bootstrap
intervals over test clips; genre, leave-one-genre-out and the report off). Then one table
in the style of the paper's Table 2: identification accuracy mean +- sd over subjects with
its interval, top-1, the raw-vector score and the shuffled baseline (chance: 0.5 and 1/60),
as `<out>/table.md` and `<out>/table.png`. Finished runs are skipped, so a killed
comparison resumes. With the offline models (`weights: tiny`) it is a smoke test of the
whole comparison; with real weights (`--weights`, see the README's table of spaces) it is
the reproduction.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from b2m.core.config import choices, compose
from b2m.core.errors import B2MError
from b2m.core.io import atomic_path, write_text
from b2m.evaluation.results import Result, Results, read_results
from b2m.jobs.evaluate import evaluate
from b2m.jobs.train import train
from b2m.targets import space_by_name

SPACES = ("clap", "clap_text", "mert", "encodec", "musicgen_lm", "musicnn", "acoustic", "caption", "musicgen_text")


@dataclass(frozen=True)
class Row:
    space: str
    modality: str
    decoder: str
    results: Results

    def get(self, metric: str, baseline: str = "") -> Result:
        """The mean over subjects of the test predictions' `metric` (or of a `baseline`'s)."""
        return self.results.one(section="decoding", set="baseline" if baseline else "test", baseline=baseline,
                                metric=metric, subject=None)

    @property
    def id_acc(self) -> float:
        return _number(self.get("id_acc").value)


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m b2m.experiments.brain2music", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spaces", nargs="+", default=list(SPACES))
    parser.add_argument("--decoders", nargs="+", default=["ridge"])
    parser.add_argument("--weights", nargs="*", default=[], metavar="SPACE=WEIGHTS",
                        help="target.weights per space: a folder or a hub id in the local Hugging Face cache")
    parser.add_argument("--out", type=Path, default=Path("outputs/brain2music"))
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides for every training run")
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> dict[str, str]:
    """Every name and override is valid before anything runs; returns the weights per space."""
    for name in args.spaces:
        if name not in choices("target"):
            raise B2MError(f"--spaces: no target config {name!r}; known: {choices('target')}")
    for name in args.decoders:
        if name not in choices("decoder"):
            raise B2MError(f"--decoders: no decoder config {name!r}; known: {choices('decoder')}")
    weights = {}
    for item in args.weights:
        space, sep, value = item.partition("=")
        if not sep or space not in args.spaces:
            raise B2MError(f"--weights: expected SPACE=WEIGHTS for one of --spaces, got {item!r}")
        weights[space] = value
    if args.n_boot < 1:
        raise B2MError(f"--n-boot: {args.n_boot} is not >= 1")
    for space in args.spaces:
        compose("train", run_overrides(args, space, args.decoders[0], weights))  # unknown keys fail here
    return weights


def run_overrides(args: argparse.Namespace, space: str, decoder: str, weights: dict[str, str]) -> list[str]:
    extra = [f"target.weights={weights[space]}"] if space in weights else []
    return list(args.overrides) + [f"target={space}", f"decoder={decoder}", "trainer.logger=none",
                                   f"out_dir={args.out / f'{space}-{decoder}' / 'run'}"] + extra


def run_one(args: argparse.Namespace, space: str, decoder: str, weights: dict[str, str]) -> Results:
    """Train and evaluate one space x decoder (skipped when its evaluation is on disk); its results."""
    folder = args.out / f"{space}-{decoder}"
    done = folder / "evaluate" / "results.json"
    if done.is_file():
        return read_results(done)
    if not (folder / "run" / "metrics.json").is_file():
        train(compose("train", run_overrides(args, space, decoder, weights)))
    return evaluate(compose("evaluate", [f"run={folder / 'run'}", f"out_dir={folder / 'evaluate'}",
                                         f"n_boot={args.n_boot}", "genre=false", "logo=false",
                                         "report.enabled=false"]))


def markdown(rows: list[Row], subjects: int) -> str:
    lines = [f"# Embedding spaces compared ({subjects} subject(s), test clips)", "",
             "Identification accuracy on standardised dimensions (chance 0.5): mean +- sd over subjects, with "
             "its bootstrap 95% interval over test clips; top-1 (chance 1/60); id_acc on raw vectors; the "
             "shuffled-prediction baseline.", "",
             "| space | modality | decoder | id_acc | 95% CI | top-1 | id_acc raw | shuffled |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r.id_acc):
        acc = r.get("id_acc")
        low, high = acc.interval
        lines.append(f"| {r.space} | {r.modality} | {r.decoder} | {_number(acc.value):.3f} +- {_number(acc.sd):.3f} | "
                     f"{_number(low):.3f}-{_number(high):.3f} | {_number(r.get('top1').value):.3f} | "
                     f"{_number(r.get('id_acc_raw').value):.3f} | {_number(r.get('id_acc', 'shuffled').value):.3f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r.id_acc)
    y = np.arange(len(rows))
    acc = np.array([r.id_acc for r in rows])
    low = acc - np.array([_number(r.get("id_acc").interval[0]) for r in rows])
    high = np.array([_number(r.get("id_acc").interval[1]) for r in rows]) - acc
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.4))
    colours = ["tab:blue" if r.modality == "audio" else "tab:orange" for r in rows]
    ax.barh(y, acc - 0.5, left=0.5, color=colours, xerr=[low, high], capsize=3)
    ax.scatter([_number(r.get("id_acc", "shuffled").value) for r in rows], y, marker="|", color="black", s=120,
               label="shuffled baseline", zorder=3)
    ax.axvline(0.5, color="grey", lw=1, ls="--")
    ax.set_yticks(y, [f"{r.space} ({r.decoder})" for r in rows])
    ax.set_xlabel("identification accuracy (test clips; bars: 95% CI; blue audio, orange text)")
    ax.set_xlim(0.4, 1.0)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        weights = check(args)
        rows = []
        pairs = [(s, d) for s in args.spaces for d in args.decoders]
        for space, decoder in tqdm(pairs, desc="brain2music", unit="run"):
            rows.append(Row(space, space_by_name(space).modality, decoder, run_one(args, space, decoder, weights)))
        subjects = len(compose("train", list(args.overrides)).data.subjects)
        write_text(args.out / "table.md", markdown(rows, subjects))
        plot(rows, args.out / "table.png")
    except B2MError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"table in {args.out / 'table.md'} and {args.out / 'table.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
