"""Evaluation metrics computed across ranks."""
