"""Balancing (undersampling per identity group) and the identity-level train/val/test split."""

from __future__ import annotations

import os
import shutil
import warnings
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dfhelpers import grouping, runfolder
from dfhelpers.config import SplitConfig
from dfhelpers.errors import CropError, SplitError
from dfhelpers.files import atomic_path, write_csv
from dfhelpers.runfolder import LABELS, SPLIT_COLUMNS, SPLITS
from dfhelpers.selfblend import LANDMARK_COLUMNS


# --- balancing ----------------------------------------------------------------------------


def balance(crops: pd.DataFrame, mode: str = "per_group", seed: int = 33,
            drop_groups_without_real: bool = True, keep_real_only: bool = False) -> pd.DataFrame:
    """Undersample the majority class of labelled crops (columns video, frame, label, group).

    mode "per_group" (the original rule) keeps, in every group, as many crops of the
    majority class as the minority class has; "global" does the same over all groups at
    once; "none" keeps every crop (training then uses class weights). The kept crops are
    whole frames spread evenly over the majority class's videos, so every FAKE method in a
    group is represented; the same seed and crops give the same rows whatever their order.
    A group without REAL crops is dropped with a warning, or kept with a warning when
    `drop_groups_without_real` is False (modes global/none only). A group without FAKE
    crops is dropped by per_group balancing, unless `keep_real_only` (self-blended training
    makes its fakes from REAL crops): then it keeps all its crops.

    Raises:
        SplitError: unknown mode, or keeping groups without REAL crops under per_group.
    """
    if mode not in ("per_group", "global", "none"):
        raise SplitError(f"split.balance {mode!r} is unknown; use per_group, global or none")
    crops = _handle_single_class_groups(_sorted(crops), mode, drop_groups_without_real, keep_real_only)
    if mode == "none" or crops.empty:
        return crops
    if keep_real_only:  # REAL-only groups are kept whole; the others are balanced as usual
        has_fake = crops.groupby("group")["label"].transform(lambda labels: (labels == "FAKE").any())
        real_only = crops[~has_fake]
        if len(real_only):
            rest = balance(crops[has_fake], mode, seed, drop_groups_without_real) if has_fake.any() else crops[has_fake]
            return _sorted(pd.concat([rest, real_only], ignore_index=True)).reset_index(drop=True)
    by = ["group", "label"] if mode == "per_group" else ["label"]
    n_per_class = crops.groupby(by)["video"].transform("size")
    if mode == "global" and crops["label"].nunique() < 2:
        return crops
    # single-class groups are gone under per_group, so each group's minimum is its minority class
    n_minority = n_per_class.min() if mode == "global" else n_per_class.groupby(crops["group"]).transform("min")
    is_kept = _draw_order(crops, by, _rng(seed, f"balance/{mode}")) < n_minority
    return crops[is_kept].reset_index(drop=True)


# --- splitting ----------------------------------------------------------------------------


def split_groups(crops: pd.DataFrame, split_cfg: SplitConfig, needs_fake: bool = True) -> pd.DataFrame:
    """The crops with a `split` column: whole groups go to test and val, the rest to train.

    Groups come from `split_cfg.test_groups`/`val_groups` when listed, else a seeded,
    stratified draw of `test_fraction`/`val_fraction` of all groups (at least one group
    each when the fraction is above zero). Before drawing, train keeps a group with both
    classes (or one of each), then test and val get REAL and FAKE where the groups allow.
    `frame_level_val` instead takes `frame_level_val_fraction` of the frames of every
    non-test group and class (the original 89/11 rule) and warns that this leaks.
    `needs_fake` False (self-blended training) accepts a train split without FAKE crops.

    Raises:
        SplitError: a listed group is unknown or listed twice, the config asks for more
            groups than exist, or the train split would lack a class.
    """
    if split_cfg.frame_level_val and split_cfg.val_groups:
        raise SplitError("split.val_groups and split.frame_level_val exclude each other; drop one of them")
    groups = _group_classes(crops)
    rng = _rng(split_cfg.seed, "split")
    listed_test, listed_val = _check_listed(groups, split_cfg.test_groups, split_cfg.val_groups)
    free = groups.drop(index=listed_test + listed_val)
    anchors = _train_anchors(free, rng)
    test = listed_test or _draw_groups(free.drop(index=anchors), split_cfg.test_fraction, len(groups), "test", rng)
    if split_cfg.frame_level_val:
        split = crops.assign(split=np.where(crops["group"].isin(test), "test", "train"))
        split = _frame_level_val(split, split_cfg.frame_level_val_fraction, split_cfg.seed)
    else:
        pool = free[~free.index.isin(anchors + test)]
        val = listed_val or _draw_groups(pool, split_cfg.val_fraction, len(groups), "val", rng)
        names = pd.Series("train", index=groups.index).mask(groups.index.isin(test), "test")
        split = crops.assign(split=crops["group"].map(names.mask(groups.index.isin(val), "val")))
    _check_classes(split, needs_fake)
    return split


