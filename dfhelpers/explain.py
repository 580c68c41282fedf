"""Where in a face crop the model saw a fake: Grad-CAM heatmaps, with an occlusion map as fallback."""

from __future__ import annotations

from typing import Any, Literal, Optional

import numpy as np
import pandas as pd

OCCLUSION_PATCH = 8  # occlusion map: a crop is covered by an 8 x 8 grid of grey squares, one at a time
OCCLUSION_GREY = 128.0  # the colour of the square: the middle of the 0..255 crop range the model takes


def heatmaps(model: Any, crops: np.ndarray, method: Literal["auto", "gradcam", "occlusion"] = "auto",
             layer: Optional[str] = None) -> tuple[np.ndarray, str]:
    """One heatmap per crop, (k, height, width) in [0, 1]: 1 is where the evidence for FAKE is strongest.

    "auto" uses Grad-CAM on the last layer of the model whose output is a spatial feature map
    (a nested backbone counts as one layer), and the occlusion map when there is none or its
    gradients vanish. Returns (heatmaps, the method used).

    Args:
        model: a Keras model per the model contract: (k, size, size, 3) 0..255 -> (k, 1) P(FAKE).
        crops: (k, size, size, 3) uint8 or float crops as the model sees them.
    """
    crops = np.asarray(crops, dtype=np.float32)
    if len(crops) == 0:
        return np.zeros(crops.shape[:3], dtype=np.float32), method
    layer = layer or last_feature_map_layer(model)
    if method in ("auto", "gradcam") and layer is not None:
        try:
            maps = grad_cam(model, crops, layer)
        except ValueError:  # the layer's output is not reachable from the model's input in this graph
            if method == "gradcam":
                raise
        else:
            if method == "gradcam" or np.all(maps.reshape(len(maps), -1).max(axis=1) > 0):
                return maps, "gradcam"
    return occlusion(model, crops), "occlusion"


