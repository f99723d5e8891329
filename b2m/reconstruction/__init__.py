"""Reconstruction: turning decoded embeddings into music.

- `retrieval`: index a folder of audio in an embedding space; cosine top-k per prediction.
- `musicgen`: the MusicGen engine (`lm`: the language model, its KV cache and sampling loop;
  `loaders`: transformers and audiocraft weights; `codec`: EnCodec decoding; `builders`:
  config to engine; `batch`: batch generation through Lightning's predict loop).

Each writes a manifest of the audio it produced and reads it back for evaluation as
`Reconstructions`: subject -> clip id -> audio files, best rank / sample 0 first.
"""

from __future__ import annotations

from pathlib import Path

from b2m.core.errors import B2MError

Reconstructions = dict[str, dict[str, list[Path]]]


def check_files_exist(manifest: Path, per_clip: dict[str, list[Path]]) -> None:
    """A B2MError naming the manifest unless every file it lists exists."""
    for clip_id, files in per_clip.items():
        for path in files:
            if not path.is_file():
                raise B2MError(f"{manifest}: {path} (clip {clip_id}) not found")
