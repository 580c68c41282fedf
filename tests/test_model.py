"""dfhelpers.model: backbone registry, heads, SRM front end, save/load, weight errors."""

from pathlib import Path

import keras
import numpy as np
import pytest
from keras.src.backend import config as keras_config

from dfhelpers import model
from dfhelpers.config import TrainConfig
from dfhelpers.errors import ConfigError, MissingWeightsError, ModelLoadError

CROP_SIZE = 40


def _crops(n: int = 3, size: int = CROP_SIZE) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.parametrize(
    "backbone, image_size",
    [("small_cnn", 32), ("mobilenet_v2", 32), ("nasnet_mobile", 32), ("efficientnet_b0", 32),
     ("inception_resnet_v2", 75)],
)
def test_each_backbone_builds_without_weights_and_outputs_one_probability(backbone, image_size):
    classifier = model.build(TrainConfig(backbone=backbone, image_size=image_size, weights=None), crop_size=CROP_SIZE)
    fake_probability = classifier.predict(_crops(), verbose=0)
    assert classifier.input_shape == (None, CROP_SIZE, CROP_SIZE, 3)
    assert fake_probability.shape == (3, 1) and ((fake_probability >= 0) & (fake_probability <= 1)).all()


def test_the_original_head_is_flatten_dense_dropout_dense():
    classifier = model.build(TrainConfig(backbone="small_cnn", weights=None, head="flatten", image_size=32,
                                         cnn_filters=(4,)), crop_size=CROP_SIZE)
    tail = [layer.name for layer in classifier.layers[-6:]]
    assert tail == ["flatten", "dense", "dropout", "fake_logit", "temperature", "fake_probability"]
    assert classifier.get_layer("dense").units == 512