def build_split(videos: pd.DataFrame, crops: pd.DataFrame, split_cfg: SplitConfig,
                fakes: str = "given") -> pd.DataFrame:
    """Groups, balance, split and leakage check: the rows of manifests/split.csv.

    `fakes` is train.fakes: unless "given", REAL-only groups are kept (not dropped by
    balancing) and the train split may lack FAKE crops, since training makes its own.
    The crops' landmark columns, when present, are kept for self-blending.

    Raises:
        SplitError: no crops, crops of videos missing from `videos`, or a config the data
            cannot satisfy. LeakageError: the result puts a group, video or original in two splits.
    """
    grouped = grouping.assign_groups(videos, split_cfg.group_by)
    labelled = _cap_crops_per_video(attach_videos(crops, grouped), split_cfg.max_crops_per_video)
    makes_fakes = fakes != "given"
    balanced = balance(labelled, split_cfg.balance, split_cfg.seed, split_cfg.drop_groups_without_real,
                       keep_real_only=makes_fakes)
    if balanced.empty:
        raise SplitError("no crops are left after balancing; check the labels and split.balance in the config")
    split = split_groups(balanced, split_cfg, needs_fake=not makes_fakes)
    grouping.check_leakage(split, frame_level_val=split_cfg.frame_level_val)
    return split[_columns(split)].reset_index(drop=True)


def attach_videos(crops: pd.DataFrame, videos: pd.DataFrame) -> pd.DataFrame:
    """Crops with their video's label, original and group (videos as from grouping.assign_groups).

    Raises:
        SplitError: there are no crops, or a crop's video is not in `videos`.
    """
    if crops.empty:
        raise SplitError("no face crops to split; run notebook 02 (faces) first or check its status table")
    unknown = sorted(set(crops["video"].astype(str)) - set(videos["video"]))
    if unknown:
        raise SplitError(f"{len(unknown)} video(s) with crops are not in videos.csv (first: {unknown[0]!r}); "
                         "re-run notebooks 01 and 02 on the same config")
    own = crops.drop(columns=[c for c in ("label", "original", "group") if c in crops.columns])
    return own.assign(video=own["video"].astype(str)).merge(
        videos[["video", "label", "original", "group"]], on="video", how="left", validate="many_to_one")


# --- reporting and files ------------------------------------------------------------------


def summary(split: pd.DataFrame) -> pd.DataFrame:
    """Groups, videos and crops per split and label (rows train/val/test x REAL/FAKE, plus totals)."""
    index = pd.MultiIndex.from_product([list(SPLITS), list(LABELS)], names=["split", "label"])
    counts = split.groupby(["split", "label"]).agg(
        groups=("group", "nunique"), videos=("video", "nunique"), crops=("path", "size"))
    counts = counts.reindex(index, fill_value=0)
    totals = split.groupby("split").agg(groups=("group", "nunique"), videos=("video", "nunique"),
                                        crops=("path", "size")).reindex(list(SPLITS), fill_value=0)
    totals.index = pd.MultiIndex.from_product([list(SPLITS), ["all"]], names=["split", "label"])
    order = pd.MultiIndex.from_product([list(SPLITS), [*LABELS, "all"]], names=["split", "label"])
    return pd.concat([counts, totals]).reindex(order).astype(int)


def write_split(split: pd.DataFrame, path: str | Path) -> Path:
    """Write split.csv atomically; an identical existing file is left untouched (mtime kept).

    Read it back with runfolder.read_split.
    """
    path = Path(path)
    rows = split[_columns(split)]
    if path.is_file() and _same_rows(_existing_rows(path), rows):
        return path
    return write_csv(rows, path)


