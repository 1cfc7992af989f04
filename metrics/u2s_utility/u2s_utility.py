"""u2s_utility: is an anonymised train split still useful? Train on it, test on the ORIGINAL test split."""

import datasets
import evaluate

from u2s_hf import evaluation, scoring

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
Init args (through evaluate.load): backbone (Hub id or folder), mode ("linear" or "finetune"), epochs, batch_size,
    grad_accum, lr, randaugment, seed, device.
Returns:
    accuracy (None when no test row could be scored), per_image (the predicted label per test image), skipped_train,
    skipped_test (unreadable images or missing labels), num_classes.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class U2sUtility(evaluate.Metric):
    def __init__(
        self,
        backbone: str = scoring.PAPER_BACKBONE,
        mode: str = "linear",
        epochs: int = 100,
        batch_size: int = 64,
        grad_accum: int = 4,
        lr: float = 5e-4,
        randaugment: bool = True,
        seed: int = 0,
        device: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.settings = {
            "backbone": backbone,
            "mode": mode,
            "epochs": epochs,
            "batch_size": batch_size,
            "grad_accum": grad_accum,
            "lr": lr,
            "randaugment": randaugment,
            "seed": seed,
            "device": device,
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

    def _compute(self, predictions, references, test_images, test_labels):
        return scoring.train_eval_classifier(
            _labelled(predictions, references), _labelled(test_images, test_labels), **self.settings
        )


def _labelled(images, labels):
    """A dataset with an undecoded image column and a label column (strings if any label is one)."""
    label = datasets.Value("string" if any(isinstance(value, str) for value in labels) else "int64")
    return datasets.Dataset.from_dict(
        {"image": list(images), "label": list(labels)},
        features=datasets.Features({"image": datasets.Image(decode=False), "label": label}),
    )
