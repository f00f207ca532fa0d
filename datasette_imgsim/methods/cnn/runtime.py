"""Runs the EfficientNet-Lite0 graph with onnxruntime (about 3.5 times OpenCV DNN's speed
on CPU) or OpenCV DNN, returning a 1280-d embedding plus 1000 ImageNet logits per image:
``run`` for embedding version 1 (the centre crop, average-pooled), ``run_v2`` for
version 2 (the whole picture and the centre crop, GeM-pooled; see views_v2).
``get_model()`` loads it once per process, lazily, so feature extraction in worker
processes stays cheap to set up and nothing heavy happens at import. Inputs are scaled
(x - 127) / 128, as the TensorFlow reference was trained.
"""
from __future__ import annotations

import os
import threading
from typing import Optional, Sequence

import numpy as np

from .graph import EMBEDDING_DIMS, IMAGE_SIZE, NUM_CLASSES, build_onnx_model
from .weights import default_weights_path, read_legacy_torch_weights



# EfficientNet's evaluation crop: the central 224/256 of the shorter side.
CROP_FRACTION = 224 / 256


def preprocess(images: Sequence[np.ndarray], image_size: int = IMAGE_SIZE) -> np.ndarray:
    """RGB uint8 images -> (n, 3, size, size) float32 batch, (x - 127) / 128.

    Each image is centre-cropped the way EfficientNet was evaluated (a square
    of 224/256 of its shorter side) and resized to image_size. On skimage's
    photos this classified better than squashing the whole image to a square
    (the rocket only came out as "missile" with the crop), and it keeps the
    aspect ratio the network was trained on.
    """
    batch = np.empty((len(images), 3, image_size, image_size), np.float32)
    for i, image in enumerate(images):
        batch[i] = centre_crop(_as_rgb(image), image_size).transpose(2, 0, 1)
    batch -= 127.0
    batch /= 128.0
    return batch


def centre_crop(image: np.ndarray, image_size: int = IMAGE_SIZE) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    side = max(1, round(min(h, w) * CROP_FRACTION))
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top:top + side, left:left + side]
    # INTER_AREA averages when shrinking (no aliasing); bilinear when enlarging.
    interpolation = cv2.INTER_AREA if side >= image_size else cv2.INTER_LINEAR
    return cv2.resize(square, (image_size, image_size), interpolation=interpolation)