def last_feature_map_layer(model: Any) -> Optional[str]:
    """Name of the last top-level layer whose output is a (batch, h, w, channels) map smaller than the input.

    Layers at input resolution (rescaling, fixed filters) are no place for Grad-CAM: their
    "map" is the image itself. None when the model has no such layer (e.g. a dense-only model).
    """
    height = model.input_shape[1]
    for candidate in reversed(model.layers):
        shape = getattr(candidate, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and shape[1] is not None and (height is None or shape[1] < height):
            return candidate.name
    return None


def grad_cam(model: Any, crops: np.ndarray, layer: str) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) of P(FAKE) at `layer`, upsampled to the crop size, each map in [0, 1].

    The channel weights are the spatial mean of d P(FAKE) / d feature; the map is the ReLU of
    the weighted sum of channels. A map that is zero everywhere stays zero (no evidence found).
    """
    import keras
    import tensorflow as tf

    probe = _probe(model, layer)
    inputs = tf.convert_to_tensor(crops, dtype=tf.float32)
    with tf.GradientTape() as tape:
        features, fake_probability = probe(inputs, training=False)
        target = tf.reduce_sum(fake_probability[:, 0])
    gradients = tape.gradient(target, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    maps = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1, keepdims=True))
    resized = tf.image.resize(maps, crops.shape[1:3], method="bilinear")[..., 0].numpy()
    return _normalise(resized)


def occlusion(model: Any, crops: np.ndarray, grid: int = OCCLUSION_PATCH) -> np.ndarray:
    """Occlusion map: how much P(FAKE) drops when each cell of a grid x grid partition is greyed out.

    Works for any model (no gradients, no layer names); costs grid**2 model calls per crop.
    """
    height, width = crops.shape[1:3]
    rows = np.linspace(0, height, grid + 1).round().astype(int)
    cols = np.linspace(0, width, grid + 1).round().astype(int)
    maps = np.zeros(crops.shape[:3], dtype=np.float32)
    for index, crop in enumerate(crops):
        occluded = np.repeat(crop[None], grid * grid, axis=0)
        cells = [(r, c) for r in range(grid) for c in range(grid)]
        for k, (r, c) in enumerate(cells):
            occluded[k, rows[r]:rows[r + 1], cols[c]:cols[c + 1]] = OCCLUSION_GREY
        base = float(np.asarray(model.predict_on_batch(crop[None])).reshape(-1)[0])
        dropped = base - np.asarray(model.predict_on_batch(occluded)).reshape(-1)
        for k, (r, c) in enumerate(cells):
            maps[index, rows[r]:rows[r + 1], cols[c]:cols[c + 1]] = max(0.0, float(dropped[k]))
    return _normalise(maps)


def explain_video(model: Any, crops: np.ndarray, faces: pd.DataFrame, track: int, title: str,
                  per_video: int = 6) -> dict[str, Any]:
    """Heatmaps of up to `per_video` crops of the deciding track, evenly spread over the video.

    `crops` (k, size, size, 3) and `faces` (k rows: frame, track, score) are in the same order;
    track -1 means all faces decided. Returns the dict plots.explanation_strips draws.
    """
    picks = pick_evenly(faces, track, per_video)
    chosen = np.asarray(crops)[picks]
    maps, method = heatmaps(model, chosen)
    return {"title": title, "crops": chosen.astype(np.uint8), "heatmaps": maps, "method": method,
            "frames": faces["frame"].to_numpy()[picks].astype(int),
            "scores": faces["score"].to_numpy(dtype=np.float64)[picks]}


def explain_saved(model: Any, videos: pd.DataFrame, crops: dict[str, list], faces: pd.DataFrame) -> list[dict]:
    """explain_video for each row of `videos` (video, track, label, score) from crops saved by notebook 05.

    `crops` maps a video to [(frame, crop)] as evaluation.timeline_crops reads them; the face scores
    of those frames come from `faces` (video, frame, track, score).
    """
    explained = []
    for row in videos.itertuples():
        frames = [frame for frame, _ in crops.get(row.video, [])]
        if not frames:
            continue
        video_faces = faces[(faces["video"] == row.video) & (row.track < 0 or faces["track"] == row.track)]
        shown = video_faces.drop_duplicates("frame").set_index("frame").loc[frames].reset_index()
        title = f"{row.video}: true {row.label}, video score {row.score:.2f}"
        explained.append(explain_video(model, np.stack([crop for _, crop in crops[row.video]]),
                                       shown.assign(track=-1), -1, title, per_video=len(frames)))
    return explained


def pick_evenly(faces: pd.DataFrame, track: int, n: int) -> np.ndarray:
    """Positions (into `faces`) of up to n faces of `track` (-1: any), evenly spread over the frames."""
    positions = np.flatnonzero(faces["track"].to_numpy() == track) if track >= 0 else np.arange(len(faces))
    positions = positions[np.argsort(faces["frame"].to_numpy()[positions], kind="stable")]
    if len(positions) == 0:
        return positions
    return positions[np.unique(np.linspace(0, len(positions) - 1, n).round().astype(int))]


# --- private helpers -------------------------------------------------------------------


def _probe(model: Any, layer: str) -> Any:
    """A model from the crops to (the layer's feature map, P(FAKE)).

    A nested backbone's `output` belongs to its own inner graph; the tensor it produced in
    this model's graph is the output of its call node here, so each call node is tried.
    Raises ValueError when none is connected to the model's input.
    """
    import keras

    target = model.get_layer(layer)
    candidates = [target.output] + [node.output_tensors[0] for node in getattr(target, "_inbound_nodes", [])]
    for output in candidates:
        try:
            return keras.Model(model.inputs, [output, model.outputs[0]])
        except ValueError:
            continue
    raise ValueError(f"layer {layer!r} is not connected to the model's input")


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its own maximum; an all-zero map stays zero."""
    maps = np.asarray(maps, dtype=np.float32)
    highest = maps.reshape(len(maps), -1).max(axis=1)
    return np.where(highest[:, None, None] > 0, maps / np.maximum(highest, 1e-12)[:, None, None], 0.0).astype(np.float32)
