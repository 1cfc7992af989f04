"""u2s_quality: does the anonymised image still show what its public caption says? (CLIP score, higher is better)"""

from typing import ClassVar

import datasets
import evaluate

from u2s_hf import evaluation, metric_module, scoring
from u2s_hf.scoring.clip import load_clip

_DESCRIPTION = """Cosine similarity between each anonymised image and its public caption (c_pub) under a CLIP model,
averaged over the pairs: the quality metric of Unsafe2Safe (CVPR 2026). The default model is the paper's CLIP
ViT-L/14 (open_clip "ViT-L-14/openai"). scale=100 reports torchmetrics' CLIPScore instead, max(100 * cosine, 0)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: anonymised images (PIL images, paths, bytes or {"bytes", "path"} dicts).
    references: the public caption of each image (strings).
Settings (evaluate.load or compute): clip_model (open_clip id: "ARCH/PRETRAINED", "hf-hub:org/name" or
    "local-dir:/path"), device, scale (1: the cosine, the paper's convention; 100: torchmetrics' max(100 * cos, 0);
    no other value).
Returns:
    clip_score: mean over the scored pairs of the cosine (scale=1, -1..1) or of max(100 * cosine, 0) (scale=100,
        0..100); None when no pair could be scored,
    clip_score_scored, clip_score_missing: pairs in the mean, and pairs left out (unreadable image, empty caption),
    clip_truncated: scored pairs whose caption was cut to the model's context (77 tokens for CLIP),
    per_image: the value per pair in the same scale (None for an unreadable image or an empty caption).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class U2sQuality(metric_module.U2sMetric):
    SETTINGS: ClassVar[dict] = {"clip_model": scoring.PAPER_CLIP, "device": "cpu", "scale": 1}

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
        return scoring.clip_score(predictions, references, model=s["clip_model"], device=s["device"], scale=s["scale"])
