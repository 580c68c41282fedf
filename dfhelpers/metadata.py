"""The video table: every data folder read by its data source (DFDC videos, face-image sets), checked."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from dfhelpers import imagesets, runfolder
from dfhelpers.errors import MetadataError
from dfhelpers.runfolder import LABELS, VIDEO_SUFFIXES

METADATA_NAME = "metadata.json"
COLUMNS = ["video", "path", "part", "label", "original", "group", "person"]
# the keys of a metadata.json entry that become COLUMNS; any other key (DFDC's split, FaceForensics++'s
# method, a source) is kept as a column of its own after COLUMNS, for breakdowns of the results
ENTRY_KEYS = ("label", "original")


def read_videos(dirs: list[Path] | tuple[Path, ...], persons_csv: str | Path | None = None,
                strict: bool = False) -> pd.DataFrame:
    """One row per labelled video across DFDC parts: video, path, part, label, original, group, person.

    `group` is the DFDC identity relation: a FAKE belongs to the group of its original,
    a REAL is its own group. `person` comes from `persons_csv` (columns video, person)
    when given, else it is empty.

    Entries whose video file is missing are skipped with one warning per part that counts
    them (an error when `strict`).

    Raises:
        MetadataError: a folder or its metadata.json is missing or malformed, a video file has
            no entry, an entry escapes its folder, or one file name appears in two parts.
    """
    if not dirs:
        raise MetadataError("no data_dirs configured; list the folders that hold metadata.json in the config")
    parts = [read_part(Path(folder), strict=strict) for folder in dirs]
    videos = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    _check_unique_names(videos)
    if persons_csv is not None:
        videos = attach_persons(videos, persons_csv)
    return videos[COLUMNS + _extra_columns(videos)]


def read_part(folder: Path, strict: bool = False, lenient: bool = False) -> pd.DataFrame:
    """The items of one data folder, read by the data source its labels file names (SOURCES).

    A folder holds videos with a DFDC metadata.json, or face images: Kaggle's deepfake-faces
    layout (metadata.csv beside faces_224/) or a labels.csv. Every source gives the same
    table (COLUMNS, then its extra columns); items whose file is missing are dropped with a
    warning (an error when `strict`). Training needs every FAKE's original (its family) and,
    for videos, every file listed; measuring needs only labels: with `lenient` a FAKE may lack
    its original and a video file without an entry is listed unlabelled.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise MetadataError(f"{folder}: data folder not found; check data_dirs/test_dir in the config")
    labels_file = next((folder / name for name in SOURCES if (folder / name).is_file()), None)
    if labels_file is None:
        raise MetadataError(f"{folder}: no labels file; a data folder needs one of {', '.join(SOURCES)} "
                            "(DFDC videos, Kaggle deepfake-faces images, or any labelled images)")
    items = SOURCES[labels_file.name](folder, lenient)
    videos = items.assign(part=folder.name, person="", group=runfolder.dfdc_groups(items))
    return _drop_missing_files(videos[COLUMNS + _extra_columns(videos)], labels_file, strict)


def list_videos(folder: Path, labels_csv: str | Path | None = None) -> pd.DataFrame:
    """The videos (or face images) of a folder to score, labelled where labels exist.

    With `labels_csv` (video,label[,method]: any extra column is kept) every video and image
    file of the folder is listed and takes the label of its row; otherwise the folder's own
    labels file is read leniently (read_part: a FAKE without its original is fine, an unlisted
    file is scored and reported unlabelled). Without either, every file is listed unlabelled.

    Raises:
        MetadataError: the folder is missing, or a labels file is malformed (its row named).
    """
    folder = Path(folder).resolve()
    if labels_csv is None and any((folder / name).is_file() for name in SOURCES):
        return read_part(folder, lenient=True)
    if not folder.is_dir():
        raise MetadataError(f"{folder}: folder of videos to score not found; check test_dir in the config")
    unlabelled = _unlabelled_files(folder)
    return unlabelled if labels_csv is None else _apply_labels(unlabelled, Path(labels_csv))


