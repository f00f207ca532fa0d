"""The cnn method: weight reader safety, the network's correctness, the Method."""
import pickle
import sys
import types

import cv2
import numpy as np
import pytest

from datasette_imgsim.methods.cnn import graph, runtime
from datasette_imgsim.methods.cnn import weights as weight_file
from datasette_imgsim.methods.cnn import cnn_method, imagenet_labels

skimage_data = pytest.importorskip("skimage.data")

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
MISSILE, PROJECTILE = 657, 744


@pytest.fixture(scope="module")
def method():
    return cnn_method()


@pytest.fixture(scope="module")
def photos():
    return {name: getattr(skimage_data, name)() for name in ("chelsea", "coffee", "rocket", "astronaut")}


@pytest.fixture(scope="module")
def weights():
    return weight_file.read_legacy_torch_weights(weight_file.default_weights_path())


def class_index(label):
    return imagenet_labels().index(label)


# --- labels ---------------------------------------------------------------


def test_labels_list_1000_distinct_classes():
    labels = imagenet_labels()
    assert len(labels) == 1000 == len(set(labels))
    assert labels[0] == "tench"
    assert labels[ESPRESSO] == "espresso"
    assert labels[MISSILE] == "missile"
    assert labels[999] == "toilet tissue"


# --- weight file reader ---------------------------------------------------


def test_reads_the_shipped_weights(weights):
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert weights["_fc.weight"].shape == (1000, 1280)
    assert weights["_bn0.num_batches_tracked"].dtype == np.int64
    floats = [w for w in weights.values() if w.dtype == np.float32]
    assert sum(w.size for w in floats) == 4_694_024
    assert all(np.isfinite(w).all() for w in floats)


class _FakeStorage:
    """Stands for a torch storage while writing a legacy file without torch."""

    def __init__(self, key, data):
        self.key, self.data = key, np.asarray(data, "<f4")


def _fake_torch_modules(monkeypatch):
    """Just enough of a `torch` module for pickle to name its globals."""
    torch = types.ModuleType("torch")
    torch_utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only used by name")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, torch_utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    torch._utils = torch_utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", torch_utils)
    return torch, torch_utils


class _FakeTensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, shape, stride, False, {})

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


