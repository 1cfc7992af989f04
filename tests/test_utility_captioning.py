"""Captioning utility (issue 15): BLIP-2 fine-tuned on the anonymised train split, its captions of the ORIGINAL test
images scored with the COCO caption evaluation's BLEU-4 and CIDEr; known answers of the scorers on hand-made
captions, a tiny BLIP-2 loaded through from_pretrained, `u2s evaluate --utility-task captioning` end to end."""

import itertools
import json
import math
import shutil
from pathlib import Path

import datasets
import evaluate
import pytest
import torch
from PIL import ImageFilter
from transformers import Blip2ForConditionalGeneration

from u2s_hf import cli
from u2s_hf.evaluation import EvaluationConfig, evaluate_datasets
from u2s_hf.scoring import captioning, finetune
from u2s_hf.scoring.captioning import caption_scores, train_eval_captioner

import tiny_models

METRICS = Path(__file__).resolve().parent.parent / "metrics"
JAVA = pytest.mark.skipif(shutil.which("java") is None, reason="the COCO evaluation's PTB tokenizer needs Java")
TOKENIZERS = ["python", pytest.param("ptb", marks=JAVA)]
# A few steps at a high rate on 28-px images: enough to move every trainable weight of the tiny model.
FAST = dict(epochs=2, batch_size=3, grad_accum=1, lr=1e-2, warmup_steps=0, image_size=28, tokenizer="python")
TRAIN = ["astronaut", "coffee", "chelsea"]
TEST = ["grace_hopper", "page"]


@pytest.fixture(scope="module")
def blip2(tmp_path_factory) -> str:
    return str(tiny_models.blip2(tmp_path_factory.mktemp("blip2")))


def split(photos, names, captions, blur=False) -> datasets.Dataset:
    images = [photos[n].filter(ImageFilter.GaussianBlur(3)) if blur else photos[n] for n in names]
    return datasets.Dataset.from_dict({"image": images, "captions": captions})


@pytest.fixture(scope="module")
def splits(photos):
    """Anonymised (blurred) train images with their captions; original test images with other captions."""
    train = split(photos, TRAIN, [["an astronaut in a suit", "a woman smiling"], ["a cup of coffee"], ["a cat"]], True)
    test = split(photos, TEST, [["a woman in uniform", "an officer"], ["a page of printed text"]])
    return train, test


# The scorers on hand-made captions.


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_identical_captions_score_bleu4_one_and_a_cider_of_ten(tokenizer):
    """Every n-gram of an image's captions is its own (document frequency 1 of 2 images): the hypothesis' tf-idf
    vectors equal its reference's, so every n-gram cosine is 1, times CIDEr-D's 10."""
    references = [["A man rides a horse."], ["Two dogs play in the snow."]]
    out = caption_scores([refs[0] for refs in references], references, tokenizer)
    assert out["bleu4"] == pytest.approx(1.0) and out["cider"] == pytest.approx(10.0)
    assert out["per_image"]["bleu4"] == pytest.approx([1.0, 1.0]) and out["per_image"]["cider"] == pytest.approx(
        [10, 10]
    )
    assert (out["bleu4_scored"], out["bleu4_missing"], out["cider_scored"], out["cider_missing"]) == (2, 0, 2, 0)


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
def test_bleu4_and_cider_of_a_hand_computed_corpus(tokenizer):
    """Image 1 is captioned exactly; image 2's "e f x y" against "e f g h" (every n-gram weighs log 2: in one
    image's references, or in none). CIDEr-D of image 2: unigram cosine 2/4, bigram 1/3 ("e f"), no 3- or 4-gram,
    equal lengths: (1/2 + 1/3) / 4 x 10 = 50/24. BLEU-4 pools the counts: 1-grams 6/8, 2-grams 4/6, 3-grams 2/4,
    4-grams 1/2, equal lengths: (6/8 x 4/6 x 2/4 x 1/2) ** (1/4)."""
    out = caption_scores(["a b c d", "e f x y"], [["a b c d"], ["e f g h"]], tokenizer)
    assert out["per_image"]["cider"] == pytest.approx([10, 50 / 24])
    assert out["cider"] == pytest.approx((10 + 50 / 24) / 2)
    assert out["bleu4"] == pytest.approx(0.125**0.25)
    assert out["per_image"]["bleu4"][1] == pytest.approx(0, abs=1e-6)  # no 3-gram in common


