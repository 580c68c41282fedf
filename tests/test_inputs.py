"""dfhelpers.inputs: the tf.data pipeline from split.csv, augmentation, bad-crop handling."""

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import crops
from dfhelpers import config, inputs, runfolder
from dfhelpers.errors import CropError, SplitError
from dfhelpers.selfblend import LANDMARK_COLUMNS

CROP_SIZE = 24


def _write_run(work_dir: Path, n_per_video: int = 3) -> None:
    """Two REAL and two FAKE videos per split; REAL crops dark, FAKE crops bright."""
    def pixels(rng, label):
        level = 40 if label == "REAL" else 200
        return np.clip(rng.normal(level, 10, (CROP_SIZE, CROP_SIZE, 3)), 0, 255).astype("uint8")

    crops.write_run(work_dir, n_per_video, pixels)


def _decoded(paths: list[Path]) -> np.ndarray:
    """Crop JPEGs decoded as the training pipeline decodes them (libjpeg's ISLOW): (N, S, S, 3) float32."""
    import tensorflow as tf

    return np.stack([tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3, dct_method="INTEGER_ACCURATE").numpy()
                     for path in paths]).astype("float32")


def _config(work_dir: Path, **train: object) -> config.Config:
    raw = {"work_dir": str(work_dir), "data_dirs": [], "faces": {"crop_size": CROP_SIZE, "margin": 8},
           # given fakes (these crops have no landmarks) and original.yaml's augmentation, unless a test says otherwise
           "train": {"batch_size": 4, "image_size": CROP_SIZE, "fakes": "given", "rotation": 0.75, "shift": 0.2,
                     "vertical_flip": True, **train}}
    return config.from_dict(raw, base_dir=work_dir)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    _write_run(tmp_path)
    return tmp_path


def test_read_split_maps_real_to_0_and_fake_to_1(run_dir):
    split = runfolder.read_split(_config(run_dir).split_csv)
    assert (split["label_index"] == split["label"].map({"REAL": 0, "FAKE": 1})).all()


def test_read_split_rejects_an_unknown_label(run_dir):
    split_csv = run_dir / "manifests" / "split.csv"
    pd.read_csv(split_csv).assign(label="MAYBE").to_csv(split_csv, index=False)
    with pytest.raises(SplitError, match="MAYBE"):
        runfolder.read_split(_config(run_dir).split_csv)


def test_eval_pipeline_yields_float_crops_with_their_labels_in_order(run_dir):
    cfg = _config(run_dir)
    val = runfolder.read_split(cfg.split_csv).query("split == 'val'")
    batches = list(inputs.make_dataset(val, cfg, training=False))
    images = np.concatenate([images.numpy() for images, _ in batches])
    labels = np.concatenate([labels.numpy() for _, labels in batches])
    assert images.shape == (len(val), CROP_SIZE, CROP_SIZE, 3) and images.dtype == np.float32
    assert batches[0][1].dtype.name == "float32"
    np.testing.assert_array_equal(labels, val["label_index"].to_numpy())
    # REAL crops were written dark, FAKE bright: each label travels with its own image.
    assert (images.mean(axis=(1, 2, 3)) > 120).tolist() == (labels == 1).tolist()


def test_train_pipeline_yields_every_crop_once_per_epoch(run_dir):
    cfg = _config(run_dir)
    train = runfolder.read_split(cfg.split_csv).query("split == 'train'")
    pipeline = inputs.make_dataset(train, cfg, training=True)
    for _ in range(2):
        labels = np.concatenate([labels.numpy() for _, labels in pipeline])
        assert sorted(labels.tolist()) == sorted(train["label_index"].astype(float).tolist())


def test_switched_off_augmentation_passes_decoded_pixels_unchanged(run_dir):
    cfg = _config(run_dir, rotation=0.0, shift=0.0, horizontal_flip=False, vertical_flip=False)
    train = runfolder.read_split(cfg.split_csv).query("split == 'train'")
    assert inputs.augmentation(cfg.train) is None
    augmented = np.concatenate([images.numpy() for images, _ in inputs.make_dataset(train, cfg, training=True)])
    decoded = _decoded([cfg.work_dir / p for p in train["path"]])
    assert sorted(augmented.sum(axis=(1, 2, 3)).tolist()) == pytest.approx(sorted(decoded.sum(axis=(1, 2, 3)).tolist()))


def _epoch(pipeline) -> tuple[np.ndarray, np.ndarray]:
    """One pass over a pipeline: (images, labels) in the order they came out."""
    batches = [(images.numpy(), labels.numpy()) for images, labels in pipeline]
    return np.concatenate([images for images, _ in batches]), np.concatenate([labels for _, labels in batches])


