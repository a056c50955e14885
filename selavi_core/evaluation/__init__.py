"""Scoring runs against ground truth where it exists: metrics, baselines, the evaluation report."""
