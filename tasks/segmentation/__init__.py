"""Semantic segmentation (work in progress: the evaluator; the task is not registered yet)."""
