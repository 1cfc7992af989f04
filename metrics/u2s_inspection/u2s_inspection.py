"""u2s_inspection: Stage 1's privacy flag against VISPR-style attribute labels (precision, recall, F1)."""

from typing import ClassVar

import datasets
import evaluate

from u2s_hf import evaluation, metric_module, scoring

_DESCRIPTION = """Precision, recall and F1 of a binary privacy flag (private = positive) against VISPR-style attribute
labels, where an image is safe iff its only label is a0_safe: the Stage-1 check of Unsafe2Safe (CVPR 2026). Scored
for all images and for attribute groups (the paper's: face a9/a10, health a39/a41/a43, vehicles a102-a104,
opinion a61/a62); a group is scored on the images carrying one of its attributes (positives) against the safe
images (negatives="safe", the default) or against every other labelled image (negatives="others")."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the privacy flag per image (bool, e.g. the privacy_flag column; None counts as flagged, the
        pipeline's fail-closed rule).
    references: the attribute labels per image (lists of strings like "a9_face_complete" or "a0_safe"; an empty
        list or None leaves the image out of every score).
Settings (evaluate.load or compute): groups ({name: [attribute ids]}, default the paper's groups), negatives
    ("safe": a group against the safe images; "others": against every labelled image without the group's
    attributes).
Returns:
    {"all": {...}, "<group>": {...}, "scored": n, "unlabelled": n, "unflagged": n}: each block has precision,
    recall and f1 (None where undefined), images (its positives) and negatives (its negatives); scored counts the
    labelled images, unlabelled the images left out for having no labels, unflagged the labelled images with no
    flag (counted as flagged).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class U2sInspection(metric_module.U2sMetric):
    SETTINGS: ClassVar[dict] = {"groups": None, "negatives": "safe"}  # groups None: the paper's groups

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=evaluation.CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("bool"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references, **settings):
        s = self.settings_for(settings)
        return scoring.inspection_scores(
            predictions,
            references,
            groups=scoring.PAPER_GROUPS if s["groups"] is None else s["groups"],
            negatives=s["negatives"],
        )