def _sources(images: np.ndarray, decoded: np.ndarray) -> list[tuple[int, bool]]:
    """Per output image, (the decoded crop it is, whether left-right mirrored); fails on any other image."""
    found = []
    for image in images:
        as_is = [index for index, crop in enumerate(decoded) if np.array_equal(image, crop)]
        mirrored = [index for index, crop in enumerate(decoded) if np.array_equal(image, crop[:, ::-1])]
        assert len(as_is) + len(mirrored) == 1, "an output crop is neither a decoded crop nor its left-right mirror"
        found.append(((as_is or mirrored)[0], bool(mirrored)))
    return found


def test_horizontal_flip_mirrors_crops_left_right_exactly_and_keeps_each_label(run_dir):
    cfg = _config(run_dir, rotation=0.0, shift=0.0, horizontal_flip=True, vertical_flip=False)
    train = runfolder.read_split(cfg.split_csv).query("split == 'train'")
    decoded = _decoded([cfg.work_dir / p for p in train["path"]])
    pipeline = inputs.make_dataset(train, cfg, training=True)
    mirrored_or_not = set()
    for _ in range(2):  # 24 coins: all on one side once in 8 million runs
        images, labels = _epoch(pipeline)
        sources = _sources(images, decoded)
        assert sorted(index for index, _ in sources) == list(range(len(train)))  # every crop once, none lost
        np.testing.assert_array_equal(labels, train["label_index"].to_numpy()[[index for index, _ in sources]])
        mirrored_or_not |= {is_mirrored for _, is_mirrored in sources}
    assert mirrored_or_not == {True, False}  # a coin per crop: some flipped, some not


def test_augmentation_layers_draw_the_same_changes_from_the_same_seed(run_dir):
    # the layers, not the training pipeline: its parallel map may hand the draws to batches in any order
    cfg = _config(run_dir, rotation=0.1, shift=0.2, horizontal_flip=True, vertical_flip=False)
    train = runfolder.read_split(cfg.split_csv).query("split == 'train'")
    decoded = _decoded([cfg.work_dir / p for p in train["path"]])

    def augmented(train_cfg: config.TrainConfig) -> np.ndarray:
        return np.asarray(inputs.augmentation(train_cfg)(decoded, training=True))

    first = augmented(cfg.train)
    assert not np.array_equal(first, decoded)
    np.testing.assert_array_equal(augmented(cfg.train), first)  # freshly built layers, the same seed
    assert not np.array_equal(augmented(dataclasses.replace(cfg.train, seed=cfg.train.seed + 10)), first)


def test_rotation_and_shift_change_the_crops_but_keep_pixel_values_and_labels(run_dir):
    cfg = _config(run_dir, rotation=0.1, shift=0.2, horizontal_flip=True, vertical_flip=False)
    train = runfolder.read_split(cfg.split_csv).query("split == 'train'")
    layer_names = [layer.__class__.__name__ for layer in inputs.augmentation(cfg.train).layers]
    assert layer_names == ["RandomRotation", "RandomTranslation", "RandomFlip"]
    images, labels = _epoch(inputs.make_dataset(train, cfg, training=True))
    decoded = _decoded([cfg.work_dir / p for p in train["path"]])
    assert images.shape == decoded.shape and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255
    # nearest fill and interpolation stay within a crop's own values: REAL crops (written dark) stay dark
    assert (images.mean(axis=(1, 2, 3)) > 120).tolist() == (labels == 1).tolist()
    assert sorted(labels.tolist()) == sorted(train["label_index"].astype(float).tolist())
    is_untouched = [any(np.array_equal(image, crop) or np.array_equal(image, crop[:, ::-1]) for crop in decoded)
                    for image in images]
    assert not any(is_untouched)


def test_photometric_augmentation_is_added_only_when_configured(run_dir):
    cfg = _config(run_dir, rotation=0.0, shift=0.0, horizontal_flip=False, vertical_flip=False,
                  sharpness=0.3, brightness=0.1, contrast=0.2)
    layer_names = [layer.__class__.__name__ for layer in inputs.augmentation(cfg.train).layers]
    assert layer_names == ["RandomSharpness", "RandomBrightness", "RandomContrast"]
    train = runfolder.read_split(cfg.split_csv).query("split == 'train'")
    images = np.concatenate([images.numpy() for images, _ in inputs.make_dataset(train, cfg, training=True)])
    assert images.min() >= 0 and images.max() <= 255