def test_cider_penalises_a_caption_of_another_length():
    """ "e f g" against "e f g h": cosines sqrt(3)/2, sqrt(2/3), 1/sqrt(2) and 0 for 1- to 4-grams, and CIDEr-D's
    Gaussian penalty exp(-d^2 / (2 x 6^2)), d the difference in bigram counts (2 - 3)."""
    out = caption_scores(["a b c d", "e f g"], [["a b c d"], ["e f g h"]], "python")
    cosines = math.sqrt(3) / 2 + math.sqrt(2 / 3) + 1 / math.sqrt(2)
    assert out["per_image"]["cider"][1] == pytest.approx(cosines / 4 * math.exp(-1 / 72) * 10)


def test_left_out_items_are_counted_and_an_empty_caption_scores_zero():
    """Item 2 has no prediction and item 4 no reference: left out. The empty caption of item 3 is a result: the
    corpus BLEU then has 4 hypothesis words against 8 reference words (brevity penalty e^(1 - 8/4)), and its
    CIDEr is 0."""
    out = caption_scores(["a b c d", None, "", "e f g h"], [["a b c d"], ["x y"], ["i j k l"], []], "python")
    assert (out["bleu4_scored"], out["bleu4_missing"], out["cider_scored"], out["cider_missing"]) == (2, 2, 2, 2)
    assert out["bleu4"] == pytest.approx(math.exp(-1.0))
    assert out["per_image"]["cider"] == pytest.approx([10, None, 0, None])
    assert out["cider"] == pytest.approx(5.0)
    nothing = caption_scores([None], [["a cat"]], "python")
    assert nothing["bleu4"] is None and nothing["cider"] is None and nothing["bleu4_missing"] == 1
    with pytest.raises(ValueError, match="tokenizer must be one of ptb, python"):
        caption_scores(["a"], [["a"]], "nltk")


def test_the_python_tokenizer_drops_what_the_coco_evaluation_drops():
    tokens = captioning.tokenize(
        ["A man, riding a horse.", "Don't touch the man's T-shirt!", 'A "red" bus (big)'], "python"
    )
    assert tokens == ["a man riding a horse", "do n't touch the man 's t-shirt", "a red bus -lrb- big -rrb-"]


@JAVA
def test_the_python_tokenizer_agrees_with_the_ptb_tokenizer_on_caption_like_text():
    captions = [
        "A man, riding a horse.",
        "Don't touch the man's T-shirt!",
        "Two dogs (brown) play in the snow...",
        'A "red" bus at 3.5 o\'clock; on 1,000 roads.',
        "a cat's toy -- on the table",
        "People in the U.S. eat 12 hot-dogs & fries.",
        "She can't see the dogs' bowls?",
        "A kitchen with a stove/oven and sink",
        "",
    ]
    assert captioning.tokenize(captions, "python") == captioning.tokenize(captions, "ptb")


def test_training_captions_are_cleaned_as_blip2s_fine_tuning_cleans_them():
    assert captioning.clean_caption('A man (smiling) rides a "horse"!  ') == "a man smiling rides a horse"
    assert len(captioning.clean_caption("word " * 60).split()) == 50


# Fine-tuning the tiny BLIP-2.


