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


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def turned_box(box, angle, width, height) -> list:
    """Where a box of an upright `width` x `height` photo lies once the photo is turned (np.rot90, counterclockwise):
    the geometry written out here, independently of detectors.unturned."""
    x0, y0, x1, y1 = box
    return {
        90: [y0, width - x1, y1, width - x0],
        180: [width - x1, height - y1, width - x0, height - y0],
        270: [height - y1, x0, height - y0, x1],
    }[angle]


def turned(rgb, angle) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(rgb, angle // 90))


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_a_face_found_in_a_turned_photo_maps_back_onto_the_face(photos, faces, angle):
    rgb = corpus.pixels(photos["grace_hopper"])  # not square: a swapped width and height would show
    height, width = rgb.shape[:2]
    upright = faces(rgb, 0.3, 1536)[0]["box"]
    found = faces(turned(rgb, angle), 0.3, 1536)
    assert len(found) == 1
    assert iou(found[0]["box"], turned_box(upright, angle, width, height)) > 0.5
    mapped = detectors.unturned(found[0]["box"], angle, width, height)
    assert iou(mapped, upright) > 0.5
    x0, y0, x1, y1 = mapped
    assert x0 < (upright[0] + upright[2]) / 2 < x1 and y0 < (upright[1] + upright[3]) / 2 < y1


@pytest.mark.parametrize("name, angle", [("six_people", 180), ("five_people", 90), ("five_people", 270)])
def test_faces_of_a_turned_group_are_found_where_they_are(faces, name, angle):
    """CenterFace alone misses faces of a group turned upside down or sideways; the turned passes find every face,
    each box on the face's true position in the turned photo."""
    rgb = corpus.pixels(corpus.group_photos()[name])
    height, width = rgb.shape[:2]
    truth = [turned_box(d["box"], angle, width, height) for d in faces(rgb, 0.3, 1536)]
    photo = turned(rgb, angle)
    assert len(faces(photo, 0.3, 1536)) < len(truth) == 6
    found = faces.find(photo, 0.3, 1536, (0, 90, 180, 270))
    assert len(found) == len(truth)
    assert all(max(iou(true, d["box"]) for d in found) > 0.5 for true in truth)
    assert faces.find(rgb, 0.3, 1536, (0, 90, 180, 270)) != []  # the same photo upright: nothing lost


def test_turned_passes_find_no_faces_where_there_are_none(photos, faces):
    for name in ("coffee", "chelsea", "page", "name_card"):
        assert faces.find(corpus.pixels(photos[name]), 0.3, 1536, (0, 90, 180, 270)) == [], name


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_text_turned_any_quarter_is_read(photos, text, angle):
    """Upside-down lines, and vertical lines whichever way they run, are read turned back."""
    lines = text.readable(turned(corpus.pixels(photos["name_card"]), angle), 0.8)
    assert {"ALICE JONES", "ACME Corp ID 4471"} <= {line[0] for line in lines}


def test_every_upright_line_of_a_printed_page_is_read(photos, text):
    """RapidOCR's angle classifier would turn four of these seven upright lines upside down: it is not used."""
    assert len(text.readable(corpus.pixels(photos["page"]), 0.8)) == 7


def test_concurrently_keeps_the_order_and_uses_the_threads():
    import threading
    import time

    def slow(i):
        time.sleep(0.05)
        return i, threading.get_ident()

    results = detectors.concurrently(slow, list(range(6)), 3)
    assert [i for i, _ in results] == list(range(6))
    assert len({thread for _, thread in results}) == 3
    assert {thread for _, thread in detectors.concurrently(slow, [0, 1], 1)} == {threading.get_ident()}