def materialize(split: pd.DataFrame, work_dir: str | Path, out_dir: str | Path) -> pd.DataFrame:
    """Write the folder tree out_dir/{train,val,test}/{real,fake}/ for tools that want folders.

    Each crop becomes a hard link (a copy where links are impossible, e.g. across disks)
    named after its relative path, so nothing is duplicated on disk. Files in those folders
    that the split no longer lists are removed, so a new split never leaves a crop behind
    in its old split. Returns `path`, `split`, `label` and the new `file` per crop.

    Raises:
        SplitError: out_dir holds the run folder or the crops. CropError: a listed crop is missing.
    """
    work_dir, out_dir = Path(work_dir).resolve(), Path(out_dir).resolve()
    sources = [work_dir / p for p in split["path"]]
    if _is_within(work_dir, out_dir) or any(_is_within(source, out_dir) for source in sources):
        raise SplitError(f"{out_dir}: holds the run folder or its crops; choose an out_dir inside or beside {work_dir}")
    targets = [out_dir / s / label.lower() / "__".join(Path(p).parts)
               for s, label, p in zip(split["split"], split["label"], split["path"])]
    _remove_unlisted(out_dir, set(targets))
    for source, target in tqdm(list(zip(sources, targets)), desc="materialize", unit="crop", leave=False):
        _link_or_copy(source, target)
    return split[["path", "split", "label"]].assign(file=[str(t) for t in targets])


# --- private helpers ----------------------------------------------------------------------


def _sorted(crops: pd.DataFrame) -> pd.DataFrame:
    """Rows in a canonical order, so results do not depend on the order crops were listed in."""
    order = [c for c in ("group", "label", "video", "frame", "face", "track") if c in crops.columns]
    order += ["path"] if "face" not in order and "path" in crops.columns else []
    return crops.sort_values(order, kind="stable").reset_index(drop=True)


def _rng(seed: int, name: str) -> np.random.Generator:
    """A generator for one named purpose, so one group's draw never shifts another's."""
    if seed < 0:
        raise SplitError(f"split.seed must be a non-negative integer, got {seed}")
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _handle_single_class_groups(crops: pd.DataFrame, mode: str, drop_without_real: bool,
                                keep_real_only: bool = False) -> pd.DataFrame:
    labels_per_group = crops.groupby("group")["label"].agg(set)
    no_real = sorted(labels_per_group.index[labels_per_group.map(lambda s: "REAL" not in s)])
    no_fake = sorted(labels_per_group.index[labels_per_group.map(lambda s: "FAKE" not in s)])
    if no_real and not drop_without_real and mode == "per_group":
        raise SplitError(f"group {no_real[0]!r} has no REAL crops to balance against; "
                         "keep such groups only with split.balance: none or global")
    dropped = set(no_real) if drop_without_real else set()
    if no_real:
        action = "dropped" if drop_without_real else "kept (class weights balance them)"
        warnings.warn(f"{len(no_real)} group(s) have no REAL crops (first: {no_real[0]!r}); {action}", stacklevel=3)
    if no_fake and mode == "per_group" and not keep_real_only:
        dropped |= set(no_fake)
        warnings.warn(f"{len(no_fake)} group(s) have no FAKE crops (first: {no_fake[0]!r}); "
                      "dropped by per-group balancing", stacklevel=3)
    return crops[~crops["group"].isin(dropped)].reset_index(drop=True)


def _draw_order(crops: pd.DataFrame, by: list[str], rng: np.random.Generator) -> pd.Series:
    """Each crop's place in the draw within its `by` cell (0 = drawn first), aligned to crops.

    The draw goes round-robin over the cell's videos (in a random order), taking a random
    not-yet-drawn frame of each in turn: a cut at n takes the videos evenly. The faces of
    one frame are adjacent, so a cut splits at most one frame. `crops` must be _sorted.
    """
    frames = crops[["video", "frame"]].drop_duplicates()
    videos = frames["video"].drop_duplicates()
    video_turn = pd.Series(rng.random(len(videos)), index=videos.values)
    frames = frames.assign(shuffle=rng.random(len(frames)), turn=frames["video"].map(video_turn))
    frames["round"] = frames.groupby("video")["shuffle"].rank(method="first")
    ordered = crops[[*by, "video", "frame"]].reset_index().merge(frames, on=["video", "frame"])
    ordered = ordered.sort_values([*by, "round", "turn", "index"], kind="stable")
    return ordered.groupby(by).cumcount().set_axis(ordered["index"].values).reindex(crops.index)


