"""Turning predicted embeddings into music: retrieval from a database and the MusicGen engine.

- `retrieval`: index a folder of audio in an embedding space; cosine top-k per prediction.
- `lm`: the MusicGen language model, its preallocated KV cache and sampling loop.
- `loaders`: weights from transformers (`facebook/musicgen-*`) and audiocraft checkpoints.
- `codec`: EnCodec codes to 32 kHz waveforms, in chunks.
- `configs`: named random architectures (`tiny`, `small`).
- `run`: batch generation from a training run's predictions through Lightning's predict loop.
"""
