"""Metric math as plain functions over lists of images and strings (the `evaluate` modules wrap these).

Each returns the mean under the metric's own name and per-item values; None marks a value that is undefined.
"""
from .inspection import PAPER_GROUPS, inspection_scores
from .perceptual import ssim
from .privacy import RACE_CATEGORIES, race_entropy, race_labels_to_counts, text_similarity

__all__ = ["PAPER_GROUPS", "RACE_CATEGORIES", "inspection_scores", "race_entropy", "race_labels_to_counts", "ssim",
           "text_similarity"]
