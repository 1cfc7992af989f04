"""u2s_utility: is an anonymised train split still useful? Train on it, test on the ORIGINAL test split: image
classification (top-1 accuracy), captioning (BLEU-4, CIDEr) or VQA (VQA accuracy)."""

from typing import ClassVar

import datasets
import evaluate

from u2s_hf import evaluation, metric_module, scoring
from u2s_hf.scoring import captioning, vqa

_DESCRIPTION = """Top-1 accuracy of an image classifier trained on the anonymised train split and tested on the
original test split: the classification utility metric of Unsafe2Safe (CVPR 2026), with how many test images it is
over. The default recipe (mode="finetune") is the paper's: ImageMAE ViT-B/16 (facebook/vit-mae-base) fine-tuned with
a linear head, batch 64 x 4 accumulation, lr 5e-4, 100 epochs, RandAugment(2, 9, 0.5). That is MAE's fine-tuning
recipe, so where the paper is silent MAE's fine-tuning is followed: global average pooling of the patch tokens with
MAE's fc_norm (LayerNorm) before the linear head, layer-wise lr decay 0.65, AdamW (0.9, 0.999) with weight decay 0.05
(none on biases and norms), 5 warm-up epochs (a tenth of a run under 50 epochs) then cosine to 1e-6, label smoothing
0.1, random resized crop + flip + RandAugment rand-m9-n2-mstd0.5 on every image + random erasing 0.25 (Mixup/CutMix
and drop path left out). mode="linear" is a fast linear probe on the frozen backbone: not the paper's recipe. Test
images byte-identical to train images are refused unless allow_overlap=True.

task="captioning": BLIP-2 (Salesforce/blip2-opt-2.7b) fine-tuned on the anonymised images and their captions with
BLIP-2's own COCO recipe, captions of the original test images scored against the original test captions with the
COCO caption evaluation's BLEU-4 and CIDEr (pycocoevalcap). task="vqa": Qwen3-VL-2B (Qwen/Qwen3-VL-2B-Instruct)
fine-tuned on the anonymised images' questions and answers, the original test questions scored with the standard
VQA accuracy."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: the anonymised TRAIN images (PIL images, paths, bytes or {"bytes", "path"} dicts).
    references: what they are labelled with: class labels (ints or strings); captioning, a list of captions per
        image; vqa, the list of annotator answers per question.
    test_images: the ORIGINAL test images.
    test_labels: their labels, caption lists or answer lists.
    questions, test_questions: vqa only, the question of each train and test row.
Settings (evaluate.load or compute): task ("classification", "captioning" or "vqa"), seed, device, allow_overlap
    (False: a test image whose bytes equal a train image's raises a ValueError before training; True measures
    anyway), epochs, batch_size, grad_accum, lr (the task's recipe unless named); classification: backbone (Hub id or
    folder), mode ("finetune", the paper's recipe, or "linear", a fast probe that is not), randaugment; captioning
    and vqa: model (Hub id or folder); captioning: tokenizer ("ptb", the COCO evaluation's, needs Java; "python").
Returns:
    classification: accuracy (None when no test row could be scored), accuracy_scored (test images scored),
    accuracy_missing (test images skipped: unreadable or unlabelled), per_image (the predicted label per test image),
    skipped_train, skipped_test (unreadable images or missing labels), num_classes. captioning: bleu4 (corpus
    BLEU-4), cider, each with _scored/_missing, per_image {caption, bleu4, cider}, skipped_train, skipped_test,
    train_pairs. vqa: vqa_accuracy with _scored/_missing, per_question {answer, accuracy}, skipped_train, skipped_test.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class U2sUtility(metric_module.U2sMetric):
    """The model is trained afresh on every call (training changes its weights): nothing to load up front."""

    # The defaults are the classification recipe's; captioning and VQA take only the settings named at load or
    # compute time and their own recipe for the rest (captioning's 5 epochs are not classification's 100).
    SETTINGS: ClassVar[dict] = {
        "task": "classification",
        "backbone": scoring.PAPER_BACKBONE,
        "mode": "finetune",
        "epochs": 100,
        "batch_size": 64,
        "grad_accum": 4,
        "lr": 5e-4,
        "randaugment": True,
        "model": None,
        "tokenizer": None,
        "seed": 0,
        "device": None,
        "allow_overlap": False,
    }

    def __init__(self, **kwargs):
        self.named = {name for name in kwargs if name in self.SETTINGS}
        super().__init__(**kwargs)

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=evaluation.CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Image(decode=False), "references": reference})
                for reference in (
                    datasets.Value("int64"),
                    datasets.Value("string"),
                    datasets.List(datasets.Value("string")),  # captions, or a question's answers
                )
            ],
        )

    def _compute(self, predictions, references, test_images, test_labels, questions=None, test_questions=None, **given):
        settings = self.settings_for(given)
        task = settings.pop("task")
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
        named = (self.named | set(given)) - {"task"}
        foreign = sorted(named - TASKS[task])
        if foreign:
            raise TypeError(f"task={task!r} takes no setting {', '.join(foreign)}")
        taken = TASKS[task] if task == "classification" else named
        settings = {name: value for name, value in settings.items() if name in taken and value is not None}
        if task == "captioning":
            return captioning.train_eval_captioner(
                _table(predictions, captions=references), _table(test_images, captions=test_labels), **settings
            )
        if task == "vqa":
            if questions is None or test_questions is None:
                raise ValueError("task='vqa' needs questions and test_questions")
            train = _table(predictions, question=questions, answers=references)
            return vqa.train_eval_vqa(
                train, _table(test_images, question=test_questions, answers=test_labels), **settings
            )
        return scoring.train_eval_classifier(
            _labelled(predictions, references), _labelled(test_images, test_labels), **settings
        )


SHARED = {"epochs", "batch_size", "grad_accum", "lr", "seed", "device", "allow_overlap"}
TASKS = {
    "classification": SHARED | {"backbone", "mode", "randaugment"},
    "captioning": SHARED | {"model", "tokenizer"},
    "vqa": SHARED | {"model"},
}


def _table(images, **columns):
    """A dataset with an undecoded image column and the given columns (lists of strings, or strings)."""
    features = {"image": datasets.Image(decode=False)}
    for name, values in columns.items():
        listed = any(isinstance(value, list) for value in values)
        features[name] = datasets.List(datasets.Value("string")) if listed else datasets.Value("string")
    data = {"image": list(images), **{name: list(values) for name, values in columns.items()}}
    return datasets.Dataset.from_dict(data, features=datasets.Features(features))


def _labelled(images, labels):
    """A dataset with an undecoded image column and a label column (strings if any label is one)."""
    label = datasets.Value("string" if any(isinstance(value, str) for value in labels) else "int64")
    return datasets.Dataset.from_dict(
        {"image": list(images), "label": list(labels)},
        features=datasets.Features({"image": datasets.Image(decode=False), "label": label}),
    )
