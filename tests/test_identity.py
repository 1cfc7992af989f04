"""Identity is really gone: no face in an anonymised photo matches any face of the original under ArcFace."""

import pytest

import u2s_hf as u2s

import corpus

THRESHOLD = 0.35  # ArcFace cosine; the same person under JPEG q20 still scores ~0.9, different people ~0


@pytest.fixture(scope="module")
def people(people_photos):
    return corpus.image_dataset(people_photos)


def test_the_judge_can_tell_identities_apart(arcface, people_photos):
    """Guards the check below: untouched photos match themselves, different people do not."""
    for name, photo in people_photos.items():
        assert arcface.max_similarity(photo, photo) > 0.9, name
    assert arcface.max_similarity(people_photos["astronaut"], people_photos["grace_hopper"]) < THRESHOLD


@pytest.mark.parametrize("method", ["pixelate", "blur", "fill", "inpaint"])
def test_no_output_face_matches_an_original_face(arcface, people, people_photos, method):
    safe = u2s.anonymize(people, method=method)
    for row in safe:
        assert row["u2s_status"] == "redacted", row["name"]
        similarity = arcface.max_similarity(people_photos[row["name"]], row["safe_image"])
        assert similarity < THRESHOLD, (row["name"], method, similarity)
