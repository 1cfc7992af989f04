"""u2s_utility: is an anonymised train split still useful? Train on it, test on the ORIGINAL test split."""

from typing import ClassVar

import datasets
import evaluate

from u2s_hf import evaluation, metric_module, scoring

_DESCRIPTION = """Top-1 accuracy of an image classifier trained on the anonymised train split and tested on the
original test split: the classification utility metric of Unsafe2Safe (CVPR 2026). The default recipe is the
paper's: ImageMAE ViT-B/16 (facebook/vit-mae-base) with a linear head, batch 64 x 4 accumulation, lr 5e-4, 100
epochs, RandAugment(2, 9) with probability 0.5. Captioning and VQA utility are not implemented."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the anonymised TRAIN images (PIL images, paths, bytes or {"bytes", "path"} dicts).
    references: their class labels (ints or strings).
    test_images: the ORIGINAL test images.
    test_labels: their class labels.
Settings (evaluate.load or compute): backbone (Hub id or folder), mode ("linear" or "finetune"), epochs, batch_size,
    grad_accum, lr, randaugment, seed, device.
Returns:
    accuracy (None when no test row could be scored), per_image (the predicted label per test image), skipped_train,
    skipped_test (unreadable images or missing labels), num_classes.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class U2sUtility(metric_module.U2sMetric):
    """The classifier is trained afresh on every call (training changes its weights): nothing to load up front."""

    SETTINGS: ClassVar[dict] = {
        "backbone": scoring.PAPER_BACKBONE,
        "mode": "linear",
        "epochs": 100,
        "batch_size": 64,
        "grad_accum": 4,
        "lr": 5e-4,
        "randaugment": True,
        "seed": 0,
        "device": None,
    }

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=evaluation.CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Image(decode=False), "references": datasets.Value(label)})
                for label in ("int64", "string")
            ],
        )

    def _compute(self, predictions, references, test_images, test_labels, **settings):
        return scoring.train_eval_classifier(
            _labelled(predictions, references), _labelled(test_images, test_labels), **self.settings_for(settings)
        )


def _labelled(images, labels):
    """A dataset with an undecoded image column and a label column (strings if any label is one)."""
    label = datasets.Value("string" if any(isinstance(value, str) for value in labels) else "int64")
    return datasets.Dataset.from_dict(
        {"image": list(images), "label": list(labels)},
        features=datasets.Features({"image": datasets.Image(decode=False), "label": label}),
    )