def _cap_crops_per_video(crops: pd.DataFrame, max_crops: int | None) -> pd.DataFrame:
    """At most max_crops crops per video, evenly spaced over its frames (None keeps all)."""
    if max_crops is None:
        return crops
    if max_crops < 1:
        raise SplitError(f"split.max_crops_per_video must be at least 1 or null, got {max_crops}")
    ordered = _sorted(crops)
    position = ordered.groupby("video").cumcount()
    size = ordered.groupby("video")["video"].transform("size")
    # evenly spaced picks: keep row i when floor(i * k / n) steps up, first row included
    is_kept = (size <= max_crops) | ((position * max_crops) % size < max_crops)
    return ordered[is_kept].reset_index(drop=True)


def _group_classes(crops: pd.DataFrame) -> pd.DataFrame:
    """Per group (sorted): has_real, has_fake."""
    labels = crops.groupby("group")["label"].agg(set).sort_index()
    return pd.DataFrame({"has_real": labels.map(lambda s: "REAL" in s),
                         "has_fake": labels.map(lambda s: "FAKE" in s)}, index=labels.index)


def _check_listed(groups: pd.DataFrame, test_groups: Iterable[str],
                  val_groups: Iterable[str]) -> tuple[list[str], list[str]]:
    """The groups listed in the config, as text, checked: known, each once, some left for train."""
    listed = {"test": [str(g) for g in test_groups], "val": [str(g) for g in val_groups]}
    for name, names in listed.items():
        unknown = [g for g in names if g not in groups.index]
        if unknown:
            raise SplitError(f"split.{name}_groups names {len(unknown)} unknown group(s) (first: {unknown[0]!r}); "
                             f"known groups include {list(groups.index[:5])} (groups dropped by balancing are unknown)")
    every = listed["test"] + listed["val"]
    repeated = [g for g in every if every.count(g) > 1]
    if repeated:
        raise SplitError(f"split.test_groups/val_groups repeat group {repeated[0]!r}; list each group once")
    if every and len(every) >= len(groups):
        raise SplitError(f"split.test_groups/val_groups take all {len(groups)} group(s); leave some for train")
    return listed["test"], listed["val"]


def _train_anchors(free: pd.DataFrame, rng: np.random.Generator) -> list[str]:
    """Groups kept for train before test and val are drawn, so train holds REAL and FAKE if it can."""
    if free.empty:
        return []
    both = free.index[free["has_real"] & free["has_fake"]]
    if len(both):
        return [both[rng.integers(len(both))]]
    with_real, with_fake = free.index[free["has_real"]], free.index[free["has_fake"]]
    return [names[rng.integers(len(names))] for names in (with_real, with_fake) if len(names)]


def _draw_groups(pool: pd.DataFrame, fraction: float, n_groups: int, name: str,
                 rng: np.random.Generator) -> list[str]:
    """A stratified draw of `fraction` of all n_groups groups (at least one if fraction > 0) from pool."""
    if not 0 <= fraction < 1:
        raise SplitError(f"split.{name}_fraction must be in [0, 1), got {fraction}")
    n_wanted = max(1, _round_half_up(fraction * n_groups)) if fraction > 0 else 0
    if n_wanted > len(pool):
        raise SplitError(f"split.{name}_fraction {fraction} asks for {n_wanted} {name} group(s) but only "
                         f"{len(pool)} of {n_groups} are free (train keeps some); lower it or add identities")
    return _stratified_draw(pool, n_wanted, rng)


def _stratified_draw(pool: pd.DataFrame, n_wanted: int, rng: np.random.Generator) -> list[str]:
    """n_wanted groups, strata (both classes / REAL only / FAKE only) in proportion, both classes if possible.

    Systematic sampling: each stratum's shuffled groups get evenly spaced positions in [0, 1),
    so any prefix of the merged order holds every stratum in proportion.
    """
    if n_wanted == 0:
        return []
    stratum = pool["has_real"].astype(int) + 2 * pool["has_fake"].astype(int)
    positions = pd.Series(0.0, index=pool.index)
    for _, members in pool.groupby(stratum, sort=True):
        shuffled = members.index[rng.permutation(len(members))]
        positions[shuffled] = (np.arange(len(members)) + rng.random()) / len(members)
    ordered = pool.loc[positions.sort_values(kind="stable").index]
    # lead with a group holding both classes, else one of each, so the split covers both if it can
    both = ordered.index[ordered["has_real"] & ordered["has_fake"]]
    one_each = [*ordered.index[ordered["has_real"]][:1], *ordered.index[ordered["has_fake"]][:1]]
    first = list(both[:1]) if len(both) else one_each[:n_wanted]
    return first + [g for g in ordered.index[: n_wanted + len(first)] if g not in first][: n_wanted - len(first)]


