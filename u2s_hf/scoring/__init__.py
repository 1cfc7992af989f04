"""Metric math as plain functions over lists of images and strings (the `evaluate` modules wrap these).

The per-image metrics (`clip_score`, `ssim`, `lpips`, `face_similarity`, `text_similarity`, `vlm_score`) return a
dict with the mean under the metric's own name, how many items it is over and how many were left out (`ssim_scored`
/ `ssim_missing`; FaceSim counts faces: `faces_scored`, `faces_total`, `face_unreadable`; TextSim its `excluded`
pairs), and the per-item values (`per_image`; `per_pair` for TextSim); None marks a value that is undefined or an
image that could not be read (left out of the mean, counted). The helpers return what they name: `read_text` and
`list_groups` one entry per image, `race_category` the group one label names, `race_labels_to_counts` the five
counts, `race_entropy` a number (or None), `inspection_scores` precision/recall/F1 overall and per group with its
counts, `train_eval_classifier` the accuracy, its counts and the predictions.
"""

from .clip import PAPER_CLIP, clip_score
from .faces import face_similarity
from .inspection import PAPER_GROUPS, inspection_scores
from .judge import list_groups, read_text, vlm_score
from .perceptual import lpips, ssim
from .privacy import RACE_CATEGORIES, race_category, race_entropy, race_labels_to_counts, text_similarity
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
    "race_category",
    "race_entropy",
    "race_labels_to_counts",
    "read_text",
    "ssim",
    "text_similarity",
    "train_eval_classifier",
    "vlm_score",
]
