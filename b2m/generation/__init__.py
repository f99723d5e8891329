"""Turning predicted embeddings into music: retrieval from a database and the MusicGen engine."""