@pytest.mark.parametrize("framing, sees_the_margin", [("margin", True), ("face", False), ("padded_face", False)])
def test_the_framing_decides_whether_the_model_sees_the_crop_outside_the_face_box(framing, sees_the_margin):
    margin = 10  # crops of 40 px: the face box is the centre 30 px
    classifier = model.build(TrainConfig(backbone="small_cnn", weights=None, image_size=32, cnn_filters=(4,),
                                         framing=framing), crop_size=CROP_SIZE, margin=margin)
    crops = _crops()
    outside = crops.copy()
    outside[:, :margin // 2], outside[:, :, -(margin // 2):] = 0.0, 255.0  # only the margin changes
    logit = model.logits(classifier)
    changed = np.abs(logit.predict(crops, verbose=0) - logit.predict(outside, verbose=0)).max()
    assert (changed > 1e-4) == sees_the_margin
    assert classifier.input_shape == (None, CROP_SIZE, CROP_SIZE, 3)  # scoring feeds whole crops either way


def test_padded_face_framing_repeats_the_face_box_edges_over_the_margin_as_a_padded_face_image_is():
    import cv2

    margin = 9  # 4 px before the box, 5 after: facenet-pytorch's split of an odd margin
    crops = _crops(3)
    framed = np.asarray(model.FaceBoxEdges(margin // 2, margin - margin // 2)(crops))
    box = crops[:, 4:CROP_SIZE - 5, 4:CROP_SIZE - 5]
    expected = np.stack([cv2.copyMakeBorder(crop, 4, 5, 4, 5, cv2.BORDER_REPLICATE) for crop in box])
    np.testing.assert_array_equal(framed, expected)


@pytest.mark.parametrize("head, pooled_layer, pool", [
    ("pool", "pool", lambda features: features.mean(axis=(1, 2))),
    ("avg_max", "avg_max", lambda features: np.concatenate([features.mean(axis=(1, 2)), features.max(axis=(1, 2))], 1)),
])
def test_global_pooling_heads_feed_the_logit_the_pooled_backbone_features(head, pooled_layer, pool):
    classifier = model.build(TrainConfig(backbone="small_cnn", weights=None, head=head, image_size=32,
                                         cnn_filters=(4,)), crop_size=CROP_SIZE)
    names = [layer.name for layer in classifier.layers]
    assert names[names.index("small_cnn") + 1:] == [
        *(["pool"] if head == "pool" else ["pool", "max_pool", "avg_max"]),
        "dropout", "fake_logit", "temperature", "fake_probability"]  # no Flatten, no Dense(512)
    # the backbone's features (image_size 32, one block of 4 filters: 16x16x4) and what the head makes of them
    probe = keras.Model(classifier.inputs,
                        [classifier.get_layer("pool").input, classifier.get_layer(pooled_layer).output])
    features, pooled = probe.predict(_crops(), verbose=0)
    assert features.shape == (3, 16, 16, 4)
    np.testing.assert_allclose(pooled, pool(features), rtol=1e-5, atol=1e-6)
    assert classifier.get_layer("fake_logit").kernel.shape == (pooled.shape[1], 1)
    assert classifier.predict(_crops(), verbose=0).shape == (3, 1)


def test_save_and_load_round_trip_gives_the_same_predictions(tmp_path):
    train = TrainConfig(backbone="small_cnn", weights=None, front_end="srm", image_size=32, cnn_filters=(4, 8))
    classifier = model.compile_model(model.build(train, crop_size=CROP_SIZE), train, steps_per_epoch=1)
    classifier.save(tmp_path / "classifier.keras")
    loaded = model.load(tmp_path / "classifier.keras")
    np.testing.assert_allclose(loaded.predict(_crops(), verbose=0), classifier.predict(_crops(), verbose=0), atol=1e-6)
    assert isinstance(loaded.get_layer("srm"), model.SRMResiduals)


def test_srm_residuals_are_zero_on_a_flat_image_and_bounded():
    layer = model.SRMResiduals(truncation=3.0)
    flat = np.full((1, 16, 16, 3), 128.0, dtype="float32")
    noisy = _crops(1, 16)
    assert np.abs(np.asarray(layer(flat))[:, 2:-2, 2:-2]).max() < 1e-4  # float32 rounding of 1/12
    residuals = np.asarray(layer(noisy))
    assert residuals.shape == (1, 16, 16, 3) and np.abs(residuals).max() <= 1.0


def test_the_temperature_and_offset_apply_to_the_logit_and_survive_save_and_load(tmp_path):
    train = TrainConfig(backbone="small_cnn", weights=None, image_size=32, cnn_filters=(4,), head="pool")
    classifier = model.build(train, crop_size=CROP_SIZE)
    logit = model.logits(classifier).predict(_crops(), verbose=0)
    model.set_temperature(classifier, 4.0, offset=1.5)
    classifier.save(tmp_path / "calibrated.keras")
    loaded = model.load(tmp_path / "calibrated.keras")
    assert model.temperature(loaded) == pytest.approx(4.0) and model.offset(loaded) == pytest.approx(1.5)
    np.testing.assert_allclose(loaded.predict(_crops(), verbose=0), 1 / (1 + np.exp(-(logit / 4.0 + 1.5))), atol=1e-5)


def test_loading_a_missing_model_names_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match="nothing.keras"):
        model.load(tmp_path / "nothing.keras")


def test_loading_a_corrupt_model_names_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"this is not a zip archive")
    with pytest.raises(ModelLoadError, match="corrupt.keras"):
        model.load(corrupt)


def test_unavailable_imagenet_weights_name_the_config_key(monkeypatch, tmp_path):
    # Simulate "offline" even where a network exists: downloads go through a dead proxy, and an
    # empty Keras home stands for ~/.keras (Keras reads KERAS_HOME once, at import, into _KERAS_DIR),
    # so weights a user cached earlier are not found.
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))
    train = TrainConfig(backbone="mobilenet_v2", weights="imagenet", image_size=96)
    with pytest.raises(MissingWeightsError, match="train.weights: null"):
        model.build(train, crop_size=96)


def test_small_cnn_has_no_imagenet_weights():
    with pytest.raises(MissingWeightsError, match="train.weights: null"):
        model.build(TrainConfig(backbone="small_cnn", weights="imagenet", image_size=32), crop_size=CROP_SIZE)


def test_unknown_backbone_is_a_config_error_listing_the_choices():
    with pytest.raises(ConfigError, match="inception_resnet_v2"):
        model.build(TrainConfig(backbone="xception9000"), crop_size=CROP_SIZE)


def test_image_size_below_the_backbone_minimum_is_a_config_error():
    with pytest.raises(ConfigError, match="minimum 75"):
        model.build(TrainConfig(backbone="inception_resnet_v2", image_size=64), crop_size=CROP_SIZE)


