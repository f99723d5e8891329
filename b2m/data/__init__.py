"""The data layer: BIDS (ds003720 layout) reading, lazy NIfTI, preprocessing, samples, stimuli and captions."""
