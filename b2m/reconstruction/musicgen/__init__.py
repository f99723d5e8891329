"""The MusicGen engine: `lm` (model, KV cache, sampling loop), `loaders` (weights), `codec` (EnCodec decoding), `builders` (config to engine), `batch` (generation over Lightning and its manifest)."""
