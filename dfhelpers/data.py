"""The tf.data input pipeline from the split manifest, with augmentation as Keras layers."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image
from tqdm.auto import tqdm

from dfhelpers.config import Config, TrainConfig
from dfhelpers.errors import CropError, SplitError, StageOutputMissing

LABELS = {"REAL": 0, "FAKE": 1}  # the model outputs P(FAKE)
SPLIT_COLUMNS = ("path", "video", "frame", "track", "group", "label", "split")
SPLITS = ("train", "val", "test")
# Threads for the up-front crop check: PIL releases the GIL while decoding.
CHECK_THREADS = 8


def read_split(cfg: Config) -> pd.DataFrame:
    """split.csv with its columns checked and `label_index` (REAL 0, FAKE 1) added.

    Raises:
        StageOutputMissing: split.csv does not exist yet (run notebook 03).
        SplitError: a column is missing, or a label/split value is unknown.
    """
    if not cfg.split_csv.is_file():
        raise StageOutputMissing(f"{cfg.split_csv}: split manifest not found; run notebook 03 (balance and split) first")
    split = pd.read_csv(cfg.split_csv, dtype={"path": str, "video": str, "group": str, "label": str, "split": str})
    missing = [column for column in SPLIT_COLUMNS if column not in split.columns]
    if missing:
        raise SplitError(f"{cfg.split_csv}: missing column(s) {', '.join(missing)}; re-run notebook 03 (balance and split)")
    unknown_labels = sorted(set(split["label"]) - set(LABELS))
    unknown_splits = sorted(set(split["split"]) - set(SPLITS))
    if unknown_labels or unknown_splits:
        raise SplitError(
            f"{cfg.split_csv}: unknown label(s) {unknown_labels} or split(s) {unknown_splits}; "
            f"labels must be {sorted(LABELS)}, splits {list(SPLITS)}"
        )
    return split.assign(label_index=split["label"].map(LABELS).astype("int64"))


def check_crops(
    crops: pd.DataFrame, work_dir: Path, crop_size: int, on_bad_crop: str = "error", progress: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every crop file once, up front: it exists, decodes as JPEG, and is crop_size square.

    Cheaper and clearer than failing inside the tf.data graph, where a bad file would stop
    an epoch half-way with an error that does not name it.

    Returns:
        (the good rows, the bad rows with a `problem` column); both keep the input's index.
    Raises:
        CropError: on_bad_crop == "error" and a crop is missing, corrupt or the wrong size.
    """
    paths = [Path(work_dir) / relative for relative in crops["path"]]
    with concurrent.futures.ThreadPoolExecutor(CHECK_THREADS) as pool:
        checks = pool.map(lambda path: _crop_problem(path, crop_size), paths)
        problems = list(tqdm(checks, total=len(paths), desc="check crops", unit="crop", disable=not progress))
    is_bad = np.array([problem is not None for problem in problems], dtype=bool)
    bad = crops[is_bad].assign(problem=[p for p in problems if p is not None])
    if len(bad) and on_bad_crop == "error":
        first = bad.iloc[0]
        raise CropError(
            f"{Path(work_dir) / first['path']}: {first['problem']} ({len(bad)} bad crop(s) in all); "
            "re-run notebook 02 (faces) for its video, or set train.on_bad_crop: skip"
        )
    return crops[~is_bad], bad


