"""A class label that names no class (missing -1, past the end, not an int or a string) fails its row alone."""

import datasets
import numpy as np
import pytest
from PIL import Image

import u2s_hf as u2s
from u2s_hf.stages.base import DETECTIONS, LabelError, class_name

from chat_server import ChatServer

NAMES = ["cat", "officer"]


def test_class_name_reads_only_labels_that_name_a_class():
    assert class_name(1, NAMES, "label") == "officer"
    assert class_name(np.int64(0), NAMES, "label") == "cat"
    assert class_name("dog", NAMES, "label") == "dog"
    for bad in (-1, 2, 99, None, "", "  ", True, 1.0, [1]):
        with pytest.raises(LabelError, match="label"):
            class_name(bad, NAMES, "label")
    with pytest.raises(ValueError, match="class_names"):  # a settings mistake, not one row's: ends the run
        class_name(1, None, "label")


def test_edit_prompts_leave_rows_with_a_bad_label_without_a_prompt():
    edit = u2s.Edit(editor="instruct-pix2pix", model="m", prompt="class", class_column="label", class_names=NAMES)
    labels = [0, 1, -1, 2, None, True, "dog"]
    assert edit._prompts({"label": labels}, len(labels)) == [
        "A realistic image of cat.",
        "A realistic image of officer.",
        None,
        None,
        None,
        None,
        "A realistic image of dog.",
    ]
    flow = u2s.Edit(
        editor="flowedit",
        model="m",
        source_prompt="c_priv",
        target_prompt="class",
        class_column="label",
        class_names=NAMES,
    )
    assert flow._prompts({"label": [1, -1], "c_priv": ["a man", "a man"]}, 2) == [
        ("a man", "A realistic image of officer."),
        None,
    ]


def test_edit_redacts_flagged_rows_whose_label_names_no_class():
    """No row has a usable prompt, so no model is loaded ("no/such-model" would fail the map if one were)."""
    noise = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    box = [{"label": "face", "score": 0.9, "box": [4, 4, 16, 16]}]
    ds = datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(noise)] * 4,
            "privacy_flag": [True, True, True, False],
            "detections": [box] * 4,
            "label": [-1, 7, None, -1],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "privacy_flag": datasets.Value("bool"),
                "detections": DETECTIONS,
                "label": datasets.Value("int64"),
            }
        ),
    )
    edit = u2s.Edit(
        editor="instruct-pix2pix", model="no/such-model", prompt="class", class_column="label", class_names=NAMES
    )
    out = ds.map(edit, batched=True)
    assert out["u2s_status"] == ["redacted", "redacted", "redacted", "kept_safe"]
    assert out["u2s_error"][:3] == ["no prompt to edit with"] * 3
    for image in out["safe_image"][:3]:
        after = np.asarray(image.convert("RGB"))
        assert not np.array_equal(after[4:16, 4:16], noise[4:16, 4:16])


def script(prompt, image):
    if prompt.startswith("This describes"):
        return 'Edit: "make the person a tall man with red hair"'
    if prompt.startswith("Combine"):
        return "A tall man with red hair stands in an office."
    return 500


def test_instruct_turns_rows_whose_label_names_no_class_into_error_rows():
    ds = datasets.Dataset.from_dict(
        {"c_pub": ["a person at a desk"] * 4 + [None], "label": [1, -1, 2, None, -1]},
        features=datasets.Features({"c_pub": datasets.Value("string"), "label": datasets.Value("int64")}),
    )
    with ChatServer(script) as server:
        stage = u2s.Instruct(
            backend="server",
            model="org/llm",
            base_url=server.base_url,
            retries=0,
            class_column="label",
            class_names=NAMES,
        )
        out = ds.map(stage, batched=True)
        prompts = [r["messages"][0]["content"] for r in server.requests]
    assert out["u2s_status"] == [None, "error", "error", "error", None]
    assert out["u2s_error"][0] is None and out["u2s_error"][4] is None  # a row without a caption needs no class
    reasons = [e.split(" in ")[0] for e in out["u2s_error"][1:4]]
    assert reasons == ["class label -1", "class label 2", "class label None"]
    assert out["c_edit"][0].startswith("make the person") and out["c_edit"][1:] == [None] * 4
    assert out["c_llm"][0].startswith("A tall man") and out["c_llm"][1:] == [None] * 4
    assert len(prompts) == 2 and 'image of "officer"' in prompts[1]  # rows that failed were not asked
