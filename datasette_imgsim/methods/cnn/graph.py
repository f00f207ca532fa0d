"""EfficientNet-Lite0 as an ONNX graph (batch norm folded into the convolutions), built
with the ``onnx`` helper API from the weights ``weights.py`` reads. The layers follow the
TensorFlow reference implementation (hence TensorFlow "SAME" padding).

Reading the weights and building the graph take about 0.15 s, so the graph is built in
memory each time a process first needs it rather than cached on disk.
"""
from __future__ import annotations

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


def build_onnx_model(weights: dict, image_size: int = IMAGE_SIZE, feature_map: bool = False):
    """EfficientNet-Lite0 as an onnx.ModelProto.

    Input "input": (n, 3, image_size, image_size) float32, already scaled to
    (x - 127) / 128. Outputs "embedding" (n, 1280) and "logits" (n, 1000).
    Padding is computed for the fixed image_size, as TensorFlow does.
    With feature_map, a third output "features" (n, 1280, s, s), s = image_size / 32,
    is the head's ReLU6 output before average pooling (what GeM pooling reads); the
    other two outputs are computed exactly as without it.
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
    if feature_map:
        g.nodes.append(helper.make_node("Identity", [x], ["features"]))
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
        ] + ([helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", EMBEDDING_DIMS, size, size])]
             if feature_map else []),
        initializer=g.initializers,
    )
    # opset 13 / IR 7: old enough for every OpenCV 4.x and onnxruntime release.
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="datasette-imgsim"
    )
    model.ir_version = 7
    return model