def make_dataset(crops: pd.DataFrame, cfg: Config, training: bool) -> tf.data.Dataset:
    """Batches of (crops float32 (N, S, S, 3) in 0..255, labels float32 (N,)); S = faces.crop_size.

    Decoding runs in parallel; decoded uint8 crops are cached in memory when they fit
    (train.cache_max_mb). Training batches are shuffled every epoch and augmented.
    Expects rows already passed through check_crops.
    """
    train, size = cfg.train, cfg.faces.crop_size
    paths = [str(cfg.work_dir / relative) for relative in crops["path"]]
    labels = crops["label_index"].to_numpy(dtype="float32")
    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    is_cached = fits_in_cache(len(crops), size, train)
    if training and not is_cached:  # file names are small: shuffle all of them, not a window
        dataset = dataset.shuffle(len(crops), seed=train.seed, reshuffle_each_iteration=True)
    dataset = dataset.map(lambda path, label: (_decode(path, size), label), num_parallel_calls=tf.data.AUTOTUNE)
    if is_cached:
        dataset = dataset.cache()
        if training:
            dataset = dataset.shuffle(len(crops), seed=train.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(train.batch_size)
    augmenter = augmentation(train) if training else None
    if augmenter is not None:
        dataset = dataset.map(lambda images, y: (augmenter(images, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.map(lambda images, y: (tf.cast(images, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def augmentation(train: TrainConfig) -> keras.Sequential | None:
    """The original ImageDataGenerator augmentations as Keras layers; None when all are off.

    rotation is a fraction of a full turn (0.75 = the original rotation_range=270 degrees),
    shift a fraction of the side; "nearest" fill as ImageDataGenerator did.
    """
    layers: list[keras.layers.Layer] = []
    if train.rotation > 0:
        layers.append(keras.layers.RandomRotation(train.rotation, fill_mode="nearest", seed=train.seed))
    if train.shift > 0:
        layers.append(keras.layers.RandomTranslation(train.shift, train.shift, fill_mode="nearest", seed=train.seed + 1))
    flip_mode = {(True, True): "horizontal_and_vertical", (True, False): "horizontal", (False, True): "vertical"}
    mode = flip_mode.get((train.horizontal_flip, train.vertical_flip))
    if mode is not None:
        layers.append(keras.layers.RandomFlip(mode, seed=train.seed + 2))
    layers += _photometric(train)
    return keras.Sequential(layers, name="augmentation") if layers else None


def fits_in_cache(n_crops: int, crop_size: int, train: TrainConfig) -> bool:
    """Whether n decoded uint8 crops (plus a shuffle buffer of the same size) fit train.cache_max_mb."""
    n_bytes = 2 * n_crops * crop_size * crop_size * 3
    return train.cache and n_bytes <= train.cache_max_mb * 2**20


def load_crops(paths: list[Path], crop_size: int) -> np.ndarray:
    """Decode crop JPEGs exactly as the training pipeline does: (N, S, S, 3) float32 in 0..255."""
    images = [_decode(tf.constant(str(path)), crop_size).numpy() for path in paths]
    if not images:
        return np.zeros((0, crop_size, crop_size, 3), dtype="float32")
    return np.stack(images).astype("float32")


# --- private helpers ------------------------------------------------------------------------


def _photometric(train: TrainConfig) -> list[keras.layers.Layer]:
    """Whole-crop sharpness, brightness and contrast changes (not in the original).

    They vary what differs between video sources, so the model has to rely on what differs
    inside one crop: the blended face against its surroundings.
    """
    layers: list[keras.layers.Layer] = []
    if train.sharpness > 0:  # Keras: 0 = fully blurred, 0.5 = unchanged, 1 = sharpened
        factor = (0.5 - train.sharpness, 0.5 + train.sharpness)
        layers.append(keras.layers.RandomSharpness(factor, value_range=(0, 255), seed=train.seed + 3))
    if train.brightness > 0:
        layers.append(keras.layers.RandomBrightness(train.brightness, value_range=(0, 255), seed=train.seed + 4))
    if train.contrast > 0:
        layers.append(keras.layers.RandomContrast(train.contrast, value_range=(0, 255), seed=train.seed + 5))
    return layers


def _decode(path: tf.Tensor, crop_size: int) -> tf.Tensor:
    # INTEGER_ACCURATE is libjpeg's ISLOW, what PIL and OpenCV decode with at scoring time.
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3, dct_method="INTEGER_ACCURATE")
    return tf.ensure_shape(image, (crop_size, crop_size, 3))


def _crop_problem(path: Path, crop_size: int) -> str | None:
    """What is wrong with one crop file, or None."""
    if not path.is_file():
        return "crop file is missing"
    try:
        with Image.open(path) as image:
            if image.format != "JPEG":
                return f"not a JPEG ({image.format})"
            image.load()  # a full decode: truncated or corrupt data fails here, not mid-epoch
            size = image.size
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return f"corrupt JPEG ({str(err).strip() or type(err).__name__})"
    if size != (crop_size, crop_size):
        return f"crop is {size[0]}x{size[1]}, expected {crop_size}x{crop_size} (faces.crop_size)"
    return None
