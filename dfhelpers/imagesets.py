"""Face-image datasets as data folders: their labels (Kaggle deepfake-faces, labels.csv) and their frames."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pandas as pd

from dfhelpers.errors import MetadataError, VideoReadError
from dfhelpers.runfolder import LABELS, VIDEO_SUFFIXES

# Kaggle's "deepfake-faces" download: metadata.csv (videoname, original_width, original_height, label,
# original) beside faces_224/<video stem>.jpg, one tight face crop per DFDC video
KAGGLE_CSV = "metadata.csv"
KAGGLE_IMAGES = "faces_224"
KAGGLE_COLUMNS = ("videoname", "label", "original")
# any other image set: labels.csv with image, label and optionally original, video, method (more columns are kept)
LABELS_CSV = "labels.csv"
LABELS_REQUIRED = ("image", "label")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Face sets are cropped tight (the box fills the image). MTCNN needs context around a face to find it, and
# the crop's margin reaches past the box, so every image is padded by this fraction of its longest side on
# each side, repeating its edge pixels (a constant border would add an edge the video crops never have)
PAD_FRACTION = 0.3


def read_kaggle_faces(folder: Path, lenient: bool = False) -> pd.DataFrame:
    """The items of a Kaggle deepfake-faces folder: one per image, named by its DFDC video.

    Returns columns video, path, label, original (a FAKE's DFDC original: its family), and
    the other metadata.csv columns (original_width, original_height) for breakdowns.

    Raises:
        MetadataError: metadata.csv is unreadable, lacks a column, or a row has a bad label or
            a FAKE without its original (the row is named).
    """
    csv_path = folder / KAGGLE_CSV
    table = _read_labels(csv_path, KAGGLE_COLUMNS)
    images = folder / KAGGLE_IMAGES
    items = table.rename(columns={"videoname": "video"}).assign(
        path=[str(images / f"{Path(name).stem}.jpg") for name in table["videoname"]])
    return _checked(items, csv_path, first_row=2, needs_original=not lenient)


def read_labels_csv(folder: Path, lenient: bool = False) -> pd.DataFrame:
    """The items of a folder labelled by labels.csv (image, label[, original][, video][, method]).

    Without a `video` column every image is an item of its own, named by its path in the
    folder. Images that share a `video` form one sequence, an item whose frames are its
    images: they must be the image files of one folder of their own (WildDeepfake's and
    DeepfakeBench's frame folders are laid out that way). A FAKE's `original` names the
    REAL item it was made from (its `video`, or its image when there is no `video` column);
    only training needs it (`lenient`: measuring).

    Raises:
        MetadataError: labels.csv is unreadable or a row is malformed (the row is named), or a
            sequence's images are not exactly the images of one folder.
    """
    csv_path = folder / LABELS_CSV
    table = _read_labels(csv_path, LABELS_REQUIRED)
    for row_number, image in enumerate(table["image"], start=2):
        if not image or Path(image).is_absolute() or ".." in Path(image).parts:
            raise MetadataError(f"{csv_path}: row {row_number}: image {image!r} must be a path inside {folder}")
    if "video" not in table.columns or (table["video"] == "").all():
        items = table.rename(columns={"image": "video"}).assign(path=[str(folder / i) for i in table["image"]])
        return _checked(items, csv_path, first_row=2, needs_original=not lenient)
    return _checked(_sequences(table, folder, csv_path), csv_path, first_row=None, needs_original=not lenient)


def is_image_item(path: str | Path) -> bool:
    """True for an item a face-image set lists: an image file, or a folder of a sequence's images
    (a folder named like a video is a video that is not there: the video reader says so)."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES or (path.is_dir() and path.suffix.lower() not in VIDEO_SUFFIXES)


def n_frames(path: str | Path) -> int:
    """Frames of an image item: 1 for an image file, the image files of a sequence folder.

    Raises:
        VideoReadError: the item does not exist, or its folder holds no images.
    """
    return len(_frame_files(Path(path)))


def read_frames(path: str | Path, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, padded RGB uint8 frame) for the wanted frames of an image item, in order.

    Frames are padded (PAD_FRACTION of the longest side, edge pixels repeated), so a face
    that fills its image is found and cropped with the same margin as a video's face; boxes
    and landmarks are in the padded frame's pixels.

    Raises:
        VideoReadError: an image is missing or does not decode; the frames before it are valid.
    """
    frame_files = _frame_files(Path(path))
    for index in sorted(set(int(i) for i in indices)):
        if 0 <= index < len(frame_files):
            yield index, pad(_read_rgb(frame_files[index]))


def pad(image: np.ndarray) -> np.ndarray:
    """The image with PAD_FRACTION of its longest side added on every side, its edge pixels repeated."""
    border = int(round(PAD_FRACTION * max(image.shape[:2])))
    return cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_REPLICATE)


# --- private helpers -------------------------------------------------------------------


def _read_labels(csv_path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise MetadataError(f"{csv_path}: not a readable CSV ({' '.join(str(err).split())}); fix the file") from err
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise MetadataError(f"{csv_path}: missing column {missing[0]!r}; the header must name {', '.join(required)}")
    return table.map(str.strip)


def _checked(items: pd.DataFrame, csv_path: Path, first_row: int | None, needs_original: bool) -> pd.DataFrame:
    """Labels known, every FAKE with an original, names unique; the first bad row is named."""
    items = items.assign(original=items["original"] if "original" in items else "")
    for position, (name, label, original) in enumerate(zip(items["video"], items["label"], items["original"])):
        where = f"row {position + first_row}" if first_row is not None else f"item {name!r}"
        if label not in LABELS:
            raise MetadataError(f"{csv_path}: {where}: unknown label {label!r}; use REAL or FAKE")
        if label == "FAKE" and not original and needs_original:
            raise MetadataError(f"{csv_path}: {where}: FAKE without 'original'; name the REAL item it was made "
                                "from, so that a split keeps its family on one side")
    repeated = items["video"][items["video"].duplicated()]
    if len(repeated):
        raise MetadataError(f"{csv_path}: {repeated.iloc[0]!r} is listed twice; keep one row per item")
    originals = items["original"].astype(object)
    return items.assign(original=originals.where(originals != "", None)).reset_index(drop=True)


def _sequences(table: pd.DataFrame, folder: Path, csv_path: Path) -> pd.DataFrame:
    """One item per `video`: its folder, label and original (one value each), and its other columns."""
    rows = []
    for name, images in table.groupby("video", sort=False):
        if not name:
            raise MetadataError(f"{csv_path}: image {images['image'].iloc[0]!r} has an empty 'video'; "
                                "fill it or leave the column out")
        parents = {Path(image).parent for image in images["image"]}
        if len(parents) != 1:
            raise MetadataError(f"{csv_path}: sequence {name!r} has images in {len(parents)} folders; "
                                "put each sequence's images in a folder of its own")
        for column in ("label", "original"):
            if column in images and images[column].nunique() > 1:
                raise MetadataError(f"{csv_path}: sequence {name!r} has several values of {column!r}; "
                                    "give all its images the same one")
        sequence_dir = folder / parents.pop()
        _check_sequence_folder(sequence_dir, set(images["image"].map(lambda i: Path(i).name)), name, csv_path)
        rows.append({**images.iloc[0].drop("image").to_dict(), "video": name, "path": str(sequence_dir)})
    return pd.DataFrame(rows)


def _check_sequence_folder(sequence_dir: Path, listed: set[str], name: str, csv_path: Path) -> None:
    if not sequence_dir.is_dir() or sequence_dir == csv_path.parent:
        return  # a missing folder is counted with the missing files; the top folder is never a sequence
    present = {p.name for p in sequence_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    extra = sorted(present - listed)
    if extra:
        raise MetadataError(f"{csv_path}: {sequence_dir / extra[0]} is in sequence {name!r}'s folder but not "
                            "listed; list it, or move it out of the folder")


def _frame_files(path: Path) -> list[Path]:
    if path.is_dir():
        frame_files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not frame_files:
            raise VideoReadError(f"{path}: no images in this sequence folder; add its frames or drop it from labels.csv",
                                 "no images in the sequence folder")
        return frame_files
    if not path.is_file():
        raise VideoReadError(f"{path}: image not found; restore it or drop its row", "image not found")
    return [path]


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise VideoReadError(f"{path}: not a readable image (truncated or not an image format); replace it or drop its row",
                             f"{path.name}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
