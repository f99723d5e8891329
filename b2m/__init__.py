"""b2m: reconstruct music from fMRI (Brain2Music line of work)."""

__version__ = "0.1.0"
