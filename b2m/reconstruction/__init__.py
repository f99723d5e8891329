"""Reconstruction: turning decoded embeddings into music.

- `retrieval`: index a folder of audio in an embedding space; cosine top-k per prediction.
- `musicgen`: the MusicGen engine (`lm`: the language model, its KV cache and sampling loop;
  `loaders`: transformers and audiocraft weights; `codec`: EnCodec decoding; `builders`:
  config to engine; `batch`: batch generation through Lightning's predict loop).

Each writes a manifest of the audio it produced and reads it back for evaluation as a
`Manifest`: subject -> clip id -> audio files (best rank / sample 0 first), with what each clip's
files were made from (the hash of its prediction row) and each file's sha256 when written. An output
folder is someone else's input: `Manifest.check` holds it to the run it is evaluated with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from b2m.core.errors import B2MError
from b2m.core.io import file_digest
from b2m.core.runs import Run, read_predictions

Reconstructions = dict[str, dict[str, list[Path]]]


def inside(folder: Path, name: Any, source: Path) -> Path:
    """`folder / name` for a file name a manifest gives relative to `folder`; a name that could leave the
    folder (absolute, `..`, empty parts) is a B2MError naming `source`."""
    parts = name.split("/") if isinstance(name, str) else []
    if not parts or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise B2MError(f"{source}: file {name!r} is not a path inside {folder}; the output is damaged or foreign")
    return folder / name


@dataclass
class Manifest:
    """What a retrieval or generation folder says it holds.

    `files[subject][clip_id]`: the audio files, best rank / sample 0 first; `inputs[subject][clip_id]`:
    the hash of the prediction row they were made from (`SubjectPredictions.input_hash`); `digests`:
    each file's sha256 when it was written; `sources[subject]`: the manifest file describing the
    subject, and `source_digests[subject]` its sha256 (what a selection file was made from);
    `random_weights`: some file was made by a random-weight generator (noise that tests the pipeline);
    `made_from[subject]`: the prediction file the subject's files were made from, where that may be
    another run's (generation conditions on predictions in the generator's own space, so the demo
    evaluates a run's decoder beside audio generated from a sibling run of the same subjects and clips).
    """

    folder: Path
    files: Reconstructions = field(default_factory=dict)
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    digests: dict[Path, str] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)
    source_digests: dict[str, str] = field(default_factory=dict)
    random_weights: bool = False
    made_from: dict[str, Path] = field(default_factory=dict)

    def check(self, run: Run) -> None:
        """A B2MError unless the folder covers every subject and test clip of `run`, made from the run's
        own predictions (or from the `made_from` file of the same test clips, unchanged since), with the
        same number of files per clip, each unchanged since it was written."""
        missing = sorted(set(run.subjects) - set(self.files))
        if missing:
            raise B2MError(f"{self.folder}: no reconstructions of {missing[0]}, a subject of run {run.path}; "
                           f"rerun retrieval or generation on this run")
        for subject, per_clip in self.files.items():
            source = self.sources[subject]
            if subject not in run.subjects:
                raise B2MError(f"{source}: subject {subject} has no predictions in {run.path / 'predictions'}")
            predictions, origin = run.subjects[subject], f"run {run.path}'s"
            other = self.made_from.get(subject)
            if other is not None and other.resolve() != (run.path / "predictions" / f"{subject}.npz").resolve():
                made = read_predictions(other)
                if list(made.clip_ids) != list(predictions.clip_ids):
                    raise B2MError(f"{source}: made from {other}, whose test clips of {subject} are not run "
                                   f"{run.path}'s; rerun it from a run of the same clips")
                predictions, origin = made, f"{other}'s"
            expected = {c: predictions.input_hash(i) for i, c in enumerate(predictions.clip_ids)}
            for clip_id in sorted(set(expected) | set(per_clip)):
                if clip_id not in per_clip:
                    raise B2MError(f"{source}: covers {len(per_clip)} of the {len(expected)} test clips of "
                                   f"{subject} (no {clip_id}); rerun it on the whole run")
                if clip_id not in expected:
                    raise B2MError(f"{source}: clip {clip_id} of {subject} is not among its test predictions")
                if self.inputs[subject].get(clip_id) != expected[clip_id]:
                    raise B2MError(f"{source}: clip {clip_id} of {subject} was made from other predictions than "
                                   f"{origin}; rerun it from this run")
            counts = {len(files) for files in per_clip.values()}
            if len(counts) > 1:
                raise B2MError(f"{source}: clips of {subject} have {min(counts)} to {max(counts)} files each; "
                               f"every clip needs the same number")
        for path, digest in self.digests.items():
            if not path.is_file():
                raise B2MError(f"{path}: listed in {self.folder} but not found")
            if file_digest(path) != digest:
                raise B2MError(f"{path}: changed since it was written into {self.folder} (sha256 differs); "
                               f"rerun retrieval or generation")
