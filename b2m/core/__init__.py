"""The core that every layer may use and that uses no other part of b2m: clip ids, the error type,
atomic file output, configs, decoding metrics, the ridge solver and the run-folder contract."""