def test_a_training_batch_learns_only_the_caption_and_its_end(blip2, photos):
    """Each row: the query-token placeholders and the prompt (no loss), the caption's tokens and the end token
    generation stops at (the labels), right padding (no loss, no attention)."""
    model, processor = captioning.load_captioner(blip2, None, "cpu", 28)
    end = finetune.end_token(model, processor.tokenizer)
    targets = [" a cat", " two cups of coffee on a table"]
    batch = finetune.training_batch(processor, [photos["chelsea"], photos["coffee"]], ["a photo of"] * 2, targets, end)
    prompt = len(processor(images=[photos["chelsea"]], text=["a photo of"])["input_ids"][0])
    for row, target in enumerate(targets):
        ids = processor.tokenizer(target, add_special_tokens=False)["input_ids"] + [end]
        labels, mask = batch["labels"][row].tolist(), batch["attention_mask"][row].tolist()
        assert labels[:prompt] == [-100] * prompt and labels[prompt : prompt + len(ids)] == ids
        assert labels[prompt + len(ids) :] == [-100] * (len(labels) - prompt - len(ids))
        assert mask == [1] * (prompt + len(ids)) + [0] * (len(labels) - prompt - len(ids))
        assert batch["input_ids"][row].tolist()[:4] == [model.config.image_token_index] * 4
    assert batch["pixel_values"].shape == (2, 3, 28, 28)
    assert model(**batch).loss.item() > 0
    assert not any(p.requires_grad for p in model.language_model.parameters())


def test_the_learning_rate_warms_up_then_follows_a_cosine_to_zero():
    rates = [finetune.learning_rate(step, 10, 2, 1.0) for step in range(10)]
    assert rates[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert rates[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))  # the last of 8 cosine steps
    assert all(a >= b for a, b in itertools.pairwise(rates[1:]))
    steps = finetune.optimizer_steps(examples=33, epochs=2, batch_size=4, grad_accum=4)
    assert steps == 6  # 9 batches an epoch, 3 optimizer steps


def test_fine_tuning_trains_vision_qformer_and_projection_and_leaves_the_language_model(blip2, splits, monkeypatch):
    """BLIP-2's recipe: the OPT language model stays frozen; every other weight moves after a few steps."""
    trained = {}

    def spy(model, *args, **kwargs):
        captioning_fine_tune(model, *args, **kwargs)
        trained.update({name: p.detach().clone() for name, p in model.named_parameters()})

    captioning_fine_tune = captioning.fine_tune
    monkeypatch.setattr(captioning, "fine_tune", spy)
    train, test = splits
    out = train_eval_captioner(train, test, model=blip2, **FAST)
    before = dict(Blip2ForConditionalGeneration.from_pretrained(blip2).named_parameters())
    frozen = [name for name in before if name.startswith("language_model.")]
    moved = [name for name in before if name.startswith(("vision_model.", "qformer.", "language_projection."))]
    assert frozen and all(torch.equal(trained[name], before[name]) for name in frozen)
    assert "query_tokens" in before and not torch.equal(trained["query_tokens"], before["query_tokens"])
    assert sum(not torch.equal(trained[name], before[name]) for name in moved) > 0.9 * len(moved)
    assert out["train_pairs"] == 4 and out["skipped_train"] == 0 and out["skipped_test"] == 0
    # The captions of the ORIGINAL test images, scored against the original test captions.
    captions = out["per_image"]["caption"]
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    again = caption_scores(captions, test["captions"], "python")
    assert out["bleu4"] == again["bleu4"] and out["cider"] == again["cider"]
    assert (out["bleu4_scored"], out["bleu4_missing"], out["cider_scored"], out["cider_missing"]) == (2, 0, 2, 0)


def test_same_seed_same_captions(blip2, splits):
    train, test = splits
    first = train_eval_captioner(train, test, model=blip2, seed=3, **FAST)
    assert train_eval_captioner(train, test, model=blip2, seed=3, **FAST) == first


def test_rows_without_image_or_caption_are_skipped_and_counted(blip2, splits, photos):
    train, test = splits
    bad = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": b"not an image", "path": None}, photos["camera"], photos["coffee"]],
            "captions": [["a broken file"], [], None],
        },
        features=datasets.Features(image=datasets.Image(), captions=datasets.List(datasets.Value("string"))),
    )
    out = train_eval_captioner(
        datasets.concatenate_datasets([train, bad.cast(train.features)]),
        datasets.concatenate_datasets([test, bad.cast(test.features)]),
        model=blip2,
        **dict(FAST, epochs=1),
    )
    assert out["skipped_train"] == 3 and out["skipped_test"] == 3 and out["train_pairs"] == 4
    assert (out["bleu4_scored"], out["bleu4_missing"], out["cider_scored"], out["cider_missing"]) == (2, 3, 2, 3)
    assert out["per_image"]["caption"][2:] == [None, None, None]


