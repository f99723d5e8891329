"""The jobs, each `job(cfg) -> results`: `train`, `evaluate`, `generate`, `retrieve`; `cli` runs them
from the command line (Hydra)."""
