"""What the `datasets.map` plumbing costs around each Stage-1 stage, with tiny models.

For each stage, in one run: `ds.map(stage, batched=True)` over real photos against calling the same backend
directly on the same batches: read the stored image bytes, decode them, build the requests, generate. The
difference is what the stage adds (Arrow in and out, typed columns, parsing). Goal (issue #3): map / direct <= 1.10x.

    python benchmarks/stage_overhead.py [--rows 256] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "dataset_scripts")]

import datasets  # noqa: E402
import torch  # noqa: E402

import u2s_hf as u2s  # noqa: E402
from u2s_hf import images, prompts  # noqa: E402
from u2s_hf.backends.chat import ChatRequest, load_chat  # noqa: E402
from u2s_hf.criteria import criteria_text  # noqa: E402

import corpus  # noqa: E402
import make_sample  # noqa: E402
import tiny_models  # noqa: E402

CAPTION = (
    "PRIVACY_REVIEW:\n- face: people\nPRIVATE_CAPTION: An astronaut in an orange suit.\n"
    "PUBLIC_CAPTION: A person in an orange suit."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="u2s-overhead-"))
    photos = list(make_sample.sample_photos().values())
    ds = corpus.image_dataset({f"{i}": photos[i % len(photos)] for i in range(args.rows)}, work / "ds")
    ds = ds.add_column("privacy_flag", [True] * len(ds)).add_column("c_pub", ["A person in an orange suit."] * len(ds))
    vlm = str(tiny_models.vlm(work / "vlm", "PRIVACY_FLAG: TRUE"))
    captioner = str(tiny_models.vlm(work / "caption", CAPTION))
    lm = str(tiny_models.chat_lm(work / "lm", 'Edit: "a tall man with grey hair"'))
    stages = {
        "Inspect (vlm)": (u2s.Inspect(backend="vlm", model=vlm), "flag", True, 16),
        "Caption (vlm)": (u2s.Caption(model=captioner), "caption", True, 400),
        "Instruct (llm, no merge)": (u2s.Instruct(model=lm, merge=False), "instruct", False, 120),
    }
    source = ds.cast_column("image", datasets.Image(decode=False))
    stored = list(source["image"])
    print(f"{args.rows} photos, batch {args.batch_size}, tiny models, 1 torch thread")
    for name, (stage, template, with_image, tokens) in stages.items():
        fields = (
            {"criteria": criteria_text()}
            if template != "instruct"
            else {"public_caption": "A person in an orange suit.", "demographics": ""}
        )
        prompt = prompts.render(template, **fields)
        complete = load_chat(stage.config)
        complete([ChatRequest(prompt, images.decode(stored[0]) if with_image else None, tokens)])  # load, warm up
        start = time.perf_counter()
        for i in range(0, len(stored), args.batch_size):
            complete(
                [
                    ChatRequest(prompt, images.decode(value) if with_image else None, tokens)
                    for value in stored[i : i + args.batch_size]
                ]
            )
        direct = time.perf_counter() - start
        start = time.perf_counter()
        source.map(stage, batched=True, batch_size=args.batch_size, new_fingerprint=f"bench-{name}-{time.time()}")
        mapped = time.perf_counter() - start
        print(
            f"  {name:26s} map {mapped:6.2f} s   direct {direct:6.2f} s   ratio {mapped / direct:.2f}x (goal <= 1.10x)"
        )


if __name__ == "__main__":
    main()
