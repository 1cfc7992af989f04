"""Write a small folder of real photos that ship inside Python packages, for `make demo` and for tests.

No photo is copied into this repository: scikit-image and matplotlib carry them. One extra image is made here:
a rendered name card pasted onto a photo, since no bundled photo shows a readable personal name on a card.

    python dataset_scripts/make_sample.py samples/photos
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib
import matplotlib.cbook
import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageFont

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"


def sample_photos() -> dict[str, Image.Image]:
    """name -> photo: three with people (astronaut, camera, grace_hopper), a printed page, three without people."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        grace = Image.open(f).convert("RGB")
    photos = {
        "astronaut": Image.fromarray(skimage.data.astronaut()),
        "camera": Image.fromarray(skimage.data.camera()),
        "grace_hopper": grace,
        "page": Image.fromarray(skimage.data.page()),
        "coffee": Image.fromarray(skimage.data.coffee()),
        "chelsea": Image.fromarray(skimage.data.chelsea()),
    }
    photos["name_card"] = name_card_on(skimage.data.rocket(), ["ALICE JONES", "ACME Corp  ID 4471"])
    return photos


def name_card_on(photo: np.ndarray, lines: list[str]) -> Image.Image:
    """A white card with large dark text pasted into the middle of `photo`."""
    image = Image.fromarray(photo).convert("RGB")
    font = ImageFont.truetype(str(FONT), size=max(14, image.width // 22))
    widths = [font.getbbox(line)[2] for line in lines]
    line_height = font.getbbox("Ag")[3] + 8
    card = Image.new("RGB", (max(widths) + 30, line_height * len(lines) + 24), (250, 250, 245))
    draw = ImageDraw.Draw(card)
    for i, line in enumerate(lines):
        draw.text((15, 12 + i * line_height), line, font=font, fill=(20, 20, 40))
    image.paste(card, ((image.width - card.width) // 2, (image.height - card.height) // 2))
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    encoded = {}
    for name, photo in sample_photos().items():
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=92)
        encoded[out / f"{name}.jpg"] = buffer.getvalue()
    # Never replace a file of someone else's: only missing files, or ones that already hold the same photo.
    clashes = [str(path) for path, data in encoded.items() if path.exists() and path.read_bytes() != data]
    if clashes:
        sys.exit(f"make_sample: not overwriting {', '.join(clashes)}: choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    for path, data in encoded.items():
        path.write_bytes(data)
    print(f"wrote {len(encoded)} photos to {out}")


if __name__ == "__main__":
    main()
