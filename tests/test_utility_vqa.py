"""VQA utility (issue 15): a VLM fine-tuned on the anonymised train split's questions, its answers to the ORIGINAL
test questions scored with the standard VQA accuracy; known answers of the scorer, a tiny Qwen3-VL loaded through
from_pretrained, `u2s evaluate --utility-task vqa` end to end."""

import json
from pathlib import Path

import datasets
import evaluate
import pytest
from PIL import ImageFilter

from u2s_hf import cli
from u2s_hf.evaluation import EvaluationConfig, evaluate_datasets
from u2s_hf.scoring import finetune, vqa
from u2s_hf.scoring.vqa import normalize_answer, train_eval_vqa, vqa_accuracy

import tiny_models

METRICS = Path(__file__).resolve().parent.parent / "metrics"
TRAIN = ["astronaut", "coffee", "chelsea", "camera"]
TEST = ["grace_hopper", "page", "name_card"]
# Twenty steps at a high rate: the tiny model learns to give the one answer it is trained on.
LEARN = dict(epochs=20, batch_size=4, lr=1e-2)


@pytest.fixture(scope="module")
def qwen3_vl(tmp_path_factory) -> str:
    return str(tiny_models.qwen3_vl(tmp_path_factory.mktemp("qwen3-vl")))


def split(photos, names, questions, answers, blur=False) -> datasets.Dataset:
    images = [photos[n].filter(ImageFilter.GaussianBlur(3)) if blur else photos[n] for n in names]
    return datasets.Dataset.from_dict({"image": images, "question": questions, "answers": answers})


@pytest.fixture(scope="module")
def splits(photos):
    """Anonymised (blurred) train images whose annotators mostly said "cat" (answers as the Hub's OK-VQA stores
    them: dicts); original test questions that two, zero and four of ten annotators answered "cat"."""
    said = [[{"answer": "cat"}] * 7 + [{"answer": "dog"}] * 3] * len(TRAIN)
    train = split(photos, TRAIN, ["What animal is it?"] * len(TRAIN), said, blur=True)
    answers = [["cat"] * 2 + ["dog"] * 8, ["dog"] * 10, ["cat"] * 4 + ["bird"] * 6]
    test = split(photos, TEST, ["What is this?", "What animal?", "Which pet?"], answers)
    return train, test


# The scorer on hand-made answers.


@pytest.mark.parametrize(
    ("answer", "normalized"),
    [
        ("Two dogs.", "2 dogs"),
        ("the Cat", "cat"),
        ("dont", "don't"),
        ("couldnt've", "couldn't've"),
        ("man's hat", "man 's hat"),
        ("black/white", "black white"),
        ("black / white", "black white"),
        ("3.5", "3.5"),
        ("Yes!", "yes"),
        ("none", "0"),
        ("1,000", "1000"),
        ("(red)", "red"),
    ],
)
def test_answers_are_normalized_as_the_vqa_evaluation_does(answer, normalized):
    assert normalize_answer(answer) == normalized


