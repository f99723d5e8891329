"""Test helpers: small datasets (`bids`, `tuned_bids`) and embedding spaces (`spaces`)."""
