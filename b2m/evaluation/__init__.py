"""Evaluation: identification accuracy and retrieval metrics, baselines, reports."""
