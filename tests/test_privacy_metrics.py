"""Privacy metrics that never flatter: an unreadable image, a failed judge request or an answer that names no group is
counted, never scored as a success. Real face (insightface vectron) models, real photos, a scripted judge server."""

from pathlib import Path

import evaluate
import pytest

from u2s_hf import answers, evaluation, scoring
from u2s_hf.judge_config import JudgeConfig
from u2s_hf.scoring import judge as judge_metrics
from u2s_hf.scoring.faces import load_face_model

import corpus
from chat_server import ChatServer

JUNK = b"\x89PNG\r\n\x1a\n broken"
MODULE = str(Path(__file__).resolve().parent.parent / "metrics" / "u2s_privacy")


@pytest.fixture(scope="module")
def vectron():
    return corpus.vectron_root()


def _judge(server):
    return JudgeConfig(backend="server", model="judge", base_url=server.base_url, retries=0, timeout=10)


# FaceSim


def test_an_unreadable_output_is_neither_a_match_nor_a_removed_face(photos, vectron):
    astronaut, grace = photos["astronaut"], photos["grace_hopper"]
    out = scoring.face_similarity([astronaut, astronaut, grace], [astronaut, JUNK, None], model="vectron", root=vectron)
    keys = {"face_similarity", "face_retention", "faces_scored", "faces_total", "face_unreadable", "per_image"}
    assert set(out) == keys
    assert out["face_unreadable"] == 2 and out["faces_total"] == 1 and out["faces_scored"] == 1
    assert out["face_retention"] == 1.0  # the one readable pair kept its face; the unread ones are not "removed"
    assert out["per_image"][1:] == [None, None] and out["face_similarity"] == out["per_image"][0] > 0.99


def test_an_unreadable_original_is_counted_and_improves_nothing(photos, vectron):
    astronaut, grace = photos["astronaut"], photos["grace_hopper"]
    out = scoring.face_similarity([JUNK, None, astronaut], [grace, grace, grace], model="vectron", root=vectron)
    assert out["face_unreadable"] == 2 and out["faces_total"] == 1 and out["face_retention"] == 0.0
    assert out["per_image"][:2] == [None, None] and out["face_similarity"] == out["per_image"][2] < 0.2


def test_facesim_pools_over_faces_so_a_group_photo_weighs_more(people_photos, photos, vectron):
    group, astronaut = people_photos["five_people"], photos["astronaut"]
    out = scoring.face_similarity([group, astronaut], [group, photos["grace_hopper"]], model="vectron", root=vectron)
    assert out["faces_total"] == out["faces_scored"] >= 4  # the group's faces plus the astronaut's
    group_faces = out["faces_scored"] - 1
    pooled = (out["per_image"][0] * group_faces + out["per_image"][1]) / (group_faces + 1)
    assert out["face_similarity"] == pytest.approx(pooled)
    assert out["face_similarity"] != pytest.approx(sum(out["per_image"]) / 2)