def _write_legacy_file(path, state_dict, storages):
    """The legacy layout: magic, version, sys info, state dict, keys, raw storages."""
    torch = sys.modules["torch"]

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _FakeStorage):
                return ("storage", torch.FloatStorage, obj.key, "cpu", obj.data.size, None)
            return None

    with open(path, "wb") as f:
        for header in (weight_file.LEGACY_MAGIC_NUMBER, weight_file.LEGACY_PROTOCOL_VERSION,
                       {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, f, protocol=2)
        Pickler(f, protocol=2).dump(state_dict)
        pickle.dump([s.key for s in storages], f, protocol=2)
        for storage in storages:
            f.write(np.int64(storage.data.size).tobytes())
            f.write(storage.data.tobytes())


def test_reader_respects_offset_shape_and_stride(tmp_path, monkeypatch):
    _fake_torch_modules(monkeypatch)
    shared = _FakeStorage("0", np.arange(12))
    other = _FakeStorage("1", [7.0, 8.0])
    state_dict = {
        "matrix": _FakeTensor(shared, 0, (3, 4), (4, 1)),
        "transposed": _FakeTensor(shared, 0, (4, 3), (1, 4)),
        "tail": _FakeTensor(shared, 8, (4,), (1,)),
        "second": _FakeTensor(other, 1, (1,), (1,)),
    }
    path = tmp_path / "tiny.pth"
    _write_legacy_file(path, state_dict, [shared, other])
    monkeypatch.undo()  # the reader must not need the fake torch

    weights = weight_file.read_legacy_torch_weights(str(path))
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(weights["matrix"], matrix)
    np.testing.assert_array_equal(weights["transposed"], matrix.T)
    np.testing.assert_array_equal(weights["tail"], [8, 9, 10, 11])
    np.testing.assert_array_equal(weights["second"], [8.0])


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_reader_refuses_a_pickle_that_calls_os_system(tmp_path, monkeypatch):
    _fake_torch_modules(monkeypatch)
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    _write_legacy_file(path, {"weight": _Exploit(marker)}, [])
    monkeypatch.undo()

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        weight_file.read_legacy_torch_weights(str(path))
    assert not marker.exists()


def test_reader_refuses_an_evil_header(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_Exploit(tmp_path / "pwned"), protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        weight_file.read_legacy_torch_weights(str(path))
    assert not (tmp_path / "pwned").exists()


# --- the network ----------------------------------------------------------


def test_same_padding_matches_tensorflow():
    assert graph.same_padding(224, 3, 2) == (0, 1)
    assert graph.same_padding(56, 5, 2) == (1, 2)
    assert graph.same_padding(28, 5, 1) == (2, 2)
    assert graph.same_padding(7, 1, 1) == (0, 0)


def _numpy_stem(weights, batch):
    """Stem conv + batch norm + ReLU6 written out directly, without folding."""
    x = np.pad(batch, ((0, 0), (0, 0), (0, 1), (0, 1)))  # SAME, stride 2, even size
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    conv = np.einsum("ncijkl,ockl->noij", windows, weights["_conv_stem.weight"])
    bn = {k: weights[f"_bn0.{k}"][None, :, None, None] for k in ("weight", "bias", "running_mean", "running_var")}
    normed = (conv - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-3) * bn["weight"] + bn["bias"]
    return np.clip(normed, 0, 6)


def test_graph_stem_matches_a_direct_numpy_computation(weights, photos):
    import onnx

    model = graph.build_onnx_model(weights)
    stem_output = next(n.output[0] for n in model.graph.node if n.op_type == "Clip")
    model.graph.output.insert(0, onnx.helper.make_tensor_value_info(stem_output, onnx.TensorProto.FLOAT, ["n", 32, 112, 112]))
    net = cv2.dnn.readNetFromONNX(np.frombuffer(model.SerializeToString(), np.uint8))
    batch = runtime.preprocess([photos["chelsea"]])
    net.setInput(batch, "input")
    ours = net.forward(stem_output)
    np.testing.assert_allclose(ours, _numpy_stem(weights, batch), atol=1e-4)


def test_opencv_and_onnxruntime_agree(photos):
    pytest.importorskip("onnxruntime")
    images = list(photos.values())
    cv, ort = runtime.EfficientNetLite0(backend="opencv"), runtime.EfficientNetLite0(backend="onnxruntime")
    for version in ("run", "run_v2"):
        cv_embedding, cv_logits = getattr(cv, version)(images)
        ort_embedding, ort_logits = getattr(ort, version)(images)
        np.testing.assert_allclose(cv_embedding, ort_embedding, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(cv_logits, ort_logits, rtol=1e-3, atol=1e-3)


def test_model_is_built_once_per_process():
    assert runtime.get_model() is runtime.get_model()


# --- the method -----------------------------------------------------------


def test_method_fields_and_pickling(method):
    assert (method.name, method.dims, method.element_type, method.metric) == ("cnn", 1280, "float", "cosine")
    assert method.batch_size > 1
    restored = pickle.loads(pickle.dumps(method))
    assert restored.extract is method.extract


def test_classifies_skimage_photos(method, photos):
    features = method.extract([photos["chelsea"], photos["coffee"], photos["rocket"]])
    cat, coffee, rocket = features.labels
    assert all(len(top) == 5 for top in features.labels)
    assert class_index(cat[0][0]) in CAT_CLASSES
    assert class_index(coffee[0][0]) == ESPRESSO and coffee[0][1] > 0.5
    assert class_index(rocket[0][0]) in (MISSILE, PROJECTILE)
    probabilities = [p for _, p in cat]
    assert probabilities == sorted(probabilities, reverse=True)


def test_embeddings_are_unit_float32(method, photos):
    vectors = method.extract(list(photos.values())).vectors
    assert vectors.shape == (len(photos), 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_batch_equals_one_at_a_time(method, photos):
    images = list(photos.values())
    batched = method.extract(images)
    singles = [method.extract([image]) for image in images]
    np.testing.assert_allclose(batched.vectors, np.vstack([s.vectors for s in singles]), atol=1e-5)
    assert [top[0][0] for top in batched.labels] == [s.labels[0][0][0] for s in singles]


def test_edited_copy_is_nearest_to_its_original(method, photos):
    names = list(photos)
    originals = method.extract([photos[n] for n in names]).vectors
    for name in ("chelsea", "rocket"):
        image = photos[name]
        h, w = image.shape[:2]
        edited = cv2.resize(image[:, ::-1], (int(w * 0.8), int(h * 0.8)), interpolation=cv2.INTER_AREA)
        similarity = originals @ method.extract([edited]).vectors[0]
        assert names[int(np.argmax(similarity))] == name, dict(zip(names, similarity.round(3)))


def test_accepts_grey_rgba_and_empty_batches(method, photos):
    grey = cv2.cvtColor(photos["chelsea"], cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([photos["chelsea"], np.full(grey.shape, 255, np.uint8)])
    features = method.extract([grey, rgba])
    assert features.vectors.shape == (2, 1280)
    empty = method.extract([])
    assert empty.vectors.shape == (0, 1280) and empty.labels == []


# --- embedding versions (issue #17) ----------------------------------------


def _old_v1_vectors(weights, images):
    """Version 1 as the code computed it before version 2: the graph without the
    feature-map output, the centre-crop batch, L2 normalisation."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from datasette_imgsim.methods.cnn import l2_normalise

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(graph.build_onnx_model(weights).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    embedding, logits = session.run(["embedding", "logits"], {"input": runtime.preprocess(images)})
    return l2_normalise(embedding), logits


def test_v1_is_bit_identical_to_the_old_embedding(weights, photos):
    from datasette_imgsim.methods.cnn import embed, extract_v1

    images = list(photos.values())
    old_vectors, old_logits = _old_v1_vectors(weights, images)
    features = extract_v1(images)
    np.testing.assert_array_equal(features.vectors, old_vectors)
    np.testing.assert_array_equal(embed(images, 1), old_vectors)
    assert [top[0][0] for top in features.labels] == [imagenet_labels()[i] for i in old_logits.argmax(axis=1)]


def test_method_records_its_embedding_version(method, photos):
    from datasette_imgsim.methods.cnn import EMBEDDING_VERSION, extract_v1, extract_v2

    assert method.version == EMBEDDING_VERSION == 2
    assert method.extract_for(1) is extract_v1 and method.extract_for(2) is extract_v2
    restored = pickle.loads(pickle.dumps(method))
    assert restored.version == 2 and restored.extract_for is method.extract_for
    with pytest.raises(ValueError, match="unknown embedding version"):
        method.extract_for(3)
    images = [photos["chelsea"]]
    np.testing.assert_array_equal(method.extract(images).vectors, extract_v2(images).vectors)
    assert not np.allclose(extract_v1(images).vectors, extract_v2(images).vectors)


def test_v2_labels_match_v1(photos):
    from datasette_imgsim.methods.cnn import extract_v1, extract_v2

    images = list(photos.values())
    assert [t[0][0] for t in extract_v2(images).labels] == [t[0][0] for t in extract_v1(images).labels]


def test_trim_borders():
    image = skimage_data.chelsea()
    assert runtime.trim_borders(image) is image
    h, w = image.shape[:2]
    boxed = np.zeros((h + 200, w + 40, 3), np.uint8)
    boxed[120:120 + h, 25:25 + w] = image
    boxed[:, -15:] = 255
    assert runtime.trim_borders(boxed).shape == image.shape
    flat = np.full((300, 400, 3), 30, np.uint8)
    assert runtime.trim_borders(flat) is flat  # nothing would be left
    strip = flat.copy()
    strip[140:160] = 200  # a thin line: less than a tenth of the height would be left
    assert runtime.trim_borders(strip) is strip


def _wide(image, aspect):
    h, w = image.shape[:2]
    height = int(w / aspect)
    top = (h - height) // 2
    return np.ascontiguousarray(image[top:top + height])


def _letterbox(image, colour):
    h, w = image.shape[:2]
    canvas = np.full((w, w, 3), colour, np.uint8)
    canvas[(w - h) // 2:(w - h) // 2 + h] = image
    return canvas


def test_v2_finds_copies_of_a_wide_photo(photos):
    """A 21:9 cut of a real photo, letterboxed, cropped at one end, and with its
    colours flattened: with v2 each copy is nearer the photo than any other photo,
    and the letterboxed one much nearer than with v1 (which sees the bars)."""
    from datasette_imgsim.methods.cnn import embed

    wide = _wide(skimage_data.stereo_motorcycle()[0], 21 / 9)
    w = wide.shape[1]
    others = [photos[n] for n in ("chelsea", "coffee", "rocket", "astronaut")] + [
        _wide(photos["coffee"], 21 / 9), _wide(photos["chelsea"], 21 / 9)]
    copies = [
        _letterbox(wide, 0),
        _letterbox(wide, 255),
        np.ascontiguousarray(wide[:, : int(w * 0.6)]),
        cv2.cvtColor(cv2.cvtColor(cv2.resize(wide, (w // 4, wide.shape[0] // 4), interpolation=cv2.INTER_AREA),
                                  cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB),
    ]
    for version in (1, 2):
        gallery = embed([wide] + others, version)
        sims = embed(copies, version) @ gallery.T
        if version == 1:
            v1_letterbox = sims[0, 0]
            continue
        assert (sims.argmax(axis=1) == 0).all(), sims.round(3)
        assert 1 - sims[0, 0] < (1 - v1_letterbox) / 2, (sims[0, 0], v1_letterbox)
