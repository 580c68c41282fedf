"""Identity groups (the videos that must stay in one split) and the check that a split kept them together."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from dfhelpers import runfolder
from dfhelpers.errors import LeakageError, SplitError
from dfhelpers.runfolder import LABELS

VIDEO_COLUMNS = ["video", "path", "label", "original", "person"]


# --- identity groups ----------------------------------------------------------------------


def assign_groups(videos: pd.DataFrame, group_by: str) -> pd.DataFrame:
    """The videos with `group` set to their identity group.

    group_by "original" is the DFDC relation (a FAKE joins its original's group, a REAL is
    its own group; a FAKE whose original is absent still forms a group named after it),
    "person" the `person` column (persons CSV), "folder" the name of the video's parent folder
    (the original per-person-folder layout). Groups that a FAKE and its original would put
    on two sides are joined (with a warning), so no source video can ever reach two splits.
    A FAKE without a person takes its original's; a video left without one falls back to
    the DFDC relation (with a warning).

    Raises:
        SplitError: unknown group_by, a label other than REAL/FAKE, a FAKE without original,
            or group_by "person" when no video has a person.
    """
    videos = _clean_videos(videos)
    keys = _primary_keys(videos, group_by)
    groups = _connected_groups(videos, keys)
    _warn_joined_groups(videos, keys, groups, group_by)
    return videos.assign(group=groups.values)


def group_table(split: pd.DataFrame) -> pd.DataFrame:
    """One row per identity group: its split, number of videos, REAL/FAKE/all crops."""
    crops_by_label = pd.crosstab(split["group"], split["label"]).reindex(columns=list(LABELS), fill_value=0)
    table = pd.DataFrame({
        "split": split.groupby("group")["split"].agg(lambda s: "/".join(sorted(set(s)))),
        "videos": split.groupby("group")["video"].nunique(),
        "real_crops": crops_by_label["REAL"],
        "fake_crops": crops_by_label["FAKE"],
    })
    return table.assign(crops=table["real_crops"] + table["fake_crops"]).rename_axis("group")


# --- leakage ------------------------------------------------------------------------------


def check_leakage(split: pd.DataFrame, frame_level_val: bool = False) -> None:
    """Raise if any group, video or source video (a FAKE's original) is in two splits.

    With `frame_level_val` train and val share groups and videos by design, so only
    leaks between test and the other two are checked (the split warned about it).

    Raises:
        LeakageError: naming the first leaked key and the splits it appears in.
    """
    shared = leakage_table(split, frame_level_val)
    leaked = shared[shared["shared"] > 0]
    if len(leaked):
        first = leaked.iloc[0]
        raise LeakageError(
            f"{first['shared']} {first['key']}(s) appear in both {first['splits']} (first: {first['example']!r}); "
            "rebuild the split with splitting.build_split (notebook 03) rather than editing it"
        )


def leakage_table(split: pd.DataFrame, frame_level_val: bool = False) -> pd.DataFrame:
    """Keys (group, video, original) shared by each pair of splits: all zero when there is no leak."""
    keys = {"group": split["group"], "video": split["video"], "original": _source_videos(split)}
    rows = []
    for first, second in [("train", "val"), ("train", "test"), ("val", "test")]:
        skipped = frame_level_val and (first, second) == ("train", "val")
        for name, values in keys.items():
            shared = set() if skipped else set(values[split["split"] == first]) & set(values[split["split"] == second])
            rows.append({"splits": f"{first}/{second}", "key": name, "shared": len(shared),
                         "example": min(shared) if shared else "", "checked": not skipped})
    return pd.DataFrame(rows)


# --- private helpers ----------------------------------------------------------------------


def _text(values: pd.Series) -> pd.Series:
    """Strings with missing values as "" (a CSV's empty cell, a JSON null, a NaN)."""
    return values.astype(object).where(values.notna(), "").astype(str)


def _clean_videos(videos: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("video", "label") if c not in videos.columns]
    if missing:
        raise SplitError(f"the video table lacks column {missing[0]!r}; pass manifests/videos.csv from notebook 01")
    cleaned = videos.assign(**{c: _text(videos[c]) if c in videos.columns else "" for c in VIDEO_COLUMNS})
    bad = cleaned[~cleaned["label"].isin(LABELS)]
    if len(bad):
        raise SplitError(f"video {bad['video'].iloc[0]!r} has label {bad['label'].iloc[0]!r}; "
                         "only REAL/FAKE videos can be split")
    orphans = cleaned[(cleaned["label"] == "FAKE") & (cleaned["original"] == "")]
    if len(orphans):
        raise SplitError(f"FAKE video {orphans['video'].iloc[0]!r} has no original; fix its metadata.json")
    return cleaned


def _primary_keys(videos: pd.DataFrame, group_by: str) -> pd.Series:
    """The identity named by group_by per video ("" where unknown)."""
    if group_by == "original":
        return runfolder.dfdc_groups(videos)
    if group_by == "folder":
        return videos["path"].map(lambda p: Path(p).parent.name if p else "")
    if group_by == "person":
        if (videos["person"] == "").all():
            raise SplitError("split.group_by is person but no video has a person; "
                             "set metadata.persons_csv or use group_by: original")
        return videos["person"]
    raise SplitError(f"split.group_by {group_by!r} is unknown; use original, person or folder")


def _connected_groups(videos: pd.DataFrame, keys: pd.Series) -> pd.Series:
    """Join videos that share a key or a FAKE->original link; name each group by its smallest key.

    A component without any key (no person listed) is named by its DFDC relation instead.
    """
    relation = runfolder.dfdc_groups(videos)
    parent: dict[tuple[str, str], tuple[str, str]] = {}
    for video, group, key in zip(videos["video"], relation, keys):
        _union(parent, ("video", video), ("video", group))
        if key:
            _union(parent, ("video", video), ("key", key))
    roots = [_find(parent, ("video", v)) for v in videos["video"]]
    frame = pd.DataFrame({"root": roots, "key": keys.values, "relation": relation.values})
    named = frame[frame["key"] != ""].groupby("root")["key"].min()
    fallback = frame.groupby("root")["relation"].min()
    return frame["root"].map(named).fillna(frame["root"].map(fallback)).set_axis(videos.index)


def _find(parent: dict, node: tuple[str, str]) -> tuple[str, str]:
    parent.setdefault(node, node)
    while parent[node] != node:
        parent[node] = parent[parent[node]]  # path halving keeps the trees flat
        node = parent[node]
    return node


def _union(parent: dict, first: tuple[str, str], second: tuple[str, str]) -> None:
    root_first, root_second = _find(parent, first), _find(parent, second)
    if root_first != root_second:
        parent[max(root_first, root_second)] = min(root_first, root_second)


def _warn_joined_groups(videos: pd.DataFrame, keys: pd.Series, groups: pd.Series, group_by: str) -> None:
    fell_back = videos.loc[~groups.isin(set(keys[keys != ""])), "video"]
    if len(fell_back):
        warnings.warn(f"{len(fell_back)} video(s) have no {group_by}, nor an original with one "
                      f"(first: {fell_back.iloc[0]!r}); grouped by their DFDC original instead", stacklevel=3)
    joined = pd.DataFrame({"key": keys, "group": groups})[keys != ""].groupby("group")["key"].nunique()
    joined = joined[joined > 1]
    if len(joined):
        warnings.warn(f"{len(joined)} group(s) joined several {group_by} values because a FAKE and its "
                      f"original differ (first: {joined.index[0]!r}); this keeps each source video in one split",
                      stacklevel=3)


def _source_videos(split: pd.DataFrame) -> pd.Series:
    """The source of each crop's video: a FAKE's original, else the video itself."""
    if "original" not in split.columns:
        return split["video"]
    original = _text(split["original"])
    return original.where(original != "", split["video"])
