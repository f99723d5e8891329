"""The data layer: BIDS (ds003720 layout) reading, preprocessing, samples and the demo dataset."""