def _frame_level_val(split: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """The original rule: in every train group and class, a shuffled `fraction` of the frames goes to val."""
    if not 0 < fraction < 1:
        raise SplitError(f"split.frame_level_val_fraction must be in (0, 1), got {fraction}")
    warnings.warn("split.frame_level_val: validation frames come from the training videos, so neighbouring "
                  "frames leak and the validation score flatters the model; prefer whole-group validation",
                  stacklevel=3)
    frames = split.loc[split["split"] == "train", ["group", "label", "video", "frame"]].drop_duplicates()
    frames = frames.assign(shuffle=_rng(seed, "frame_level_val").random(len(frames)))
    frames = frames.sort_values(["group", "label", "shuffle"], kind="stable")
    n_frames = frames.groupby(["group", "label"])["frame"].transform("size")
    n_val = np.floor(fraction * n_frames + 0.5 + 1e-9)  # half up, as _round_half_up
    val_frames = frames[frames.groupby(["group", "label"]).cumcount() < n_val]
    keys = pd.MultiIndex.from_frame(split[["video", "frame"]])
    is_val = keys.isin(pd.MultiIndex.from_frame(val_frames[["video", "frame"]]))
    return split.assign(split=split["split"].mask(is_val, "val"))


def _round_half_up(value: float) -> int:
    """2.5 -> 3 (Python's round gives 2); the small epsilon absorbs 0.11 * 50 = 5.500000000000001-style noise."""
    return int(np.floor(value + 0.5 + 1e-9))


def _check_classes(split: pd.DataFrame, needs_fake: bool = True) -> None:
    for name in SPLITS:
        labels = set(split.loc[split["split"] == name, "label"])
        missing = [label for label in LABELS if label not in labels]
        if name == "train" and missing and (needs_fake or "REAL" in missing):
            raise SplitError(f"the train split has no {missing[0]} crops; add identities or change the group lists")
        if labels and missing and needs_fake:
            warnings.warn(f"the {name} split has no {missing[0]} crops; its metrics cover one class only",
                          stacklevel=3)


def _columns(split: pd.DataFrame) -> list[str]:
    """split.csv's columns: the contract, then the landmarks when the crops have them."""
    return [*SPLIT_COLUMNS, *[column for column in LANDMARK_COLUMNS if column in split.columns]]


def _existing_rows(path: Path) -> pd.DataFrame:
    """The rows of an existing split.csv as written (no label_index); empty when it does not pass the checks."""
    try:
        return runfolder.read_split(path).drop(columns="label_index")
    except SplitError:  # a broken file is replaced, never compared
        return pd.DataFrame()


def _same_rows(existing: pd.DataFrame, rows: pd.DataFrame) -> bool:
    if list(existing.columns) != list(rows.columns) or len(existing) != len(rows):
        return False
    as_text = [frame.reset_index(drop=True).astype(str) for frame in (existing, rows)]
    return bool((as_text[0].values == as_text[1].values).all())


def _is_within(path: Path, folder: Path) -> bool:
    return Path(os.path.normpath(path)).is_relative_to(folder)


def _remove_unlisted(out_dir: Path, targets: set[Path]) -> None:
    for name in SPLITS:
        for label in LABELS:
            folder = out_dir / name / label.lower()
            for stale in (folder.iterdir() if folder.is_dir() else []):
                if stale.is_file() and stale not in targets:
                    stale.unlink()


def _link_or_copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise CropError(f"{source}: crop listed in the split is missing; re-run notebook 02 (faces)")
    if target.is_file() and _is_same_content(source, target):
        return
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem, or links not supported (some network drives)
            shutil.copy2(source, tmp)


def _is_same_content(source: Path, target: Path) -> bool:
    """The same file (a link), or a copy that copy2 made of it (same size and modification time)."""
    if os.path.samefile(source, target):
        return True
    source_stat, target_stat = source.stat(), target.stat()
    return (source_stat.st_size, source_stat.st_mtime_ns) == (target_stat.st_size, target_stat.st_mtime_ns)
