"""Generation engine: batched, mixed-precision MusicGen conditioned on decoded embeddings.

- `lm`: the MusicGen language model, its preallocated KV cache and sampling loop.
- `loaders`: weights from transformers (`facebook/musicgen-*`) and audiocraft checkpoints.
- `codec`: EnCodec codes to 32 kHz waveforms, in chunks.
- `configs`: named random architectures (`tiny`, `small`).
- `run`: batch generation from a training run's predictions through Lightning's predict loop.
"""
