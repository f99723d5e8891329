"""What confound regression does on the demo's fMRIPrep layout: ridge id_acc per strategy, per world.

    python -m b2m.demo --layout fmriprep --out data/fmriprep
    python -m b2m.demo --layout fmriprep --world second --out data/fmriprep_second
    python bench/confounds.py [--world demo=data/fmriprep:data/demo] [--world second=...] [--subjects 1 2 3]

A world is `name=FMRIPREP_ROOT[:RAW_ROOT]`: the fMRIPrep-layout build and, optionally, the raw
build of the same world and seed, whose BOLD is the same without the artefacts (the
artefact-free ceiling). Voxels: the demo's cortex mask in every row where the world has one
(else fMRIPrep's brain mask, and b2m's automatic mask on the raw build). For each strategy the
default ridge decoder is fitted on the training split and scored on the validation clips
(`val`, what a default may be chosen on), then refitted on all training clips and scored on
the test clips (`test`, reported only). Prints one Markdown table: mean standardised id_acc
over subjects, and the volumes censored per run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from b2m.core.config import compose
from b2m.core.metrics import Standardiser, decoding_metrics
from b2m.data.confounds import load_run_confounds
from b2m.data.subjects import confound_config, dataset, load_subject
from b2m.decoders import build_decoder
from b2m.targets import build_space
from b2m.targets.dataset import clip_targets

STRATEGIES = {
    "none": ["data.confounds=[]"],
    "motion (6)": ["data.confounds=[motion]", "data.confound_options.motion=basic"],
    "motion (24)": ["data.confounds=[motion]"],
    "motion (6) + wm_csf": ["data.confounds=[motion,wm_csf]", "data.confound_options.motion=basic"],
    "motion (24) + wm_csf": ["data.confounds=[motion,wm_csf]"],
    "motion (24) + wm_csf + high_pass": ["data.confounds=[motion,wm_csf,high_pass]"],
    "motion (24) + wm_csf + scrub": ["data.confounds=[motion,wm_csf,scrub]"],
}
MASK = "derivatives/demo/{subject}/{subject}_desc-cortex_mask.nii.gz"


def scores(overrides: list[str], subject: int) -> tuple[float, float, int]:
    """(val id_acc, test id_acc, censored volumes per run) of the default ridge for one subject."""
    cfg = compose("train", overrides + [f"data.subjects=[{subject}]"])
    space = build_space(cfg.target)
    data = load_subject(cfg.data, f"sub-{subject:03d}", lambda clips: clip_targets(cfg.data, space, clips), 0)
    results = []
    for fit_x, fit_y, x, y in ((data.train.x, data.train.y, data.val.x, data.val.y),
                               (np.concatenate([data.train.x, data.val.x]), np.concatenate([data.train.y, data.val.y]),
                                data.test.x, data.test.y)):
        decoder = build_decoder(cfg.decoder, [data.data.n_voxels], len(cfg.data.delays_tr), space.shape)
        decoder.fit_closed_form(0, fit_x, fit_y)
        results.append(decoding_metrics(decoder.predict_windows(x, 0), y, Standardiser.fit(fit_y))["id_acc"])
    censored = 0.0
    if cfg.data.layout == "fmriprep":
        runs = [r for task in ("Training", "Test") for r in dataset(cfg.data).runs(f"sub-{subject:03d}", task)]
        censored = np.mean([load_run_confounds(r, confound_config(cfg.data), 410).censored.sum() for r in runs])
    return results[0], results[1], censored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", action="append", default=None,
                        help="name=FMRIPREP_ROOT[:RAW_ROOT] (default: demo and second)")
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    worlds = args.world or ["demo=data/fmriprep:data/demo", "second=data/fmriprep_second:data/second"]
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    names = []
    for world in worlds:
        name, spec = world.split("=", 1)
        prep, _, raw = spec.partition(":")
        names.append(name)
        # The cortex mask where the world ships one; else fMRIPrep's brain mask and, raw, b2m's automatic one.
        has_cortex = (Path(prep) / MASK.format(subject="sub-001")).exists()
        mask = [f"data.preprocess.mask='{Path(prep) / MASK}'" if has_cortex else "data.preprocess.mask=null"]
        rows = {label: ["data=fmriprep", f"data.root={prep}"] + mask + o for label, o in STRATEGIES.items()}
        if raw:
            rows["raw BOLD, no artefacts"] = ["data=ds003720", f"data.root={raw}"] + mask
        for label, overrides in rows.items():
            per = [scores(overrides, s) for s in args.subjects]
            table.setdefault(label, {})[name] = tuple(np.mean([p[i] for p in per]) for i in range(3))
            print(f"  {name} {label}: val {table[label][name][0]:.3f} test {table[label][name][1]:.3f}", flush=True)
    header = "| confounds | " + " | ".join(f"{n} val | {n} test | {n} censored/run" for n in names) + " |"
    print("\n" + header)
    print("|---|" + "---|---|---|" * len(names))
    for label, cells in table.items():
        print(f"| {label} | " + " | ".join(f"{cells[n][0]:.3f} | {cells[n][1]:.3f} | {cells[n][2]:.1f}"
                                          if n in cells else "- | - | -" for n in names) + " |")


if __name__ == "__main__":
    main()
