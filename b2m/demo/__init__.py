"""The offline demo dataset: a ds003720-shaped BIDS dataset with synthetic stimuli and simulated BOLD."""