@pytest.mark.parametrize(("agree", "accuracy"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_averages_min_of_matches_over_3_over_the_ten_nine_annotator_subsets(agree, accuracy):
    """2 of 10: leaving out one of the two leaves 1 match (1/3), one of the eight others 2 (2/3):
    (2 x 1/3 + 8 x 2/3) / 10 = 0.6. 1 of 10: (1 x 0 + 9 x 1/3) / 10 = 0.3. 3 of 10: (3 x 2/3 + 7 x 1) / 10 = 0.9."""
    answers = ["yes"] * agree + ["no"] * (10 - agree)
    out = vqa_accuracy(["yes"], [answers])
    assert out["vqa_accuracy"] == pytest.approx(accuracy) and out["per_question"] == pytest.approx([accuracy])


def test_both_sides_are_normalized_and_left_out_questions_are_counted():
    answers = [["2"] * 2 + ["3"] * 8, ["dog"] * 10, ["dog"] * 10, ["x"] * 10, []]
    out = vqa_accuracy(["Two", "The dog.", "", None, "dog"], answers)
    assert out["per_question"] == pytest.approx([0.6, 1.0, 0.0, None, None])  # an empty answer is a wrong answer
    assert out["vqa_accuracy"] == pytest.approx(1.6 / 3)
    assert (out["vqa_accuracy_scored"], out["vqa_accuracy_missing"]) == (3, 2)
    assert vqa_accuracy([None], [["a"]])["vqa_accuracy"] is None


# Fine-tuning the tiny Qwen3-VL.


def test_a_training_batch_learns_only_the_answer_and_its_end(qwen3_vl, photos):
    """The chat-templated question with its expanded image tokens carries no loss; the answer and the end token do;
    the image-token marks of the appended and padded tokens are 0."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = AutoModelForImageTextToText.from_pretrained(qwen3_vl), AutoProcessor.from_pretrained(qwen3_vl)
    end = finetune.end_token(model, processor.tokenizer)
    prompts = [vqa.prompt(processor, q) for q in ("What animal is it?", "Why?")]
    assert "What animal is it?\nAnswer the question using a single word or phrase." in prompts[0]
    images, answers = [photos["chelsea"], photos["page"]], ["cat", "because it is a very long answer"]
    batch = finetune.training_batch(processor, images, prompts, answers, end)
    for row, (image, text, answer) in enumerate(zip(images, prompts, answers, strict=True)):
        prompt = processor(images=[image], text=[text])
        length = len(prompt["input_ids"][0])
        ids = processor.tokenizer(answer, add_special_tokens=False)["input_ids"] + [end]
        labels = batch["labels"][row].tolist()
        assert labels[:length] == [-100] * length and labels[length : length + len(ids)] == ids
        assert batch["input_ids"][row].tolist()[:length] == list(prompt["input_ids"][0])
        assert batch["mm_token_type_ids"][row].tolist()[:length] == list(prompt["mm_token_type_ids"][0])
        assert not batch["mm_token_type_ids"][row][length:].any()
    assert batch["image_grid_thw"].shape == (2, 3) and model(**batch).loss.item() > 0


def test_the_fine_tuned_model_answers_what_it_was_trained_on(qwen3_vl, splits):
    """Trained to say "cat" (the answer most train annotators gave), it says "cat" to every original test question:
    VQA accuracy 0.6, 0 and 1 (two, none and four of ten annotators said "cat")."""
    train, test = splits
    out = train_eval_vqa(train, test, model=qwen3_vl, **LEARN)
    assert out["per_question"]["answer"] == ["cat", "cat", "cat"]
    assert out["per_question"]["accuracy"] == pytest.approx([0.6, 0.0, 1.0])
    assert out["vqa_accuracy"] == pytest.approx(1.6 / 3)
    assert (out["vqa_accuracy_scored"], out["vqa_accuracy_missing"]) == (3, 0)
    assert out["skipped_train"] == out["skipped_test"] == 0
    assert train_eval_vqa(train, test, model=qwen3_vl, **LEARN) == out  # same seed, same answers


def test_rows_without_image_question_or_answers_are_skipped_and_counted(qwen3_vl, splits, photos):
    train, test = splits
    bad = {
        "image": [{"bytes": b"not an image", "path": None}, photos["coffee"], photos["chelsea"]],
        "question": ["What?", None, "What?"],
        "answers": [["cat"] * 10, ["cat"] * 10, []],
    }
    test = datasets.concatenate_datasets([test, datasets.Dataset.from_dict(bad, features=test.features)])
    out = train_eval_vqa(train, test, model=qwen3_vl, epochs=1, batch_size=4)
    assert out["skipped_test"] == 3 and (out["vqa_accuracy_scored"], out["vqa_accuracy_missing"]) == (3, 3)
    assert out["per_question"]["answer"][3:] == [None, None, None]


def test_refusals_come_before_any_model_loads(splits, tmp_path):
    train, test = splits
    nowhere = str(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match="no 'question' column in the split"):
        train_eval_vqa(train, test.remove_columns("question"), model=nowhere)
    with pytest.raises(ValueError, match="also train images"):
        train_eval_vqa(test, test, model=nowhere)


# Through u2s evaluate and the evaluate module.


def test_u2s_evaluate_runs_the_vqa_utility(qwen3_vl, photos, tmp_path, capsys):
    said = [["cat"] * 10] * len(TRAIN)
    original = datasets.DatasetDict(
        train=split(photos, TRAIN, ["What animal is it?"] * len(TRAIN), said),
        val=split(photos, TEST, ["What is this?", "What animal?", "Which pet?"], [["cat"] * 10] * 3),
    )
    original.save_to_disk(str(tmp_path / "original"))
    release = original["train"].rename_column("image", "safe_image")
    release = release.map(lambda row: {"safe_image": row["safe_image"].filter(ImageFilter.GaussianBlur(3))})
    datasets.DatasetDict(train=release).save_to_disk(str(tmp_path / "anonymised"))
    argv = ["evaluate", "--original", str(tmp_path / "original"), "--anonymized", str(tmp_path / "anonymised")]
    utility = ["--metrics", "utility", "--utility-task", "vqa", "--vqa-model", qwen3_vl, "--test-split", "val"]
    assert cli.main([*argv, *utility, "--out", str(tmp_path / "report")]) == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "report" / "report.json").read_text())["anonymised"]
    assert (result["vqa_accuracy_scored"], result["vqa_accuracy_missing"], result["utility_skipped_rows"]) == (3, 0, 0)
    assert 0 <= result["vqa_accuracy"] <= 1 and "accuracy" not in result and "bleu4" not in result
    assert "VQA acc ↑" in (tmp_path / "report" / "report.md").read_text()


def test_evaluate_datasets_says_which_column_is_missing(photos, qwen3_vl):
    original = datasets.DatasetDict(
        train=split(photos, TRAIN[:2], ["Q?"] * 2, [["a"]] * 2), test=split(photos, TEST[:2], ["Q?"] * 2, [["b"]] * 2)
    )
    config = EvaluationConfig(groups=("utility",), utility_task="vqa", vqa_model=qwen3_vl)
    with pytest.raises(ValueError, match=r"no 'answers' column in the split \(columns: image, question\)"):
        evaluate_datasets(original, original["train"].remove_columns("answers"), config)


def test_the_evaluate_module_takes_the_vqa_task(qwen3_vl, splits):
    train, test = splits
    answers = [[a["answer"] for a in row] for row in train["answers"]]
    module = evaluate.load(str(METRICS / "u2s_utility"), task="vqa", model=qwen3_vl, **LEARN)
    out = module.compute(
        predictions=train["image"],
        references=answers,
        questions=train["question"],
        test_images=test["image"],
        test_labels=test["answers"],
        test_questions=test["question"],
    )
    assert out == train_eval_vqa(train, test, model=qwen3_vl, **LEARN)
    with pytest.raises(ValueError, match="task='vqa' needs questions and test_questions"):
        module.compute(predictions=train["image"], references=answers, test_images=test["image"], test_labels=answers)