def test_missing_crop_is_an_error_naming_the_file(run_dir):
    cfg = _config(run_dir)
    split = runfolder.read_split(cfg.split_csv)
    missing = run_dir / split["path"].iloc[2]
    missing.unlink()
    with pytest.raises(CropError, match=str(missing)):
        inputs.check_crops(split, cfg.work_dir, CROP_SIZE)


def test_corrupt_crop_is_an_error_naming_the_file(run_dir):
    cfg = _config(run_dir)
    split = runfolder.read_split(cfg.split_csv)
    corrupt = run_dir / split["path"].iloc[5]
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # a truncated JPEG
    with pytest.raises(CropError, match=f"{corrupt}.*corrupt"):
        inputs.check_crops(split, cfg.work_dir, CROP_SIZE)


def test_bad_crops_are_skipped_and_counted_when_configured(run_dir):
    cfg = _config(run_dir, on_bad_crop="skip")
    split = runfolder.read_split(cfg.split_csv)
    (run_dir / split["path"].iloc[0]).unlink()
    (run_dir / split["path"].iloc[1]).write_bytes(b"not a jpeg at all")
    good, bad = inputs.check_crops(split, cfg.work_dir, CROP_SIZE, cfg.train.on_bad_crop)
    assert len(bad) == 2 and len(good) == len(split) - 2
    assert set(bad["path"]) == set(split["path"].iloc[:2])


def test_crop_of_the_wrong_size_is_an_error(run_dir):
    cfg = _config(run_dir)
    split = runfolder.read_split(cfg.split_csv)
    Image.new("RGB", (CROP_SIZE + 8, CROP_SIZE)).save(run_dir / split["path"].iloc[0])
    with pytest.raises(CropError, match="expected 24x24"):
        inputs.check_crops(split, cfg.work_dir, CROP_SIZE)


def _landmark_run(work_dir: Path) -> None:
    crops.write_run(work_dir, 3, lambda rng, label: rng.integers(0, 255, (CROP_SIZE, CROP_SIZE, 3), dtype="uint8"),
                    with_landmarks=True)


@pytest.mark.parametrize("fakes, n_real, n_given_fake, n_blended", [
    ("given", 6, 6, 0), ("self_blend", 6, 0, 6), ("mixed", 6, 6, 6)])
def test_train_examples_follow_train_fakes(tmp_path, fakes, n_real, n_given_fake, n_blended):
    _landmark_run(tmp_path)
    cfg = _config(tmp_path, fakes=fakes)
    split = runfolder.read_split(cfg.split_csv)
    rows = inputs.examples(split[split["split"] == "train"], cfg, "train")
    assert (rows["label_index"] == 0).sum() == n_real
    assert ((rows["label_index"] == 1) & ~rows["is_blend"]).sum() == n_given_fake
    assert ((rows["label_index"] == 1) & rows["is_blend"]).sum() == n_blended


def test_empty_landmark_cells_read_as_missing_and_stop_self_blending(tmp_path):
    _landmark_run(tmp_path)
    split_csv = tmp_path / "manifests" / "split.csv"
    pd.read_csv(split_csv).assign(**{column: None for column in LANDMARK_COLUMNS}).to_csv(split_csv, index=False)
    cfg = _config(tmp_path, fakes="self_blend")
    split = runfolder.read_split(cfg.split_csv)
    assert split[LANDMARK_COLUMNS].isna().all().all() and split["frame"].dtype == "int64"
    with pytest.raises(SplitError, match="landmarks"):
        inputs.examples(split[split["split"] == "train"], cfg, "train")


def test_a_test_split_with_given_fakes_is_scored_on_them_and_a_real_only_one_on_pseudo_fakes(tmp_path):
    _landmark_run(tmp_path)
    cfg = _config(tmp_path, fakes="self_blend")
    split = runfolder.read_split(cfg.split_csv)
    test = split[split["split"] == "test"]
    assert not inputs.examples(test, cfg, "test")["is_blend"].any()
    real_only = inputs.examples(test[test["label"] == "REAL"], cfg, "test")
    assert real_only["is_blend"].sum() == 6 and real_only["label_index"].tolist() == [0] * 6 + [1] * 6


def test_self_blended_rows_come_out_of_the_pipeline_changed(tmp_path):
    _landmark_run(tmp_path)
    cfg = _config(tmp_path, fakes="self_blend")
    split = runfolder.read_split(cfg.split_csv)
    rows = inputs.examples(split[(split["split"] == "val")], cfg, "val")
    images = np.concatenate([batch.numpy() for batch, _ in inputs.make_dataset(rows, cfg, training=False)])
    originals, blended = images[rows["is_blend"].to_numpy() == False], images[rows["is_blend"].to_numpy()]  # noqa: E712
    assert np.abs(blended - originals).mean() > 1.0
