"""The tf.data input pipeline from the split manifest, with augmentation as Keras layers."""

from __future__ import annotations

import concurrent.futures
import functools
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image
from tqdm.auto import tqdm

from dfhelpers import selfblend
from dfhelpers.config import Config, TrainConfig
from dfhelpers.errors import CropError, SplitError
from dfhelpers.runfolder import SPLITS
from dfhelpers.selfblend import LANDMARK_COLUMNS

# Threads for the up-front crop check: PIL releases the GIL while decoding.
CHECK_THREADS = 8


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


def examples(crops: pd.DataFrame, cfg: Config, split_name: str) -> pd.DataFrame:
    """The rows one split feeds the model: its crops and, per train.fakes, self-blended pseudo-fakes.

    "given": the crops as they are. "self_blend": the REAL crops, each also as a pseudo-fake
    (label FAKE, is_blend): train and val never show a given FAKE. "mixed": all crops plus a
    pseudo-fake of each REAL one in train; val as given. A test split, or any split
    without FAKE crops, keeps its crops and gains pseudo-fakes only when it has no FAKE.
    Pseudo-fakes get a fixed `blend_seed` per row (training adds a fresh draw each epoch).

    Raises:
        SplitError: pseudo-fakes are needed but the crops have no landmarks (old crop manifest).
    """
    fakes = cfg.train.fakes
    given = crops.assign(is_blend=False, blend_seed=0)
    has_fake = bool((crops["label_index"] == 1).any())
    if fakes == "given" or (has_fake and (split_name == "test" or (split_name == "val" and fakes == "mixed"))):
        return given
    reals = given[given["label_index"] == 0]
    _check_landmarks(reals, cfg)
    rng = np.random.default_rng([cfg.train.seed, SPLITS.index(split_name)])
    blended = reals.assign(label_index=1, is_blend=True, blend_seed=rng.integers(0, 2**31 - 1, size=len(reals)))
    kept = given if fakes == "mixed" or (split_name == "test" or not has_fake) else reals
    return pd.concat([kept, blended], ignore_index=True)