def pad_square(image: np.ndarray, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """The whole image, aspect kept, resized to fit and centred on a mid-grey square
    (zero after scaling)."""
    import cv2

    h, w = image.shape[:2]
    scale = image_size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interpolation = cv2.INTER_AREA if scale <= 1 else cv2.INTER_LINEAR
    fitted = cv2.resize(np.ascontiguousarray(image), (nw, nh), interpolation=interpolation)
    canvas = np.full((image_size, image_size, 3), 127, np.uint8)
    top, left = (image_size - nh) // 2, (image_size - nw) // 2
    canvas[top:top + nh, left:left + nw] = fitted
    return canvas


# A border row or column: at least BORDER_SHARE of its pixels within BORDER_TOLERANCE
# (every channel) of its median colour. What is left must keep BORDER_KEEP of each side.
BORDER_TOLERANCE = 12
BORDER_SHARE = 0.98
BORDER_KEEP = 0.1


def trim_borders(image: np.ndarray) -> np.ndarray:
    """The image without uniform rows and columns at its edges: the black or white bars
    of a letterboxed, pillarboxed or mounted copy, the flat frame around a photo in a
    phone screenshot. Flat edges of the photo itself (a clear sky) are trimmed alike in
    the original and its copies, so the two still agree. Returns a view, or the image
    itself when nothing is trimmed or too little would be left.
    """
    h, w = image.shape[:2]
    out = image
    for _ in range(2):  # twice: bars of two colours (black top and bottom, white sides)
        oh, ow = out.shape[:2]
        if oh < 16 or ow < 16:
            break
        top, bottom = _flat_run(out, 0), _flat_run(out[::-1], 0)
        left, right = _flat_run(out, 1), _flat_run(out[:, ::-1], 1)
        if not (top or bottom or left or right):
            break
        out = out[top:oh - bottom, left:ow - right]
    if out.shape[0] < max(16, BORDER_KEEP * h) or out.shape[1] < max(16, BORDER_KEEP * w):
        return image
    return out if out.shape != image.shape else image


def _flat_run(image: np.ndarray, axis: int) -> int:
    """How many leading rows (axis 0) or columns (axis 1) of image are uniform."""
    lines = image if axis == 0 else image.transpose(1, 0, 2)
    limit = len(lines) // 2
    count, step = 0, 1
    # Examine lines in growing blocks: most photos have no border (one line decides),
    # and a border is usually a few percent of the image.
    while count < limit:
        block = lines[count:min(count + step, limit)].astype(np.int16)
        median = np.median(block, axis=1, keepdims=True)
        flat = (np.abs(block - median).max(axis=2) <= BORDER_TOLERANCE).mean(axis=1) >= BORDER_SHARE
        if not flat.all():
            return count + int(np.argmin(flat))
        count += len(block)
        step *= 2
    return count


# Version 2 (issue #17): uniform borders trimmed, then two views, each GeM-pooled over
# the last feature map and L2-normalised, summed with the whole picture weighted
# WHOLE_WEIGHT: the whole picture padded to a square (aspect kept) at WHOLE_SIZE px with
# a light Gaussian blur (sigma in pixels of that view), which finds wide, bordered and
# heavily degraded copies at half a view's cost; and version 1's sharp centre crop at
# 224 px, which keeps same-scene search and gives the labels.
GEM_P = 3.0
WHOLE_SIZE = 160
WHOLE_BLUR = 0.85
WHOLE_WEIGHT = 1.5


def views_v2(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whole, centre crop): the views of one RGB image that embedding version 2 pools."""
    import cv2

    image = trim_borders(image)
    whole = cv2.GaussianBlur(pad_square(image, WHOLE_SIZE), (0, 0), WHOLE_BLUR)
    return whole, centre_crop(image)


def gem(features: np.ndarray, p: float = GEM_P) -> np.ndarray:
    """Generalised-mean pooling of (n, c, positions) non-negative maps -> (n, c)."""
    x = np.maximum(features, 1e-6)
    if p == 3.0:
        return np.cbrt((x * x * x).mean(axis=2))
    return np.power(np.power(x, p).mean(axis=2), 1.0 / p)


def l2_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got shape {image.shape}")
    return image


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _OpenCVBackend:
    def __init__(self, model_bytes: bytes):
        import cv2

        self._net = cv2.dnn.readNetFromONNX(np.frombuffer(model_bytes, np.uint8))
        self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def run(self, batch: np.ndarray, features: bool = False):
        self._net.setInput(batch, "input")
        return tuple(self._net.forward(["embedding", "logits"] + (["features"] if features else [])))


class _OnnxRuntimeBackend:
    def __init__(self, model_bytes: bytes):
        import onnxruntime

        from .. import base

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if base.threads_per_process:
            options.intra_op_num_threads = base.threads_per_process
        self._session = onnxruntime.InferenceSession(
            model_bytes, options, providers=["CPUExecutionProvider"]
        )

    def run(self, batch: np.ndarray, features: bool = False):
        names = ["embedding", "logits"] + (["features"] if features else [])
        return tuple(self._session.run(names, {"input": batch}))


BACKENDS = {"opencv": _OpenCVBackend, "onnxruntime": _OnnxRuntimeBackend}


class EfficientNetLite0:
    """Builds the network from the weight file and embeds batches of images.

    backend: "opencv", "onnxruntime" or None for onnxruntime when importable
    (3.5 times OpenCV's speed in our measurements) and OpenCV DNN otherwise.
    OpenCV's thread count is left as it is (by default, all cores).
    """

    def __init__(self, weights_path: Optional[str] = None, backend: Optional[str] = None):
        if backend is None:
            backend = "onnxruntime" if _onnxruntime_available() else "opencv"
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}")
        self.backend_name = backend
        weights = read_legacy_torch_weights(weights_path or default_weights_path())
        self._weights = weights
        self._small = None  # the WHOLE_SIZE graph, built on first use (version 2 only)
        # The "features" output (the map before average pooling, for GeM) leaves the
        # other two outputs bit-identical (tests/test_cnn.py checks it).
        model_bytes = build_onnx_model(weights, feature_map=True).SerializeToString()
        self._backend = BACKENDS[backend](model_bytes)
        # An OpenCV net keeps per-call state (setInput then forward), so calls
        # from several threads must take turns.
        self._lock = threading.Lock()

    def run(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw (embeddings (n, 1280), logits (n, 1000)), both float32: the centre crop
        averaged over the last feature map, embedding version 1."""
        if len(images) == 0:
            return (np.zeros((0, EMBEDDING_DIMS), np.float32), np.zeros((0, NUM_CLASSES), np.float32))
        batch = preprocess(images)
        with self._lock:
            embedding, logits = self._backend.run(batch)[:2]
        return (
            np.asarray(embedding, np.float32).reshape(len(images), EMBEDDING_DIMS),
            np.asarray(logits, np.float32).reshape(len(images), NUM_CLASSES),
        )

    def run_v2(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (n, 1280) unit length, logits (n, 1000)): embedding version 2.

        Each image's two views (views_v2) go through the network in two batches, one
        per view size; each view's last feature map is GeM-pooled and L2-normalised,
        and an image's embedding is the normalised weighted sum of its views. The logits
        are the sharp centre crop's, as in version 1 (the same unless borders were
        trimmed).
        """
        n = len(images)
        if n == 0:
            return (np.zeros((0, EMBEDDING_DIMS), np.float32), np.zeros((0, NUM_CLASSES), np.float32))
        wholes, crops = zip(*(views_v2(_as_rgb(image)) for image in images))
        with self._lock:
            if self._small is None:
                model = build_onnx_model(self._weights, WHOLE_SIZE, feature_map=True)
                self._small = BACKENDS[self.backend_name](model.SerializeToString())
            _, logits, crop_features = self._backend.run(_scaled(crops), features=True)
            whole_features = self._small.run(_scaled(wholes), features=True)[2]
        pooled = [l2_rows(gem(np.asarray(f, np.float32).reshape(n, EMBEDDING_DIMS, -1)))
                  for f in (whole_features, crop_features)]
        embeddings = l2_rows(WHOLE_WEIGHT * pooled[0] + pooled[1])
        return embeddings, np.asarray(logits, np.float32).reshape(n, NUM_CLASSES)


def _scaled(views) -> np.ndarray:
    batch = np.stack(views).astype(np.float32).transpose(0, 3, 1, 2)
    batch -= 127.0
    batch /= 128.0
    return np.ascontiguousarray(batch)


_models: dict = {}
_models_lock = threading.Lock()


def get_model(backend: Optional[str] = None) -> EfficientNetLite0:
    """The process's EfficientNetLite0, built on first use.

    Keyed by process id as well, so a forked worker builds its own instead of
    reusing a net (and its thread pools) inherited from the parent.
    """
    key = (os.getpid(), backend)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = EfficientNetLite0(backend=backend)
        return model
