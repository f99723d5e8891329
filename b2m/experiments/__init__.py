"""Experiments that combine jobs: `brain2music` (the comparison of embedding spaces)."""