def _saved_srm_classifier(path: Path, image_size: int = CROP_SIZE, framing: str = "margin",
                          offset: float = 0.0) -> Path:
    train = TrainConfig(backbone="small_cnn", weights=None, front_end="srm", image_size=image_size,
                        cnn_filters=(4, 8), framing=framing)
    classifier = model.build(train, crop_size=CROP_SIZE, margin=8)
    if offset:
        model.set_temperature(classifier, 2.0, offset)  # a Platt calibration
    classifier.save(path)
    return path


@pytest.mark.parametrize("framing, image_size, offset", [("margin", CROP_SIZE, 0.0), ("face", CROP_SIZE - 8, 0.0),
                                                         ("padded_face", CROP_SIZE, 0.0),
                                                         ("margin", CROP_SIZE, 1.5)])  # face: the box
def test_onnx_export_agrees_with_keras_for_any_batch_size_and_records_the_keras_sha(tmp_path, framing, image_size,
                                                                                    offset):
    import onnxruntime

    from dfhelpers import files, onnxfile

    keras_path = _saved_srm_classifier(tmp_path / "classifier.keras", image_size, framing, offset)
    onnx_path = model.export_onnx(keras_path)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = model.load(keras_path).predict(_crops(5), verbose=0)
    for n_crops in (1, 5):
        outputs = session.run(None, {session.get_inputs()[0].name: _crops(5)[:n_crops]})[0]
        np.testing.assert_allclose(outputs, expected[:n_crops], atol=1e-4)
    assert onnx_path == tmp_path / "classifier.onnx"
    assert onnxfile.recorded_keras_sha256(session) == files.sha256(keras_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier.keras", "classifier.onnx"]  # no temporaries


def test_onnx_export_of_a_corrupt_keras_file_is_one_line_naming_it_and_writes_nothing(tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a keras archive")
    with pytest.raises(ModelLoadError, match="corrupt.keras") as raised:
        model.export_onnx(corrupt, tmp_path / "out.onnx")
    assert "\n" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.keras"]


def test_an_onnx_export_that_disagrees_with_keras_is_refused_and_not_written(tmp_path, monkeypatch):
    keras_path = _saved_srm_classifier(tmp_path / "classifier.keras")
    monkeypatch.setattr(model, "ONNX_TOLERANCE", -1.0)  # nothing agrees within a negative tolerance
    with pytest.raises(ModelLoadError, match="classifier.onnx: the ONNX export differs"):
        model.export_onnx(keras_path)
    assert not (tmp_path / "classifier.onnx").exists()


def test_a_model_whose_export_cannot_run_on_onnxruntime_is_a_one_line_error_naming_the_file(tmp_path):
    # antialiased Resizing (image_size != crop_size) becomes TensorFlow's ScaleAndTranslate, no ONNX op
    keras_path = _saved_srm_classifier(tmp_path / "resized.keras", image_size=32)
    with pytest.raises(ModelLoadError, match=r"resized.onnx: the ONNX export does not run on onnxruntime") as raised:
        model.export_onnx(keras_path)
    assert "\n" not in str(raised.value) and ".tmp" not in str(raised.value)
    assert not (tmp_path / "resized.onnx").exists()


def test_trainable_from_freezes_the_backbone_layers_before_it_and_freeze_bn_every_batchnorm():
    train = TrainConfig(backbone="efficientnet_lite0", weights=None, image_size=32,
                        trainable_from="block4_expand_conv", freeze_bn=True)
    extractor = model.build(train, crop_size=CROP_SIZE).get_layer("efficientnet_lite0")
    names = [layer.name for layer in extractor.layers]
    first = names.index("block4_expand_conv")
    assert not any(layer.trainable for layer in extractor.layers[:first])
    assert extractor.get_layer("block4_expand_conv").trainable and extractor.get_layer("head_conv").trainable
    assert not extractor.get_layer("head_bn").trainable


def test_trainable_from_a_layer_the_backbone_lacks_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="train.trainable_from 'no_such_layer'"):
        model.build(TrainConfig(backbone="small_cnn", weights=None, image_size=32,
                                trainable_from="no_such_layer"), crop_size=CROP_SIZE)
