import numpy as np
import pytest

from u2s_hf.backends import detectors

import corpus


@pytest.fixture(scope="module")
def faces():
    return detectors.FaceDetector("cpu", 1)


@pytest.fixture(scope="module")
def text():
    return detectors.TextDetector("cpu", 1, 960)


@pytest.mark.parametrize("name", ["astronaut", "camera", "grace_hopper"])
def test_faces_found_in_portraits_and_profiles(photos, faces, name):
    found = faces(corpus.pixels(photos[name]), 0.3, 1536)
    assert len(found) == 1 and found[0]["label"] == "face"
    x0, y0, x1, y1 = found[0]["box"]
    assert 20 < x1 - x0 < 300 and 20 < y1 - y0 < 300


@pytest.mark.parametrize("name", ["coffee", "chelsea", "page"])
def test_no_faces_in_photos_without_people(photos, faces, name):
    assert faces(corpus.pixels(photos[name]), 0.3, 1536) == []


def test_every_face_in_a_group_photo(faces):
    group = corpus.pixels(corpus.group_photos()["six_people"])
    assert len(faces(group, 0.3, 1536)) == 6


def test_downscaled_detection_maps_boxes_back(photos, faces):
    rgb = corpus.pixels(photos["astronaut"])
    full = faces(rgb, 0.3, 1536)[0]["box"]
    half = faces(rgb, 0.3, 256)[0]["box"]
    assert np.abs(np.array(full) - np.array(half)).max() < 20


def test_text_needs_a_readable_line(photos, text):
    found = text(corpus.pixels(photos["name_card"]), 0.8)
    assert len(found) >= 2 and all(d["label"] == "text" for d in found)
    assert set(found[0]) == {"label", "score", "box"}  # the words themselves are never returned
    assert text(corpus.pixels(photos["coffee"]), 0.8) == []
    assert text(corpus.pixels(photos["chelsea"]), 0.8) == []


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    assert detectors.nms(boxes, np.array([0.5, 0.9, 0.7]), 0.3) == [1, 2]


def test_describe_names_the_models():
    described = detectors.describe()
    assert described["faces"]["model"] == "CenterFace" and len(described["faces"]["sha256"]) == 64
