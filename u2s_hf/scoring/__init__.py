"""Metric math as plain functions over lists of images and strings (the `evaluate` modules wrap these).

Each returns the mean under the metric's own name and per-item values; None marks a value that is undefined.
"""

from .clip import PAPER_CLIP, clip_score
from .faces import face_similarity
from .inspection import PAPER_GROUPS, inspection_scores
from .judge import list_groups, read_text, vlm_score
from .perceptual import lpips, ssim
from .privacy import RACE_CATEGORIES, race_entropy, race_labels_to_counts, text_similarity
from .utility import PAPER_BACKBONE, train_eval_classifier

__all__ = [
    "PAPER_BACKBONE",
    "PAPER_CLIP",
    "PAPER_GROUPS",
    "RACE_CATEGORIES",
    "clip_score",
    "face_similarity",
    "inspection_scores",
    "list_groups",
    "lpips",
    "race_entropy",
    "race_labels_to_counts",
    "read_text",
    "ssim",
    "text_similarity",
    "train_eval_classifier",
    "vlm_score",
]
