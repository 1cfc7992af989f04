import os
import sys
import tempfile
from pathlib import Path

# Before anything imports datasets/torch: no Hub, one thread, caches in a throwaway folder.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="u2s-hf-home-")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "dataset_scripts"))

import pytest  # noqa: E402

import corpus  # noqa: E402
import make_sample  # noqa: E402


@pytest.fixture(scope="session")
def photos() -> dict:
    """Real photos from package data (nothing committed): name -> PIL image."""
    return make_sample.sample_photos()


@pytest.fixture(scope="session")
def class_photos(photos) -> dict:
    """One class per photo: three photos that even a random tiny ViT tells apart (all from package data)."""
    import skimage.data
    from PIL import Image

    return {
        "astronaut": photos["astronaut"],
        "coffee": photos["coffee"],
        "rocket": Image.fromarray(skimage.data.rocket()),
    }


@pytest.fixture(scope="session")
def people_photos(photos) -> dict:
    """Every photo with faces we can read from installed packages: portraits, a profile, groups, a crowd."""
    found = {name: photos[name] for name in ("astronaut", "camera", "grace_hopper")}
    found.update(corpus.group_photos())
    return found


@pytest.fixture(scope="session")
def arcface():
    return corpus.ArcFace()


@pytest.fixture(scope="session")
def sample_dir(photos, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name, photo in photos.items():
        photo.save(folder / f"{name}.jpg", quality=95)
    return folder


@pytest.fixture(scope="session")
def bad_dir(tmp_path_factory, photos) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    corpus.write_bad_inputs(folder, photos["astronaut"], photos["coffee"])
    return folder


@pytest.fixture(scope="session")
def tiny_ip2p(tmp_path_factory) -> str:
    """A tiny random-weight InstructPix2Pix checkpoint (no Safe Cross Attention weights), built once per session
    and loaded by path like a Hub id. Tests that write into a checkpoint copy it first."""
    import tiny_models

    return str(tiny_models.instruct_pix2pix(tmp_path_factory.mktemp("ip2p") / "model"))


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory) -> str:
    """A tiny random-weight SD3 checkpoint without T5 (load it with text_encoder_3=False), built once per session."""
    import tiny_models

    return str(tiny_models.sd3(tmp_path_factory.mktemp("sd3") / "model"))


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory) -> str:
    """A tiny random-weight Stable Diffusion 1.5-style checkpoint (PNDM scheduler config, as SD 1.5 ships), built
    once per session and loaded by path like a Hub id."""
    import tiny_models

    return str(tiny_models.sd15(tmp_path_factory.mktemp("sd15") / "model"))