def test_refusals_come_before_any_model_loads(splits, tmp_path, monkeypatch):
    train, test = splits
    nowhere = str(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match="no 'captions' column in the split"):
        train_eval_captioner(train.remove_columns("captions"), test, model=nowhere, tokenizer="python")
    with pytest.raises(ValueError, match="also train images"):
        train_eval_captioner(test, test, model=nowhere, tokenizer="python")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match=r"needs Java.*tokenizer='python'"):
        train_eval_captioner(train, test, model=nowhere)


# Through u2s evaluate and the evaluate module.


def test_u2s_evaluate_runs_the_captioning_utility(blip2, photos, tmp_path, capsys):
    """The anonymised release (safe_image + the captions it carried along) trains; the original test split tests."""
    original = datasets.DatasetDict(
        train=split(photos, TRAIN, [["an astronaut"], ["a cup of coffee"], ["a cat"]]),
        test=split(photos, TEST, ["a woman in uniform", "a page of printed text"]),  # one string per image
    )
    original.save_to_disk(str(tmp_path / "original"))
    release = original["train"].rename_column("image", "safe_image")
    release = release.map(lambda row: {"safe_image": row["safe_image"].filter(ImageFilter.GaussianBlur(3))})
    datasets.DatasetDict(train=release).save_to_disk(str(tmp_path / "anonymised"))
    argv = ["evaluate", "--original", str(tmp_path / "original"), "--anonymized", str(tmp_path / "anonymised")]
    utility = ["--metrics", "utility", "--utility-task", "captioning", "--captioner", blip2, "--caption-epochs", "1"]
    code = cli.main([*argv, *utility, "--caption-tokenizer", "python", "--out", str(tmp_path / "report")])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "report" / "report.json").read_text())["anonymised"]
    assert result["bleu4_scored"] == result["cider_scored"] == 2 and result["bleu4_missing"] == 0
    assert 0 <= result["bleu4"] <= 1 and result["cider"] >= 0 and result["utility_skipped_rows"] == 0
    assert "accuracy" not in result
    table = (tmp_path / "report" / "report.md").read_text()
    assert "BLEU-4 ↑" in table and "CIDEr ↑" in table and "(2/2)" in table


def test_evaluate_datasets_says_which_column_is_missing(photos, blip2):
    original = datasets.DatasetDict(train=split(photos, TRAIN, [["a"]] * 3), test=split(photos, TEST, [["b"]] * 2))
    anonymised = original["train"].remove_columns("captions")
    config = EvaluationConfig(
        groups=("utility",), utility_task="captioning", captioner=blip2, caption_tokenizer="python"
    )
    with pytest.raises(ValueError, match=r"no 'captions' column in the split \(columns: image\)"):
        evaluate_datasets(original, anonymised, config)
    with pytest.raises(ValueError, match="utility_task must be one of"):
        EvaluationConfig(utility_task="retrieval")


def test_the_evaluate_module_takes_the_captioning_task(blip2, splits):
    train, test = splits
    settings = dict(model=blip2, epochs=1, batch_size=3, grad_accum=1, lr=1e-2, tokenizer="python")
    module = evaluate.load(str(METRICS / "u2s_utility"), task="captioning", **settings)
    out = module.compute(
        predictions=train["image"],
        references=train["captions"],
        test_images=test["image"],
        test_labels=test["captions"],
    )
    assert out == train_eval_captioner(train, test, **settings)
    with pytest.raises(TypeError, match="task='captioning' takes no setting mode"):
        module.compute(
            predictions=train["image"],
            references=train["captions"],
            test_images=test["image"],
            test_labels=test["captions"],
            mode="linear",
        )