def attach_persons(videos: pd.DataFrame, persons_csv: str | Path) -> pd.DataFrame:
    """Fill the `person` column from a CSV with columns video, person."""
    path = Path(persons_csv)
    if not path.is_file():
        raise MetadataError(f"{path}: persons CSV not found; fix metadata.persons_csv in the config or remove it")
    persons = _read_csv(path, required=("video", "person"))
    duplicated = persons["video"][persons["video"].duplicated()]
    if len(duplicated):
        raise MetadataError(f"{path}: video {duplicated.iloc[0]!r} is listed twice; keep one person per video")
    mapping = dict(zip(persons["video"], persons["person"].astype(str)))
    return videos.assign(person=videos["video"].map(mapping).fillna(""))


def videos_per_part(videos: pd.DataFrame) -> pd.DataFrame:
    """REAL/FAKE video counts per part (rows) with a total row and column."""
    counts = pd.crosstab(videos["part"], videos["label"]).reindex(columns=list(LABELS), fill_value=0)
    counts.loc["total"] = counts.sum()
    return counts.assign(total=counts.sum(axis=1)).rename_axis(columns=None)


# --- private helpers -------------------------------------------------------------------


def _read_dfdc_part(folder: Path, lenient: bool) -> pd.DataFrame:
    """The videos of a DFDC part folder from its metadata.json; every video file must have an entry
    (`lenient`: a file without one is listed unlabelled, and a FAKE may lack its original)."""
    meta_path = folder / METADATA_NAME
    entries = _load_entries(meta_path)
    rows = [_entry_row(meta_path, name, entry, needs_original=not lenient) for name, entry in entries.items()]
    listed = pd.DataFrame(rows, columns=None if rows else ["video", "path", "label", "original"])
    if not lenient:
        _check_unlisted_files(folder, meta_path, set(entries))
        return listed
    unlisted = _unlabelled_files(folder)
    unlisted = unlisted[~unlisted["video"].isin(set(entries))][["video", "path", "label", "original"]]
    return pd.concat([listed, unlisted], ignore_index=True) if len(unlisted) else listed


def _unlabelled_files(folder: Path) -> pd.DataFrame:
    """Every video and image file of a folder, unlabelled (label and original None)."""
    suffixes = VIDEO_SUFFIXES + imagesets.IMAGE_SUFFIXES
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)
    rows = [{"video": p.name, "path": str(p), "part": folder.name, "label": None, "original": None,
             "group": p.name, "person": ""} for p in paths]
    return pd.DataFrame(rows, columns=COLUMNS)


def _apply_labels(files: pd.DataFrame, labels_csv: Path) -> pd.DataFrame:
    """The folder's files labelled by a CSV (video,label[,...]); rows naming no file are counted in a warning."""
    if not labels_csv.is_file():
        raise MetadataError(f"{labels_csv}: labels CSV not found; pass a CSV with columns video,label")
    labels = _read_csv(labels_csv, required=("video", "label"))
    for row_number, (name, label) in enumerate(zip(labels["video"], labels["label"]), start=2):
        if label not in LABELS:
            raise MetadataError(f"{labels_csv}: row {row_number}: video {name!r} has unknown label {label!r}; "
                                "use REAL or FAKE")
    absent = sorted(set(labels["video"]) - set(files["video"]))
    if absent:
        warnings.warn(f"{labels_csv}: {len(absent)} labelled video(s) not in the folder (first: {absent[0]!r}); "
                      "skipped", stacklevel=3)
    extra = labels.drop(columns=[c for c in labels.columns if c in COLUMNS and c not in ("video", "label")])
    labelled = files.drop(columns="label").merge(extra.drop_duplicates("video"), on="video", how="left")
    return labelled.assign(label=labelled["label"].astype(object).where(labelled["label"].notna(), None))


