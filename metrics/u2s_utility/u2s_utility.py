"""u2s_utility: is an anonymised train split still useful? Train on it, test on the ORIGINAL test split."""

from typing import ClassVar

import datasets
import evaluate

from u2s_hf import evaluation, metric_module, scoring

_DESCRIPTION = """Top-1 accuracy of an image classifier trained on the anonymised train split and tested on the
original test split: the classification utility metric of Unsafe2Safe (CVPR 2026), with how many test images it is
over. The default recipe (mode="finetune") is the paper's: ImageMAE ViT-B/16 (facebook/vit-mae-base) fine-tuned with
a linear head, batch 64 x 4 accumulation, lr 5e-4, 100 epochs, RandAugment(2, 9, 0.5). That is MAE's fine-tuning
recipe, so where the paper is silent MAE's fine-tuning is followed: global average pooling of the patch tokens with
MAE's fc_norm (LayerNorm) before the linear head, layer-wise lr decay 0.65, AdamW (0.9, 0.999) with weight decay 0.05
(none on biases and norms), 5 warm-up epochs (a tenth of a run under 50 epochs) then cosine to 1e-6, label smoothing
0.1, random resized crop + flip + RandAugment rand-m9-n2-mstd0.5 on every image + random erasing 0.25 (Mixup/CutMix
and drop path left out). mode="linear" is a fast linear probe on the frozen backbone: not the paper's recipe. Test
images byte-identical to train images are refused unless allow_overlap=True. Captioning and VQA utility are not
implemented."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the anonymised TRAIN images (PIL images, paths, bytes or {"bytes", "path"} dicts).
    references: their class labels (ints or strings).
    test_images: the ORIGINAL test images.
    test_labels: their class labels.
Settings (evaluate.load or compute): backbone (Hub id or folder), mode ("finetune", the paper's recipe, or "linear",
    a fast probe that is not), epochs, batch_size, grad_accum, lr, randaugment, seed, device, allow_overlap (False:
    a test image whose bytes equal a train image's raises a ValueError before training; True measures anyway).
Returns:
    accuracy (None when no test row could be scored), accuracy_scored (test images scored), accuracy_missing (test
    images skipped: unreadable or unlabelled), per_image (the predicted label per test image), skipped_train,
    skipped_test (unreadable images or missing labels), num_classes.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class U2sUtility(metric_module.U2sMetric):
    """The classifier is trained afresh on every call (training changes its weights): nothing to load up front."""

    SETTINGS: ClassVar[dict] = {
        "backbone": scoring.PAPER_BACKBONE,
        "mode": "finetune",
        "epochs": 100,
        "batch_size": 64,
        "grad_accum": 4,
        "lr": 5e-4,
        "randaugment": True,
        "seed": 0,
        "device": None,
        "allow_overlap": False,
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