def test_offline_without_the_face_pack_says_so_at_once(tmp_path, monkeypatch, photos):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "models" / "antelopev2"
    with pytest.raises(FileNotFoundError, match="antelopev2") as error:
        load_face_model("antelopev2", str(tmp_path))
    assert str(folder) in str(error.value) and "face_root" in str(error.value)
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or unpacked
    with pytest.raises(FileNotFoundError, match="not installed"):  # privacy() and the module stop there too
        evaluation.privacy([photos["coffee"]], [photos["coffee"]], face_model="antelopev2", face_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not installed"):
        evaluate.load(MODULE, face_root=str(tmp_path))


# Race entropy


@pytest.mark.parametrize(
    "label, group",
    [
        ("White (likely)", "White"),
        ("probably Black", "Black"),
        ("**ASIAN.**", "Asian"),
        ("South-East Asian", "Asian"),
        ("Hispanic or Latino", "Hispanic"),
        ("Latina", "Hispanic"),
        ("Caucasian", "White"),
        ("African American", "Black"),
        ("non-Hispanic White", "White"),
        ("I cannot determine", None),
        ("no people are visible", None),
        ("martian", None),
        ("not White", None),
    ],
)
def test_a_judge_label_is_read_for_the_group_it_names(label, group):
    counts = scoring.race_labels_to_counts([[label]])
    assert counts == {c: int(c == group) for c in scoring.RACE_CATEGORIES}


def test_groups_outside_the_four_and_two_groups_in_one_label_are_other_but_no_group_is_not():
    labels = [["Middle Eastern", "Native American", "Pacific Islander"], ["Indigenous", "Mixed", "Black and White"]]
    assert scoring.race_labels_to_counts(labels)["Other"] == 6
    assert scoring.race_labels_to_counts([*labels, ["unknown", "cannot tell"], ["none"]])["Other"] == 6


@pytest.mark.parametrize(
    "answer, counts",
    [
        ("No people are visible.", {}),
        ("There are no people in this image.", {}),
        ("Person 1: White (likely)\nPerson 2: probably Black\n- East Asian", {"White": 1, "Black": 1, "Asian": 1}),
        ("1. Latino, Caucasian\n2. I cannot determine", {"Hispanic": 1, "White": 1}),
    ],
)
def test_parse_groups_and_the_category_reading_agree(answer, counts):
    expected = {c: counts.get(c, 0) for c in scoring.RACE_CATEGORIES}
    assert scoring.race_labels_to_counts([answers.parse_groups(answer)]) == expected


def test_ask_groups_tells_a_failed_request_from_an_unreadable_image_from_nobody(photos):
    def script(prompt, image):
        return 500 if image.height > image.width else "No people are visible."

    with ChatServer(script) as server:
        pictures = [photos["grace_hopper"], photos["coffee"], JUNK, None]
        groups, reasons = judge_metrics.ask_groups(pictures, _judge(server))
        assert scoring.list_groups(pictures, _judge(server)) == groups
    assert groups == [None, [], None, None]
    assert reasons[0].startswith(answers.FAILED) and reasons[1:] == [None, *[judge_metrics.IMAGE_UNREADABLE] * 2]


def test_every_race_request_failing_is_said_not_read_as_nobody(photos, vectron):
    def script(prompt, image):
        return 503 if "racial group" in prompt else "ANONYMIZATION_SCORE: 50"

    coffee = photos["coffee"].resize((150, 100))
    with ChatServer(script) as server:
        out = evaluation.privacy([coffee, coffee], [coffee, coffee], "vectron", vectron, judge=_judge(server))
    assert out["race_entropy"] is None and out["race_failed"] == 2 and out["race_entropy_missing"] == 2
    assert "2 requests failed" in out["skipped"]["race_entropy"]
    assert "listed no person" not in out["skipped"]["race_entropy"]


# VLMScore


@pytest.mark.parametrize(
    "text, score",
    [
        ("ANONYMIZATION_SCORE: 7.5", 7.5),
        ("**ANONYMIZATION_SCORE:** 62.25\n", 62.25),
        ("ANONYMIZATION_SCORE: 85.5/100", 85.5),
        ("ANONYMIZATION_SCORE: 0.5 out of 100", 0.5),
    ],
)
def test_a_decimal_score_is_read_as_it_is(text, score):
    assert answers.parse_score(text) == score


@pytest.mark.parametrize(
    "text",
    [
        "ANONYMIZATION_SCORE: 7.5/10",
        "ANONYMIZATION_SCORE: 7.5 / 10",
        "ANONYMIZATION_SCORE: 8 out of 10",
        "ANONYMIZATION_SCORE: 7 (on a scale of 0-10)",
        "ANONYMIZATION_SCORE: 7.5 - very good (out of 10)",
        "ANONYMIZATION_SCORE: 7,5",
        "ANONYMIZATION_SCORE: 1,000",
        "ANONYMIZATION_SCORE: 1e2",
        "ANONYMIZATION_SCORE: 0x55",
        "ANONYMIZATION_SCORE: 100.5",
        "ANONYMIZATION_SCORE: 20.5\nANONYMIZATION_SCORE: 20",
    ],
)
def test_a_score_on_another_scale_or_not_plainly_a_number_is_unreadable(text):
    with pytest.raises(answers.AnswerError, match="ANONYMIZATION_SCORE"):
        answers.parse_score(text)


# TextSim


def test_text_normalisation_is_a_setting():
    original, anonymised = ["Grace Hopper"], ["GRACE HOPPER."]
    assert scoring.text_similarity(original, anonymised)["per_pair"] == [1.0]
    assert scoring.text_similarity(original, anonymised, normalize=False)["per_pair"][0] < 0.5
    assert scoring.text_similarity(["!!!"], ["x"])["excluded"] == 1  # nothing left after folding: no text
    assert scoring.text_similarity(["!!!"], ["x"], normalize=False)["excluded"] == 0
    # token_set_ratio: one side's words a subset of the other's is a full match, either way round
    assert scoring.text_similarity(["COMO HOPPER", "HOPPER"], ["HOPPER", "COMO HOPPER JR"])["per_pair"] == [1.0, 1.0]


# Every count, through privacy() and the evaluate module


def judge_script(prompt, image):
    """Grace (taller than wide) shows a name tag and one person; the coffee shows neither; every pair scores 7.5."""
    if "ANONYMIZATION_SCORE" in prompt:
        return "ANONYMIZATION_SCORE: 7.5"
    portrait = image.height > image.width
    if "Transcribe" in prompt:
        return "Como Hopper" if portrait else "NONE"
    if "racial group" in prompt:
        return "White (likely)\nI cannot determine" if portrait else "No people are visible."
    raise AssertionError(prompt)


def test_privacy_reports_every_count_beside_its_metric(photos, vectron):
    grace, astronaut, coffee = photos["grace_hopper"], photos["astronaut"], photos["coffee"].resize((150, 100))
    with ChatServer(judge_script) as server:
        out = evaluation.privacy(
            [grace, astronaut, coffee, grace],
            [grace, JUNK, coffee, None],
            "vectron",
            vectron,
            text_reader="judge",
            judge=_judge(server),
        )
    faces = {k: out[k] for k in out if k.startswith("face")}
    assert faces == {
        "face_similarity": pytest.approx(out["per_image"]["face_similarity"][0]),
        "face_similarity_scored": 1,
        "face_similarity_missing": 2,  # no face lacked a match; the two unreadable pairs
        "face_retention": 1.0,
        "faces_total": 1,
        "face_unreadable": 2,
    }
    text = {k: out[k] for k in out if k.startswith("text")}
    assert text == {
        "text_similarity": 1.0,
        "text_similarity_scored": 1,
        "text_similarity_missing": 3,
        "text_excluded": 1,
        "text_unreadable": 2,
    }
    race = {k: out[k] for k in out if k.startswith("race")}
    assert race == {
        "race_entropy": 0.0,
        "race_entropy_scored": 2,  # grace and the coffee ("nobody visible" is an answer)
        "race_entropy_missing": 2,  # never sent: unreadable
        "race_counts": {"White": 1, "Black": 0, "Asian": 0, "Hispanic": 0, "Other": 0},
        "race_failed": 0,
        "race_unparsed": 1,
    }
    vlm = {k: out[k] for k in out if k.startswith("vlm")}
    assert vlm == {
        "vlm_score": 7.5,
        "vlm_score_scored": 2,
        "vlm_score_missing": 2,
        "vlm_unreadable": 0,
        "vlm_image_unreadable": 2,
    }
    assert out["skipped"] == {} and out["per_image"]["vlm_score"] == [7.5, None, 7.5, None]


def test_the_module_takes_text_normalize_and_returns_the_counts(photos, vectron):
    grace = photos["grace_hopper"]

    def script(prompt, image):
        if "Transcribe" in prompt:  # the original is read in one case, the anonymised image in another
            return "Como Hopper" if image.width == grace.width else "COMO HOPPER."
        return judge_script(prompt, image)

    with ChatServer(script) as server:
        module = evaluate.load(
            MODULE,
            face_model="vectron",
            face_root=vectron,
            text_reader="judge",
            judge="judge",
            judge_url=server.base_url,
        )
        folded = module.compute(predictions=[grace.resize((256, 300))], references=[grace])
        exact = module.compute(predictions=[grace.resize((256, 300))], references=[grace], text_normalize=False)
    assert folded["text_similarity"] == 1.0 and exact["text_similarity"] < 0.5
    assert folded["text_similarity_scored"] == 1 and folded["face_unreadable"] == 0
    assert folded["vlm_score"] == 7.5 and folded["race_unparsed"] == 1 and folded["race_failed"] == 0
