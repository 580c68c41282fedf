"""The run folder's vocabulary: labels, splits, manifest columns, file names and their readers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from dfhelpers.errors import SplitError, StageOutputMissing

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# pandas is imported by the readers, not here: config and `dfdetect --help` import this module
# for its names, and pandas would add a third of a second to each

LABELS = ("REAL", "FAKE")
LABEL_INDEX = {"REAL": 0, "FAKE": 1}  # the model outputs P(FAKE): 1 = FAKE, as in the DFDC submission
SPLITS = ("train", "val", "test")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")  # what a folder of videos is scanned for

# split.csv: what a reader needs (a file written before `original` was added lacks it) ...
SPLIT_REQUIRED = ("path", "video", "frame", "track", "group", "label", "split")
# ... and what the split stage writes: `original` too, so the file can be leakage-checked on its own;
# the crops' landmark columns follow when they have them
SPLIT_COLUMNS = (*SPLIT_REQUIRED, "original")
_SPLIT_INTEGERS = ("frame", "track")

# report files, in reports/ (Config's paths) or in a `dfdetect evaluate` folder
PREDICTIONS_CSV = "predictions.csv"
FRAME_SCORES_CSV = "frame_scores.csv"
METRICS_JSON = "metrics.json"
SUBMISSION_CSV = "submission.csv"
TRAIN_METRICS_JSON = "train_metrics.json"
FIGURES_DIR = "figures"
SCORE_CACHE_DIR = "score_cache"


def label_index(labels: Iterable[str]) -> np.ndarray:
    """Each label's LABEL_INDEX (REAL 0, FAKE 1) as int64: the truth a P(FAKE) is measured against.

    Raises:
        ValueError: a label is neither REAL nor FAKE (select the labelled rows first).
    """
    import pandas as pd

    labels = pd.Series(list(labels), dtype=object)
    index = labels.map(LABEL_INDEX)
    unknown = labels[index.isna()]
    if len(unknown):
        raise ValueError(f"label {unknown.iloc[0]!r} is neither REAL nor FAKE; select the labelled rows first")
    return index.to_numpy(dtype="int64")


def read_videos(path: str | Path) -> pd.DataFrame:
    """manifests/videos.csv (notebook 01) with every column as text (empty, never NaN, where unset).

    Raises:
        StageOutputMissing: the file does not exist yet.
    """
    return _read_text(path, "video table", "notebooks/01_data_classification.ipynb")


def read_split(path: str | Path) -> pd.DataFrame:
    """manifests/split.csv (notebook 03), checked, with `label_index` (REAL 0, FAKE 1) added.

    Names, groups, labels and splits are text (empty, never NaN, where unset), frame and track
    integers, any other column (the face landmarks) numbers, NaN where empty.

    Raises:
        StageOutputMissing: the file does not exist yet.
        SplitError: a column is missing, a label or split value is unknown, or a landmark is not a number.
    """
    import pandas as pd

    path = Path(path)
    split = _read_text(path, "split manifest", "notebook 03 (balance and split)")
    missing = [column for column in SPLIT_REQUIRED if column not in split.columns]
    if missing:
        raise SplitError(f"{path}: missing column(s) {', '.join(missing)}; re-run notebook 03 (balance and split)")
    unknown_labels = sorted(set(split["label"]) - set(LABELS))
    unknown_splits = sorted(set(split["split"]) - set(SPLITS))
    if unknown_labels or unknown_splits:
        raise SplitError(
            f"{path}: unknown label(s) {unknown_labels} or split(s) {unknown_splits}; "
            f"labels must be {sorted(LABELS)}, splits {list(SPLITS)}"
        )
    numbers = {column: _numbers(split[column], column, path) for column in split.columns
               if column not in SPLIT_COLUMNS}
    return split.assign(frame=split["frame"].astype(int), track=pd.to_numeric(split["track"]).astype(int),
                        **numbers, label_index=label_index(split["label"]))


def dfdc_groups(videos: pd.DataFrame) -> pd.Series:
    """Each video's DFDC identity group: a FAKE joins its original's group, any other video is its own.

    `videos` needs the columns video, label and original; the result is aligned to its rows.
    """
    return videos["original"].where(videos["label"] == "FAKE", videos["video"])


# --- private helpers -------------------------------------------------------------------


def _read_text(path: str | Path, what: str, producer: str) -> pd.DataFrame:
    """A manifest CSV with every column as text (empty, never NaN), or a pointer to its stage."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise StageOutputMissing(f"{path}: no {what} yet; run {producer} first")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _numbers(values: pd.Series, column: str, path: Path) -> pd.Series:
    """A text column as numbers, NaN where empty (crops made before landmarks were stored)."""
    import pandas as pd

    numbers = pd.to_numeric(values.where(values != ""), errors="coerce")
    bad = values[numbers.isna() & (values != "")]
    if len(bad):
        raise SplitError(f"{path}: column {column!r} holds {bad.iloc[0]!r}, not a number; "
                         "re-run notebook 03 (balance and split)")
    return numbers
