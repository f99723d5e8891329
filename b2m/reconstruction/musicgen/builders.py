"""Config to MusicGen engine: named random architectures, pretrained weights.

`tiny` (tests, demo) and `small` (benchmarks) are random architectures (`b2m.targets.pretrained`,
whose `encodec` and `musicgen_lm` spaces read the same models). Both build a transformers
`MusicgenConfig` (T5 text encoder, EnCodec 32 kHz codec, MusicGen decoder) so that the random
model is a real `MusicgenForConditionalGeneration`: the engine loads it through the same name
table as a pretrained checkpoint, and transformers' `generate` on the same object is the
reference. `weights` of a pretrained generator is a folder or a hub id in the local cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from b2m.core.errors import B2MError
from b2m.reconstruction.musicgen.lm import MusicGenLM
from b2m.reconstruction.musicgen.loaders import (codec_from_audiocraft, lm_from_audiocraft, lm_from_transformers,
                                                 load_transformers)
from b2m.targets.pretrained import model_folder, random_musicgen

# The generators built with seeded random weights (offline): their audio tests the pipeline, and
# evaluation labels it so (it is noise, not a reconstruction).
RANDOM_GENERATORS = ("tiny", "small")


def build_generator(gen: DictConfig) -> tuple[MusicGenLM, Any]:
    """(LM in fp32, EnCodec model) for `generator.name` tiny|small (random) or pretrained."""
    if gen.name in RANDOM_GENERATORS:
        model = random_musicgen(gen.name)
        return lm_from_transformers(model, f"random {gen.name}"), model.audio_encoder
    if gen.name != "pretrained":
        raise B2MError(f"generator.name: {gen.name!r} is not one of tiny, small, pretrained")
    if not gen.weights:
        raise B2MError("generator.weights: a pretrained generator needs a folder or a Hugging Face hub id")
    if gen.format == "transformers":
        model = load_transformers(model_folder(str(gen.weights), "generator.weights"))
        return lm_from_transformers(model, str(gen.weights)), model.audio_encoder
    if gen.format == "audiocraft":  # a folder with audiocraft's two files
        folder = Path(gen.weights)
        lm = lm_from_audiocraft(folder / "state_dict.bin")
        return lm, codec_from_audiocraft(folder / "compression_state_dict.bin")
    raise B2MError(f"generator.format: {gen.format!r} is not one of transformers, audiocraft")