def _load_entries(meta_path: Path) -> dict:
    try:
        entries = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise MetadataError(f"{meta_path}: not valid JSON (line {err.lineno}: {err.msg}); fix or re-download it") from err
    except (OSError, UnicodeDecodeError) as err:
        raise MetadataError(f"{meta_path}: cannot be read ({err}); check its permissions") from err
    if not isinstance(entries, dict):
        raise MetadataError(f"{meta_path}: top level must be an object of {{\"video.mp4\": {{\"label\": ...}}}}")
    return entries


def _entry_row(meta_path: Path, name: str, entry: object, needs_original: bool = True) -> dict:
    folder = meta_path.parent
    if not isinstance(entry, dict):
        raise MetadataError(f"{meta_path}: entry {name!r} must be an object with a 'label'; fix the file")
    if Path(name).name != name or name in ("", ".", ".."):
        raise MetadataError(f"{meta_path}: entry {name!r} escapes its folder; names must be plain file names")
    if "label" not in entry:
        raise MetadataError(f"{meta_path}: entry {name!r} has no 'label'; add \"label\": \"REAL\" or \"FAKE\"")
    label = entry["label"]
    if label not in LABELS:
        raise MetadataError(f"{meta_path}: entry {name!r} has unknown label {label!r}; use \"REAL\" or \"FAKE\"")
    original = entry.get("original") or None
    if label == "FAKE" and original is None and needs_original:
        raise MetadataError(f"{meta_path}: FAKE entry {name!r} has no 'original'; fix the file or drop this part")
    if original is not None and Path(str(original)).name != original:
        raise MetadataError(f"{meta_path}: entry {name!r} has original {original!r} that escapes its folder")
    extra = {key: value for key, value in entry.items() if key not in ENTRY_KEYS and key not in COLUMNS}
    return {**extra, "video": name, "path": str(folder / name), "label": label, "original": original}


def _extra_columns(videos: pd.DataFrame) -> list[str]:
    """Columns beyond COLUMNS (extra metadata.json keys), in a stable order."""
    return sorted(str(column) for column in videos.columns if column not in COLUMNS)


def _check_unlisted_files(folder: Path, meta_path: Path, listed: set[str]) -> None:
    unlisted = sorted(p.name for p in folder.iterdir()
                      if p.suffix.lower() in VIDEO_SUFFIXES and p.name not in listed)
    if unlisted:
        more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
        raise MetadataError(f"{folder / unlisted[0]}{more}: no entry in {meta_path}; add entries or move "
                            "unlabelled videos to a folder of their own")


def _drop_missing_files(videos: pd.DataFrame, meta_path: Path, strict: bool) -> pd.DataFrame:
    is_present = videos["path"].map(lambda p: Path(p).exists())
    missing = videos.loc[~is_present, "video"].tolist()
    if missing:
        message = (f"{meta_path}: {len(missing)} entr{'y' if len(missing) == 1 else 'ies'} without its "
                   f"file (first: {missing[0]!r}); {'fix the part' if strict else 'skipped'}")
        if strict:
            raise MetadataError(message)
        warnings.warn(message, stacklevel=3)
    return videos[is_present].reset_index(drop=True)


def _check_unique_names(videos: pd.DataFrame) -> None:
    repeated = videos[videos["video"].duplicated(keep=False)]
    if len(repeated):
        name = repeated["video"].iloc[0]
        parts = sorted(repeated.loc[repeated["video"] == name, "part"])
        raise MetadataError(f"{name!r} appears in parts {parts}; file names must be unique across data_dirs")


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise MetadataError(f"{path}: not a readable CSV ({err}); fix the file") from err
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise MetadataError(f"{path}: missing column {missing[0]!r}; expected columns {list(required)}")
    return table


# labels file -> the data source that reads a folder holding it (the first one present wins)
SOURCES = {METADATA_NAME: _read_dfdc_part, imagesets.KAGGLE_CSV: imagesets.read_kaggle_faces,
           imagesets.LABELS_CSV: imagesets.read_labels_csv}
