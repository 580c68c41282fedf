"""MTCNN on onnxruntime: facenet-pytorch's weights and cascade without importing torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from dfhelpers import torchfile
from dfhelpers.errors import MissingWeightsError

MTCNN_FIX = "reinstall dfdetect (in a clone: pip install -e .): its package ships the three files"
# facenet-pytorch 2.5.3's pnet.pt, rnet.pt and onet.pt, unchanged (MIT; see the README beside them)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "mtcnn"
_OPSET = 17  # MaxPool ceil_mode, Softmax on one axis: onnxruntime 1.32 runs it natively
_FACTOR = 0.709  # facenet-pytorch's pyramid step (each level 0.709x the previous: half the area)
_CROP_CHUNK = 256  # R/O-net crops gathered at once: bounds the index arrays to ~20 MB (thousands of proposals)
_NORMALIZE = (127.5, 0.0078125)  # (pixel - 127.5) / 128, as facenet-pytorch feeds its nets
Detection = tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]


def weights_dir() -> Path:
    """The folder of MTCNN's weights (pnet.pt, rnet.pt, onet.pt) that ships inside dfhelpers.

    Raises:
        MissingWeightsError: a weight file is missing (a broken install).
    """
    if not all((WEIGHTS_DIR / f"{net}.pt").is_file() for net in ("pnet", "rnet", "onet")):
        raise MissingWeightsError(f"MTCNN weights not found in {WEIGHTS_DIR}; {MTCNN_FIX}")
    return WEIGHTS_DIR


class Mtcnn:
    """facenet-pytorch 2.5.3's MTCNN cascade (P-, R-, O-net) in numpy, the nets on onnxruntime.

    `detect` returns what facenet's `MTCNN(keep_all=True, select_largest=True).detect(...,
    landmarks=True)` returns per image: boxes (k, 4), probs (k,), points (k, 5, 2) float32,
    largest box first, or None three times when no face is found.
    """

    def __init__(self, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), min_face_size: int = 20,
                 threads: int = 1):
        import onnxruntime  # imported here: dfhelpers.faces imports this module for every runtime

        self.thresholds = tuple(float(t) for t in thresholds)
        self.min_face_size = min_face_size
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        # spinning threads steal the core another worker needs: on a busy 2-core machine that made
        # torch's MTCNN 5x slower; waiting threads sleep instead
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # P-net sees a new input size at every pyramid level; an arena and memory patterns keep the
        # largest ones' buffers for good (three 720p videos: peak RSS 824 MB with them, 599 MB
        # without, 6% slower)
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        folder = weights_dir()
        self._sessions = {}
        for net, build in (("pnet", build_pnet), ("rnet", build_rnet), ("onet", build_onet)):
            model = build(torchfile.read_state_dict(folder / f"{net}.pt", MTCNN_FIX))
            self._sessions[net] = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                               providers=["CPUExecutionProvider"])

    def run(self, net: str, images: np.ndarray) -> list[np.ndarray]:
        """One net on NCHW float32 input already normalised: P-net (reg, prob), R-net (reg, prob),
        O-net (reg, landmarks, prob), as facenet's nets return them."""
        session = self._sessions[net]
        return session.run(None, {"image": np.ascontiguousarray(images, dtype=np.float32)})

    def detect(self, images: np.ndarray, max_face_size: Optional[float] = None,
               min_face_size: Optional[float] = None) -> list[Detection]:
        """Faces in a batch of same-size RGB uint8 images (N, H, W, 3); see the class docstring.

        max_face_size (px) drops the pyramid levels that only find faces larger than that (None: all);
        min_face_size (px) replaces the one the cascade was made with for this call.
        """
        sums = integral_image(images)
        boxes, image_inds = self._proposals(sums, max_face_size, min_face_size or self.min_face_size)
        boxes, image_inds = self._refine(sums, boxes, image_inds)
        boxes, image_inds, points = self._output(sums, boxes, image_inds)
        return [_per_image(boxes[image_inds == i], points[image_inds == i]) for i in range(len(sums))]

    def _proposals(self, sums: np.ndarray, max_face_size: Optional[float],
                   min_face_size: float) -> tuple[np.ndarray, np.ndarray]:
        """P-net over the image pyramid: boxes (n, 5) x1, y1, x2, y2, score after NMS, regressed, squared."""
        height, width = sums.shape[1] - 1, sums.shape[2] - 1
        found, found_inds = [], []
        for scale in pyramid_scales(height, width, min_face_size, max_face_size):
            scaled = _pool_resize(sums, int(height * scale + 1), int(width * scale + 1))
            reg, probs = self.run("pnet", _normalized(scaled))
            boxes, image_inds = _generate_boxes(reg, probs[:, 1], scale, self.thresholds[0])
            keep = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.5)
            found.append(boxes[keep])
            found_inds.append(image_inds[keep])
        boxes = np.concatenate(found) if found else np.zeros((0, 9), np.float32)
        image_inds = np.concatenate(found_inds) if found_inds else np.zeros(0, np.int64)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds = boxes[keep], image_inds[keep]
        widths = (boxes[:, 2] - boxes[:, 0])[:, None]
        heights = (boxes[:, 3] - boxes[:, 1])[:, None]
        regressed = boxes[:, :4] + boxes[:, 5:9] * np.concatenate([widths, heights, widths, heights], axis=1)
        return _square(np.concatenate([regressed, boxes[:, 4:5]], axis=1)), image_inds

    def _refine(self, sums: np.ndarray, boxes: np.ndarray, image_inds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """R-net on 24 px crops of the proposals: score, NMS, regression, squared."""
        boxes, image_inds, crops = _crops(sums, boxes, image_inds, 24)
        if not len(boxes):
            return boxes, image_inds
        reg, probs = self.run("rnet", _normalized(crops))
        is_kept = probs[:, 1] > self.thresholds[1]
        boxes = np.concatenate([boxes[is_kept, :4], probs[is_kept, 1:2]], axis=1)
        image_inds, reg = image_inds[is_kept], reg[is_kept]
        keep = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        return _square(_regress(boxes[keep], reg[keep])), image_inds[keep]

    def _output(self, sums: np.ndarray, boxes: np.ndarray,
                image_inds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-net on 48 px crops: final boxes (n, 5), their image, landmarks (n, 5, 2), 'Min' NMS."""
        boxes, image_inds, crops = _crops(sums, boxes, image_inds, 48)
        if not len(boxes):
            return boxes, image_inds, np.zeros((0, 5, 2), np.float32)
        reg, marks, probs = self.run("onet", _normalized(crops))
        is_kept = probs[:, 1] > self.thresholds[2]
        boxes = np.concatenate([boxes[is_kept, :4], probs[is_kept, 1:2]], axis=1)
        image_inds, reg, marks = image_inds[is_kept], reg[is_kept], marks[is_kept]
        widths = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        heights = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points_x = widths * marks[:, :5] + boxes[:, 0:1] - 1
        points_y = heights * marks[:, 5:10] + boxes[:, 1:2] - 1
        points = np.stack([points_x, points_y], axis=2).astype(np.float32)
        boxes = _regress(boxes, reg)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7, method="min")
        return boxes[keep], image_inds[keep], points[keep]


def pyramid_scales(height: int, width: int, min_face_size: float,
                   max_face_size: Optional[float] = None) -> list[float]:
    """facenet-pytorch's P-net scales: 12 / min_face_size, then x0.709 while the short side stays >= 12 px.

    A scale s finds faces of about 12 / s px; with max_face_size, scales finding only larger faces go.
    """
    first = 12.0 / min_face_size
    short_side = min(height, width) * first
    scales, scale = [], first
    while short_side >= 12:
        scales.append(scale)
        scale *= _FACTOR
        short_side *= _FACTOR
    if max_face_size is not None:
        scales = [s for s in scales if 12.0 / s <= max_face_size]
    return scales


def integral_image(images: np.ndarray) -> np.ndarray:
    """Summed-area table of uint8 images (N, H, W, C) -> (N, H + 1, W + 1, C), exact integers.

    Every area resize of the cascade (pyramid levels, 24 and 48 px crops) reads its box sums
    from this one table, so each costs only the size of its output.
    """
    images = np.asarray(images)
    dtype = np.int32 if images.shape[1] * images.shape[2] * 255 < 2**31 else np.int64
    sums = np.zeros((images.shape[0], images.shape[1] + 1, images.shape[2] + 1, images.shape[3]), dtype=dtype)
    np.cumsum(images, axis=1, dtype=dtype, out=sums[:, 1:, 1:])
    np.cumsum(sums[:, 1:, 1:], axis=2, out=sums[:, 1:, 1:])
    return sums


def batched_nms(boxes: np.ndarray, scores: np.ndarray, image_inds: np.ndarray, threshold: float,
                method: str = "union") -> np.ndarray:
    """Greedy NMS per image: indices kept, best score first.

    "union" is torchvision's nms (IoU, areas without +1); "min" is facenet's nms_numpy 'Min'
    (intersection over the smaller box, areas with +1), its last stage.
    """
    kept = [image_order[_nms(boxes[image_order], scores[image_order], threshold, method)]
            for image_order in (np.flatnonzero(image_inds == i) for i in np.unique(image_inds))]
    if not kept:
        return np.zeros(0, dtype=np.int64)
    kept_all = np.concatenate(kept)
    return kept_all[np.argsort(-scores[kept_all], kind="stable")]


# --- the nets as ONNX graphs ---------------------------------------------------------------


def build_pnet(weights: dict[str, np.ndarray]) -> Any:
    """P-net (fully convolutional): image (N, 3, H, W) -> reg (N, 4, h, w), prob (N, 2, h, w)."""
    graph = _GraphBuilder(weights)
    x = graph.conv_prelu("image", "conv1", "prelu1")
    x = graph.max_pool(x, 2, 2)
    x = graph.conv_prelu(x, "conv2", "prelu2")
    x = graph.conv_prelu(x, "conv3", "prelu3")
    graph.softmax(graph.conv(x, "conv4_1"), "prob")
    graph.conv(x, "conv4_2", output="reg")
    return graph.model(["reg", "prob"], {"reg": 4, "prob": 2}, spatial=True)


def build_rnet(weights: dict[str, np.ndarray]) -> Any:
    """R-net: image (N, 3, 24, 24) -> reg (N, 4), prob (N, 2)."""
    graph = _GraphBuilder(weights)
    x = graph.max_pool(graph.conv_prelu("image", "conv1", "prelu1"), 3, 2)
    x = graph.max_pool(graph.conv_prelu(x, "conv2", "prelu2"), 3, 2)
    x = graph.conv_prelu(x, "conv3", "prelu3")
    x = graph.dense_prelu(graph.flatten_as_facenet(x), "dense4", "prelu4")
    graph.softmax(graph.dense(x, "dense5_1"), "prob")
    graph.dense(x, "dense5_2", output="reg")
    return graph.model(["reg", "prob"], {"reg": 4, "prob": 2}, spatial=False, size=24)


def build_onet(weights: dict[str, np.ndarray]) -> Any:
    """O-net: image (N, 3, 48, 48) -> reg (N, 4), landmarks (N, 10), prob (N, 2)."""
    graph = _GraphBuilder(weights)
    x = graph.max_pool(graph.conv_prelu("image", "conv1", "prelu1"), 3, 2)
    x = graph.max_pool(graph.conv_prelu(x, "conv2", "prelu2"), 3, 2)
    x = graph.max_pool(graph.conv_prelu(x, "conv3", "prelu3"), 2, 2)
    x = graph.conv_prelu(x, "conv4", "prelu4")
    x = graph.dense_prelu(graph.flatten_as_facenet(x), "dense5", "prelu5")
    graph.softmax(graph.dense(x, "dense6_1"), "prob")
    graph.dense(x, "dense6_2", output="reg")
    graph.dense(x, "dense6_3", output="landmarks")
    return graph.model(["reg", "landmarks", "prob"], {"reg": 4, "landmarks": 10, "prob": 2}, spatial=False, size=48)


class _GraphBuilder:
    """Appends ONNX nodes named after facenet's layers; weights become initializers."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def _weight(self, name: str, shape: Optional[tuple[int, ...]] = None) -> str:
        from onnx import numpy_helper

        array = self.weights[name].astype(np.float32)
        self.initializers.append(numpy_helper.from_array(array if shape is None else array.reshape(shape), name))
        return name

    def _node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def conv(self, x: str, layer: str, output: Optional[str] = None) -> str:
        inputs = [x, self._weight(f"{layer}.weight"), self._weight(f"{layer}.bias")]
        return self._node("Conv", inputs, output or layer)

    def conv_prelu(self, x: str, layer: str, prelu: str) -> str:
        slope = self._weight(f"{prelu}.weight", (-1, 1, 1))  # per channel, broadcast over H, W
        return self._node("PRelu", [self.conv(x, layer), slope], prelu)

    def max_pool(self, x: str, kernel: int, stride: int) -> str:
        return self._node("MaxPool", [x], f"{x}_pool", kernel_shape=[kernel, kernel], strides=[stride, stride],
                          ceil_mode=1)

    def flatten_as_facenet(self, x: str) -> str:
        """facenet's x.permute(0, 3, 2, 1).view(N, -1): the dense weights expect W, H, C order."""
        return self._node("Flatten", [self._node("Transpose", [x], f"{x}_wh", perm=[0, 3, 2, 1])], f"{x}_flat", axis=1)

    def dense(self, x: str, layer: str, output: Optional[str] = None) -> str:
        inputs = [x, self._weight(f"{layer}.weight"), self._weight(f"{layer}.bias")]
        return self._node("Gemm", inputs, output or layer, transB=1)

    def dense_prelu(self, x: str, layer: str, prelu: str) -> str:
        return self._node("PRelu", [self.dense(x, layer), self._weight(f"{prelu}.weight")], prelu)

    def softmax(self, x: str, output: str) -> str:
        return self._node("Softmax", [x], output, axis=1)

    def model(self, outputs: list[str], channels: dict[str, int], spatial: bool, size: int = 0) -> Any:
        from onnx import TensorProto, checker, helper

        side: list[Any] = ["height", "width"] if spatial else [size, size]
        image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, *side])
        out_shape = (lambda n: ["batch", n, "out_height", "out_width"]) if spatial else (lambda n: ["batch", n])
        results = [helper.make_tensor_value_info(name, TensorProto.FLOAT, out_shape(channels[name]))
                   for name in outputs]
        graph = helper.make_graph(self.nodes, "mtcnn", [image], results, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
        model.ir_version = 8  # onnxruntime reads IR 8 onwards; onnx 1.23 would write a newer one
        checker.check_model(model)
        return model


# --- private helpers -------------------------------------------------------------------


def _bins(start: np.ndarray, length: np.ndarray, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive pooling bins of `out_size` over [start, start + length): (first, end) indices (n, out_size)."""
    index = np.arange(out_size)[None, :]
    length = np.asarray(length)[:, None]
    first = np.asarray(start)[:, None] + (index * length) // out_size
    end = np.asarray(start)[:, None] - ((-(index + 1) * length) // out_size)
    return first, end


def _pool_resize(sums: np.ndarray, out_height: int, out_width: int) -> np.ndarray:
    """Whole images from their integral image, area-resized: (N, out_height, out_width, C) float32.

    As torch's `interpolate(mode="area")`: output pixel i averages input pixels floor(i * n / m) ..
    ceil((i + 1) * n / m) - 1 on each axis. (cv2.INTER_AREA weights the pixels at the bin edges by
    their overlap: a different average.)
    """
    height, width = sums.shape[1] - 1, sums.shape[2] - 1
    row_first, row_end = (b[0] for b in _bins(np.zeros(1, int), np.array([height]), out_height))
    col_first, col_end = (b[0] for b in _bins(np.zeros(1, int), np.array([width]), out_width))
    rows = np.take(sums, row_end, axis=1) - np.take(sums, row_first, axis=1)
    totals = np.take(rows, col_end, axis=2) - np.take(rows, col_first, axis=2)
    counts = (row_end - row_first)[:, None, None] * (col_end - col_first)[None, :, None]
    return (totals / counts).astype(np.float32)


def _normalized(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) pixel values -> the nets' NCHW input, as facenet feeds them."""
    return np.ascontiguousarray(((images - _NORMALIZE[0]) * _NORMALIZE[1]).transpose(0, 3, 1, 2), dtype=np.float32)


def _generate_boxes(reg: np.ndarray, probs: np.ndarray, scale: float,
                    threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """facenet's generateBoundingBox: one 12 px cell per P-net output at or above the threshold.

    Returns boxes (n, 9): x1, y1, x2, y2, score, reg (4), and each box's image index.
    """
    image_inds, ys, xs = np.nonzero(probs >= threshold)
    cells = np.stack([xs, ys], axis=1).astype(np.float32)
    scale32 = np.float32(scale)
    top_left = np.floor((2 * cells + 1) / scale32)
    bottom_right = np.floor((2 * cells + 12) / scale32)
    offsets = reg[image_inds, :, ys, xs].reshape(-1, 4)
    score = probs[image_inds, ys, xs][:, None]
    return np.concatenate([top_left, bottom_right, score, offsets], axis=1).astype(np.float32), image_inds


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str) -> np.ndarray:
    plus = 1.0 if method == "min" else 0.0
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1 + plus) * (y2 - y1 + plus)
    order = np.argsort(-scores, kind="stable")
    kept = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(best)
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + plus)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + plus)
        inter = inter_w * inter_h
        if method == "min":
            overlap = inter / np.minimum(areas[best], areas[rest])
        else:
            overlap = inter / np.maximum(areas[best] + areas[rest] - inter, np.finfo(np.float32).tiny)
        order = rest[overlap <= threshold]
    return np.array(kept, dtype=np.int64)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """facenet's bbreg: move each edge by reg x the box size (+1 px, as facenet)."""
    widths = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    heights = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    moved = boxes[:, :4] + reg[:, :4] * np.concatenate([widths, heights, widths, heights], axis=1)
    return np.concatenate([moved, boxes[:, 4:]], axis=1).astype(np.float32)


def _square(boxes: np.ndarray) -> np.ndarray:
    """facenet's rerec: each box becomes the square of its longer side, same centre."""
    boxes = boxes.astype(np.float32).copy()
    heights = boxes[:, 3] - boxes[:, 1]
    widths = boxes[:, 2] - boxes[:, 0]
    sides = np.maximum(widths, heights)
    boxes[:, 0] = boxes[:, 0] + widths * 0.5 - sides * 0.5
    boxes[:, 1] = boxes[:, 1] + heights * 0.5 - sides * 0.5
    boxes[:, 2:4] = boxes[:, :2] + sides[:, None]
    return boxes


def _crops(sums: np.ndarray, boxes: np.ndarray, image_inds: np.ndarray,
           size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """facenet's pad + crop + area resize to size x size: (n, size, size, C) float32 pixel values.

    Boxes with no pixel inside the image are dropped (facenet would fail on them).
    """
    height, width = sums.shape[1] - 1, sums.shape[2] - 1
    corners = np.trunc(boxes[:, :4]).astype(np.int64)
    x, y = np.maximum(corners[:, 0], 1), np.maximum(corners[:, 1], 1)
    ex, ey = np.minimum(corners[:, 2], width), np.minimum(corners[:, 3], height)
    has_pixels = (ey > y - 1) & (ex > x - 1)
    x, y, ex, ey, image_inds = x[has_pixels], y[has_pixels], ex[has_pixels], ey[has_pixels], image_inds[has_pixels]
    row_first, row_end = _bins(y - 1, ey - y + 1, size)  # facenet crops rows y - 1 .. ey - 1
    col_first, col_end = _bins(x - 1, ex - x + 1, size)
    flat = sums.reshape(-1, sums.shape[3])  # one flat index per corner: much faster than three index arrays
    first_rows = (image_inds * (height + 1))[:, None]
    pixels = [_box_means(flat, width + 1, first_rows[i:i + _CROP_CHUNK] + row_first[i:i + _CROP_CHUNK],
                         first_rows[i:i + _CROP_CHUNK] + row_end[i:i + _CROP_CHUNK],
                         col_first[i:i + _CROP_CHUNK], col_end[i:i + _CROP_CHUNK])
              for i in range(0, len(image_inds), _CROP_CHUNK)]
    crops = np.concatenate(pixels) if pixels else np.zeros((0, size, size, sums.shape[3]), np.float32)
    return boxes[has_pixels], image_inds, crops


def _box_means(flat: np.ndarray, row_length: int, row_first: np.ndarray, row_end: np.ndarray,
               col_first: np.ndarray, col_end: np.ndarray) -> np.ndarray:
    """Means of the boxes rows [first, end) x cols [first, end) of a flattened integral image: (n, r, c, C)."""
    def corner(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.take(flat, rows[:, :, None] * row_length + cols[:, None, :], axis=0)

    totals = corner(row_end, col_end) - corner(row_first, col_end) - corner(row_end, col_first) + \
        corner(row_first, col_first)
    counts = (row_end - row_first)[:, :, None, None] * (col_end - col_first)[:, None, :, None]
    return (totals / counts.astype(np.float32)).astype(np.float32)


def _per_image(boxes: np.ndarray, points: np.ndarray) -> Detection:
    """facenet's detect(select_largest=True): largest box first; None x3 when there is none."""
    if not len(boxes):
        return None, None, None
    order = np.argsort((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[::-1]
    return boxes[order, :4], boxes[order, 4], points[order]