def make_dataset(crops: pd.DataFrame, cfg: Config, training: bool) -> tf.data.Dataset:
    """Batches of (crops float32 (N, S, S, 3) in 0..255, labels float32 (N,)); S = faces.crop_size.

    Decoding runs in parallel; decoded uint8 crops are cached in memory when they fit
    (train.cache_max_mb), else they stream from disk. Training batches are shuffled every
    epoch and augmented; with train.epoch_sampling "balanced" the training set is endless,
    REAL and FAKE examples alternating, each class reshuffled whenever it runs out (an epoch is
    examples_per_epoch of it: Keras' steps_per_epoch). Rows
    marked `is_blend` (see `examples`) are self-blended after the cache, so each epoch
    draws new pseudo-fakes. Expects rows already passed through check_crops.
    """
    train, size = cfg.train, cfg.faces.crop_size
    if training and train.epoch_sampling == "balanced":
        pipeline = _balanced_rows(crops, cfg)
    else:
        pipeline = _decoded_rows(crops, cfg, training)
    blend = functools.partial(_blend, size=size, training=training, jpeg_quality=cfg.faces.jpeg_quality)
    pipeline = pipeline.map(blend, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    pipeline = pipeline.batch(train.batch_size)
    augmenter = augmentation(train) if training else None
    if augmenter is not None:
        pipeline = pipeline.map(lambda images, y: (augmenter(images, training=True), y),
                                num_parallel_calls=tf.data.AUTOTUNE)
    else:
        pipeline = pipeline.map(lambda images, y: (tf.cast(images, tf.float32), y),
                                num_parallel_calls=tf.data.AUTOTUNE)
    return pipeline.prefetch(tf.data.AUTOTUNE)


def examples_per_epoch(crops: pd.DataFrame, train: TrainConfig) -> int:
    """Examples one training epoch shows: all of them ("fixed"), or twice the smaller class ("balanced")."""
    if train.epoch_sampling == "fixed":
        return len(crops)
    return 2 * int(crops["label_index"].value_counts().reindex([0, 1], fill_value=0).min())


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


# --- private helpers ------------------------------------------------------------------------


def _decoded_rows(crops: pd.DataFrame, cfg: Config, training: bool) -> tf.data.Dataset:
    """The rows with their decoded crop ("image"), cached when they fit, shuffled each pass when training."""
    train, size = cfg.train, cfg.faces.crop_size
    pipeline = tf.data.Dataset.from_tensor_slices(_slices(crops, cfg))
    is_cached = fits_in_cache(len(crops), size, train)
    if training and not is_cached:  # file names are small: shuffle all of them, not a window
        pipeline = pipeline.shuffle(len(crops), seed=train.seed, reshuffle_each_iteration=True)
    pipeline = pipeline.map(lambda row: {**row, "image": _decode(row["path"], size)},
                            num_parallel_calls=tf.data.AUTOTUNE)
    if is_cached:
        pipeline = pipeline.cache()
        if training:
            pipeline = pipeline.shuffle(len(crops), seed=train.seed, reshuffle_each_iteration=True)
    return pipeline


def _balanced_rows(crops: pd.DataFrame, cfg: Config) -> tf.data.Dataset:
    """Endless rows, REAL and FAKE in turn; each class walks through all its examples before repeating.

    The larger class is not undersampled once: successive epochs take its next examples, so
    over the epochs every one of them is used. With both given fakes and self-blends
    (train.fakes "mixed") the FAKE turns alternate between the two, so each is a quarter of the
    examples however many given fakes there are, as in fixed epochs, where split.balance leaves as
    many given FAKE crops as REAL ones and each REAL crop gives one blend.
    """
    if any(crops["label_index"].eq(label).sum() == 0 for label in (0, 1)):
        raise SplitError(f"{cfg.split_csv}: train.epoch_sampling: balanced needs REAL and FAKE training examples")
    is_fake = crops["label_index"].eq(1)
    is_blend = crops["is_blend"].astype(bool) if "is_blend" in crops else pd.Series(False, index=crops.index)
    fakes = [kind for kind in (crops[is_fake & ~is_blend], crops[is_fake & is_blend]) if len(kind)]
    streams = [_decoded_rows(rows, cfg, training=True).repeat() for rows in (crops[~is_fake], *fakes)]
    turns = [0, 1] if len(fakes) == 1 else [0, 1, 0, 2]  # REAL, FAKE; or REAL, given, REAL, blend
    return tf.data.Dataset.choose_from_datasets(streams, tf.data.Dataset.from_tensor_slices(
        np.array(turns, dtype="int64")).repeat())


def _check_landmarks(reals: pd.DataFrame, cfg: Config) -> None:
    missing = [c for c in LANDMARK_COLUMNS if c not in reals.columns]
    if missing or reals[LANDMARK_COLUMNS].isna().any().any():
        raise SplitError(
            f"{cfg.split_csv}: crops without face landmarks cannot be self-blended (train.fakes: {cfg.train.fakes}); "
            "they were cropped before landmarks were stored: crop again into a new work_dir (notebook 02), "
            "then re-run notebook 03, or set train.fakes: given")


def _slices(crops: pd.DataFrame, cfg: Config) -> dict[str, np.ndarray]:
    """Per row: path, label, is_blend, blend_seed and landmarks (zeros where unused)."""
    n_rows = len(crops)
    is_blend = crops["is_blend"].to_numpy(dtype=bool) if "is_blend" in crops else np.zeros(n_rows, dtype=bool)
    points = np.zeros((n_rows, 10), dtype="float32")
    if is_blend.any():
        points[is_blend] = crops.loc[is_blend, LANDMARK_COLUMNS].to_numpy(dtype="float32")
    seeds = crops["blend_seed"].to_numpy(dtype="int64") if "blend_seed" in crops else np.zeros(n_rows, dtype="int64")
    return {"path": np.array([str(cfg.work_dir / relative) for relative in crops["path"]], dtype=object),
            "label": crops["label_index"].to_numpy(dtype="float32"), "is_blend": is_blend,
            "blend_seed": seeds, "landmarks": points}


def _blend(row: dict[str, tf.Tensor], size: int, training: bool, jpeg_quality: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(image, label) of one row: the decoded crop, or its self-blend (JPEG-compressed as the face
    stage stores crops) when the row asks for one."""
    seed = row["blend_seed"]
    if training:  # a new pseudo-fake every epoch: the same face is never blended the same way twice
        seed = seed + tf.random.uniform([], 0, 2**31 - 1, dtype=tf.int64)

    def blended() -> tf.Tensor:
        image = tf.numpy_function(functools.partial(_self_blend, jpeg_quality=jpeg_quality),
                                  [row["image"], row["landmarks"], seed], tf.uint8, stateful=False)
        return tf.ensure_shape(image, (size, size, 3))

    return tf.cond(row["is_blend"], blended, lambda: row["image"]), row["label"]


def _self_blend(image: np.ndarray, landmarks: np.ndarray, seed: np.int64, jpeg_quality: int) -> np.ndarray:
    return selfblend.self_blend(image, landmarks, np.random.default_rng(int(seed)), jpeg_quality)


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
