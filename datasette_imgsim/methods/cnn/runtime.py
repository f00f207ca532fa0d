"""Runs the EfficientNet-Lite0 graph with onnxruntime (about 3.5 times OpenCV DNN's speed
on CPU) or OpenCV DNN, returning a 1280-d embedding plus 1000 ImageNet logits per image.
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

    def run(self, batch: np.ndarray):
        self._net.setInput(batch, "input")
        embedding, logits = self._net.forward(["embedding", "logits"])
        return embedding, logits


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

    def run(self, batch: np.ndarray):
        embedding, logits = self._session.run(["embedding", "logits"], {"input": batch})
        return embedding, logits


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
        model_bytes = build_onnx_model(weights).SerializeToString()
        self._backend = BACKENDS[backend](model_bytes)
        # An OpenCV net keeps per-call state (setInput then forward), so calls
        # from several threads must take turns.
        self._lock = threading.Lock()

    def run(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw (embeddings (n, 1280), logits (n, 1000)), both float32."""
        if len(images) == 0:
            return (np.zeros((0, EMBEDDING_DIMS), np.float32), np.zeros((0, NUM_CLASSES), np.float32))
        batch = preprocess(images)
        with self._lock:
            embedding, logits = self._backend.run(batch)
        return (
            np.asarray(embedding, np.float32).reshape(len(images), EMBEDDING_DIMS),
            np.asarray(logits, np.float32).reshape(len(images), NUM_CLASSES),
        )


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
