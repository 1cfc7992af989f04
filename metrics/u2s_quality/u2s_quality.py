"""u2s_quality: does the anonymised image still show what its public caption says? (CLIP score, higher is better)"""

from typing import ClassVar

import datasets
import evaluate

from u2s_hf import evaluation, metric_module, scoring
from u2s_hf.scoring.clip import load_clip

_DESCRIPTION = """Cosine similarity between each anonymised image and its public caption (c_pub) under a CLIP model,
averaged over the pairs: the quality metric of Unsafe2Safe (CVPR 2026). The default model is the paper's CLIP
ViT-L/14 (open_clip "ViT-L-14/openai")."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: anonymised images (PIL images, paths, bytes or {"bytes", "path"} dicts).
    references: the public caption of each image (strings).
Settings (evaluate.load or compute): clip_model (open_clip id: "ARCH/PRETRAINED", "hf-hub:org/name" or
    "local-dir:/path"), device.
Returns:
    clip_score: mean cosine over the scored pairs (None when none could be scored),
    per_image: the cosine per pair (None for an unreadable image or an empty caption).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class U2sQuality(metric_module.U2sMetric):
    SETTINGS: ClassVar[dict] = {"clip_model": scoring.PAPER_CLIP, "device": "cpu"}

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=evaluation.CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Image(decode=False), "references": datasets.Value("string")}
            ),
        )

    def load_models(self, settings):
        load_clip(settings["clip_model"], settings["device"])

    def _compute(self, predictions, references, **settings):
        s = self.settings_for(settings)
        return scoring.clip_score(predictions, references, model=s["clip_model"], device=s["device"])
