"""Balancing, identity groups, the group-level split and its leakage check (dfhelpers.splitting, .grouping)."""

from __future__ import annotations

import dataclasses
import os
import warnings

import pandas as pd
import pytest

from dfhelpers import grouping, runfolder, splitting
from dfhelpers.config import SplitConfig
from dfhelpers.errors import LeakageError, SplitError, StageOutputMissing


# --- tiny data ----------------------------------------------------------------------------


def make_videos(n_people: int = 8, fakes_per_real: int = 3) -> pd.DataFrame:
    """DFDC-shaped video table: per person one REAL and its FAKEs, in a per-person folder."""
    rows = []
    for person in range(n_people):
        real = f"real{person}.mp4"
        rows.append({"video": real, "path": f"/data/person{person}/{real}", "part": "part0", "label": "REAL",
                     "original": "", "group": real, "person": f"P{person}"})
        for k in range(fakes_per_real):
            fake = f"fake{person}_{k}.mp4"
            rows.append({"video": fake, "path": f"/data/person{person}/{fake}", "part": "part0", "label": "FAKE",
                         "original": real, "group": real, "person": f"P{person}"})
    return pd.DataFrame(rows)


def make_crops(videos: pd.DataFrame, frames_per_video: int = 10, faces_per_frame: int = 1) -> pd.DataFrame:
    """One crop row per (video, frame, face), as faces.load_crops returns them."""
    rows = [{"video": video, "frame": frame * 3, "face": face, "track": face, "x1": 0, "y1": 0, "x2": 50,
             "y2": 50, "prob": 0.99, "path": f"faces/{video}/{frame * 3:06d}_{face}.jpg"}
            for video in videos["video"] for frame in range(frames_per_video) for face in range(faces_per_frame)]
    return pd.DataFrame(rows)


def labelled(videos: pd.DataFrame, crops: pd.DataFrame, group_by: str = "original") -> pd.DataFrame:
    return splitting.attach_videos(crops, grouping.assign_groups(videos, group_by))


def counts_per_group(crops: pd.DataFrame) -> pd.DataFrame:
    return pd.crosstab(crops["group"], crops["label"]).reindex(columns=list(runfolder.LABELS), fill_value=0)


@pytest.fixture
def videos() -> pd.DataFrame:
    return make_videos()


@pytest.fixture
def crops(videos: pd.DataFrame) -> pd.DataFrame:
    return make_crops(videos)


# --- balancing ----------------------------------------------------------------------------


def test_per_group_balance_keeps_as_many_fake_crops_as_real_in_each_group(videos, crops):
    balanced = splitting.balance(labelled(videos, crops), "per_group", seed=33)
    counts = counts_per_group(balanced)
    assert (counts["REAL"] == 10).all() and (counts["FAKE"] == 10).all()
    assert len(counts) == 8


def test_per_group_balance_undersamples_real_when_real_is_the_majority():
    videos = make_videos(n_people=2, fakes_per_real=1)
    crops = make_crops(videos)
    crops = crops[~(crops["video"].str.startswith("fake") & (crops["frame"] >= 12))]  # FAKE keeps 4 frames
    counts = counts_per_group(splitting.balance(labelled(videos, crops), "per_group", seed=0))
    assert (counts["REAL"] == 4).all() and (counts["FAKE"] == 4).all()


def test_balance_draws_fake_frames_evenly_over_the_fake_videos(videos, crops):
    balanced = splitting.balance(labelled(videos, crops), "per_group", seed=33)
    per_video = balanced[balanced["label"] == "FAKE"].groupby("video").size()
    assert sorted(per_video.unique()) == [3, 4]  # 10 crops over 3 videos


def test_balance_keeps_all_faces_of_a_frame_together(videos):
    crops = make_crops(videos, faces_per_frame=2)
    balanced = splitting.balance(labelled(videos, crops), "per_group", seed=1)
    faces_per_frame = balanced[balanced["label"] == "FAKE"].groupby(["video", "frame"]).size()
    assert (faces_per_frame == 2).all()
    assert (counts_per_group(balanced)["FAKE"] == 20).all()


def test_global_balance_equalises_the_classes_overall(videos, crops):
    uneven = crops[~((crops["video"] == "real0.mp4") & (crops["frame"] > 10))]
    balanced = splitting.balance(labelled(videos, uneven), "global", seed=33)
    label_counts = balanced["label"].value_counts()
    assert label_counts["REAL"] == label_counts["FAKE"] == 10 * 7 + 4


def test_balance_none_keeps_every_crop(videos, crops):
    balanced = splitting.balance(labelled(videos, crops), "none", seed=33)
    assert len(balanced) == len(crops)
    assert balanced["label"].value_counts().to_dict() == {"FAKE": 240, "REAL": 80}


def test_the_default_split_trains_on_as_many_real_as_fake_crops(videos, crops):
    split = splitting.build_split(videos, crops, SplitConfig())
    train_labels = split.loc[split["split"] == "train", "label"].value_counts()
    assert train_labels["REAL"] == train_labels["FAKE"] > 0


def test_group_without_real_crops_is_dropped_with_a_warning(videos, crops):
    without_real = crops[crops["video"] != "real3.mp4"]
    with pytest.warns(UserWarning, match="no REAL crops.*real3.mp4.*dropped"):
        balanced = splitting.balance(labelled(videos, without_real), "per_group", seed=33)
    assert "real3.mp4" not in set(balanced["group"])


def test_group_without_real_crops_is_kept_with_a_warning_when_class_weights_balance(videos, crops):
    without_real = crops[crops["video"] != "real3.mp4"]
    with pytest.warns(UserWarning, match="kept"):
        balanced = splitting.balance(labelled(videos, without_real), "none", seed=33, drop_groups_without_real=False)
    assert (balanced["group"] == "real3.mp4").sum() == 30


def test_keeping_groups_without_real_under_per_group_balance_is_an_error(videos, crops):
    without_real = crops[crops["video"] != "real3.mp4"]
    with pytest.raises(SplitError, match="real3.mp4"):
        splitting.balance(labelled(videos, without_real), "per_group", seed=33, drop_groups_without_real=False)


def test_balance_is_deterministic_and_ignores_row_order(videos, crops):
    rows = labelled(videos, crops)
    first = splitting.balance(rows, "per_group", seed=33)
    shuffled = splitting.balance(rows.sample(frac=1.0, random_state=5), "per_group", seed=33)
    other_seed = splitting.balance(rows, "per_group", seed=34)
    pd.testing.assert_frame_equal(first, shuffled)
    assert set(first["path"]) != set(other_seed["path"])


def test_max_crops_per_video_keeps_evenly_spaced_frames(videos, crops):
    split = splitting.build_split(videos, crops, SplitConfig(max_crops_per_video=5, balance="none"))
    frames = split.loc[split["video"] == "real0.mp4", "frame"].tolist()
    assert frames == [0, 6, 12, 18, 24]


# --- identity groups ----------------------------------------------------------------------


def test_fake_whose_original_is_absent_forms_a_group_named_after_the_original(videos):
    orphan = pd.DataFrame([{"video": "lost_fake.mp4", "path": "/data/x/lost_fake.mp4", "label": "FAKE",
                            "original": "never_seen.mp4", "person": ""}])
    groups = grouping.assign_groups(pd.concat([videos, orphan], ignore_index=True), "original")
    assert groups.set_index("video").at["lost_fake.mp4", "group"] == "never_seen.mp4"


def test_group_by_person_uses_the_person_column(videos):
    merged = videos.assign(person=videos["person"].replace({"P1": "P0"}))
    groups = grouping.assign_groups(merged, "person").set_index("video")["group"]
    assert groups["real1.mp4"] == groups["fake1_2.mp4"] == groups["real0.mp4"] == "P0"
    assert groups.nunique() == 7


def test_group_by_person_gives_a_fake_without_person_its_originals_person(videos):
    only_reals_listed = videos.assign(person=videos["person"].where(videos["label"] == "REAL", ""))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing falls back, so nothing to warn about
        groups = grouping.assign_groups(only_reals_listed, "person").set_index("video")["group"]
    assert groups["fake2_0.mp4"] == "P2"


def test_group_by_person_joins_persons_when_a_fake_and_its_original_differ(videos):
    swapped = videos.copy()
    swapped.loc[swapped["video"] == "fake0_0.mp4", "person"] = "P5"  # the face donor, not the original's person
    with pytest.warns(UserWarning, match="joined"):
        groups = grouping.assign_groups(swapped, "person").set_index("video")["group"]
    assert groups["real0.mp4"] == groups["real5.mp4"] == "P0"


def test_group_by_person_without_any_person_is_an_error(videos):
    with pytest.raises(SplitError, match="persons_csv"):
        grouping.assign_groups(videos.assign(person=""), "person")


def test_group_by_folder_uses_the_parent_folder(videos):
    groups = grouping.assign_groups(videos, "folder").set_index("video")["group"]
    assert groups["fake4_1.mp4"] == groups["real4.mp4"] == "person4"


def test_group_table_reports_videos_and_crops_per_group(videos, crops):
    table = grouping.group_table(splitting.build_split(videos, crops, SplitConfig(group_by="folder")))
    assert len(table) == 8
    assert (table["videos"] == 4).all() and (table["crops"] == 20).all()


# --- splitting and leakage ----------------------------------------------------------------


def test_split_keeps_each_group_video_and_original_in_one_split(videos, crops):
    split = splitting.build_split(videos, crops, SplitConfig())
    source = split["original"].where(split["original"] != "", split["video"])
    for key in (split["group"], split["video"], source):
        assert split.groupby(key)["split"].nunique().eq(1).all()
    assert set(split["split"]) == {"train", "val", "test"}


def test_split_is_deterministic_for_a_seed(videos, crops):
    first = splitting.build_split(videos, crops, SplitConfig(seed=7))
    again = splitting.build_split(videos, crops.iloc[::-1], SplitConfig(seed=7))
    pd.testing.assert_frame_equal(first, again)


def test_adversarial_groups_do_not_leak(videos, crops):
    extra_videos = pd.DataFrame([
        {"video": "orphan.mp4", "path": "/d/orphan.mp4", "label": "FAKE", "original": "gone.mp4", "person": ""},
        {"video": "lonely.mp4", "path": "/d/lonely.mp4", "label": "REAL", "original": "", "person": ""},
        {"video": "fake0_extra.mp4", "path": "/d/fake0_extra.mp4", "label": "FAKE", "original": "real0.mp4",
         "person": ""},
    ])
    all_videos = pd.concat([videos, extra_videos], ignore_index=True)
    all_crops = pd.concat([crops, make_crops(extra_videos)], ignore_index=True)
    with pytest.warns(UserWarning):  # the FAKE-only and REAL-only groups are reported
        split = splitting.build_split(all_videos, all_crops, SplitConfig(balance="none", drop_groups_without_real=False,
                                                                       test_fraction=0.3, val_fraction=0.3))
    grouping.check_leakage(split)
    assert split.loc[split["video"] == "fake0_extra.mp4", "split"].iloc[0] == \
        split.loc[split["video"] == "real0.mp4", "split"].iloc[0]


def test_held_out_splits_get_both_classes_when_groups_allow():
    videos = make_videos(n_people=2)
    only_fake = pd.DataFrame([{"video": f"orphan{k}.mp4", "path": f"/d/orphan{k}.mp4", "label": "FAKE",
                               "original": f"gone{k}.mp4", "person": ""} for k in range(6)])
    all_videos = pd.concat([videos, only_fake], ignore_index=True)
    config = SplitConfig(balance="none", drop_groups_without_real=False, test_fraction=0.1, val_fraction=0.1)
    for seed in range(5):
        with pytest.warns(UserWarning, match="no REAL"):
            split = splitting.build_split(all_videos, make_crops(all_videos), dataclasses.replace(config, seed=seed))
        for name in ("test", "train"):
            assert set(split.loc[split["split"] == name, "label"]) == {"REAL", "FAKE"}


def test_check_leakage_raises_on_a_video_in_two_splits(videos, crops):
    split = splitting.build_split(videos, crops, SplitConfig())
    test_video = split.loc[split["split"] == "test", "video"].iloc[0]
    leaked = split.copy()
    leaked.loc[leaked.index[(leaked["video"] == test_video)][:1], "split"] = "train"
    with pytest.raises(LeakageError, match="train/test"):
        grouping.check_leakage(leaked)


def test_check_leakage_raises_when_a_fake_and_its_original_are_split_apart(videos, crops):
    split = splitting.build_split(videos, crops, SplitConfig())
    fake = split[(split["split"] == "test") & (split["label"] == "FAKE")]["video"].iloc[0]
    leaked = split.assign(group=split["group"].mask(split["video"] == fake, "elsewhere"),
                          split=split["split"].mask(split["video"] == fake, "train"))
    with pytest.raises(LeakageError, match="original"):
        grouping.check_leakage(leaked)


def test_frame_level_val_reproduces_the_original_11_percent_rule(videos):
    crops = make_crops(videos, frames_per_video=50)
    with pytest.warns(UserWarning, match="leak"):
        split = splitting.build_split(videos, crops, SplitConfig(frame_level_val=True, test_groups=["real2.mp4"]))
    held_in = split[split["group"] != "real2.mp4"]
    per_group = held_in.groupby(["group", "label"])["split"].value_counts().unstack(fill_value=0)
    assert (per_group["val"] == 6).all() and (per_group["train"] == 44).all()  # 11% of 50 = 5.5 -> 6
    assert set(split.loc[split["group"] == "real2.mp4", "split"]) == {"test"}


def test_frame_level_val_fails_the_strict_leakage_check(videos, crops):
    with pytest.warns(UserWarning, match="leak"):
        split = splitting.build_split(videos, crops, SplitConfig(frame_level_val=True))
    grouping.check_leakage(split, frame_level_val=True)
    with pytest.raises(LeakageError, match="train/val"):
        grouping.check_leakage(split)


def test_more_test_groups_than_exist_is_a_split_error(videos, crops):
    with pytest.raises(SplitError, match="test.*group"):
        splitting.build_split(videos, crops, SplitConfig(test_fraction=0.95))


def test_unknown_listed_test_group_is_a_split_error(videos, crops):
    with pytest.raises(SplitError, match="nobody.mp4"):
        splitting.build_split(videos, crops, SplitConfig(test_groups=["real1.mp4", "nobody.mp4"]))


def test_listing_every_group_for_test_is_a_split_error(videos, crops):
    every_group = [f"real{k}.mp4" for k in range(8)]
    with pytest.raises(SplitError, match="leave some for train"):
        splitting.build_split(videos, crops, SplitConfig(test_groups=every_group))


def test_explicit_group_lists_are_honoured(videos, crops):
    config = SplitConfig(test_groups=["real1.mp4"], val_groups=["real4.mp4", "real6.mp4"])
    split = splitting.build_split(videos, crops, config)
    held_out = split.groupby("split")["group"].agg(lambda g: sorted(set(g)))
    assert held_out["test"] == ["real1.mp4"] and held_out["val"] == ["real4.mp4", "real6.mp4"]


def test_a_group_listed_for_test_and_val_is_a_split_error(videos, crops):
    with pytest.raises(SplitError, match="real1.mp4"):
        splitting.build_split(videos, crops, SplitConfig(test_groups=["real1.mp4"], val_groups=["real1.mp4"]))


def test_group_by_person_and_folder_split_whole_persons(videos, crops):
    for group_by in ("person", "folder"):
        split = splitting.build_split(videos, crops, SplitConfig(group_by=group_by))
        folder = split["video"].str.extract(r"(\d+)")[0]
        assert split.groupby(folder)["split"].nunique().eq(1).all()


def test_crops_of_an_unknown_video_are_a_split_error(videos, crops):
    stray = crops.iloc[:1].assign(video="stranger.mp4")
    with pytest.raises(SplitError, match="stranger.mp4"):
        splitting.build_split(videos, pd.concat([crops, stray]), SplitConfig())


def test_summary_counts_groups_videos_and_crops_per_split_and_label(videos, crops):
    split = splitting.build_split(videos, crops, SplitConfig(test_groups=["real0.mp4"], val_groups=["real1.mp4"]))
    table = splitting.summary(split)
    assert table.loc[("test", "FAKE")].tolist() == [1, 3, 10]
    assert table.loc[("train", "all")].tolist() == [6, 24, 120]


# --- files --------------------------------------------------------------------------------


def test_write_split_round_trips_and_leaves_an_identical_file_untouched(tmp_path, videos, crops):
    split = splitting.build_split(videos, crops, SplitConfig())
    path = splitting.write_split(split, tmp_path / "manifests" / "split.csv")
    os.utime(path, ns=(1, 1))
    splitting.write_split(split, path)
    assert path.stat().st_mtime_ns == 1
    written = runfolder.read_split(path)
    pd.testing.assert_frame_equal(written.drop(columns="label_index"), split.astype({"original": object}),
                                  check_dtype=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["split.csv"]


def test_write_split_replaces_a_file_that_fails_the_checks(tmp_path, videos, crops):
    split = splitting.build_split(videos, crops, SplitConfig())
    path = tmp_path / "split.csv"
    path.write_text("path,label\nx.jpg,MAYBE\n")
    splitting.write_split(split, path)
    assert len(runfolder.read_split(path)) == len(split)


def test_manifest_readers_without_a_file_name_the_notebook_to_run(tmp_path):
    with pytest.raises(StageOutputMissing, match="notebook 03"):
        runfolder.read_split(tmp_path / "split.csv")
    with pytest.raises(StageOutputMissing, match="01_data_classification"):
        runfolder.read_videos(tmp_path / "videos.csv")


def test_materialize_makes_hard_links_and_removes_stale_files(tmp_path, videos):
    crops = make_crops(videos, frames_per_video=2)
    for relative in crops["path"]:
        (tmp_path / "run" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "run" / relative).write_bytes(b"jpeg")
    split = splitting.build_split(videos, crops, SplitConfig())
    stale = tmp_path / "tree" / "train" / "real" / "old.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    files = splitting.materialize(split, tmp_path / "run", tmp_path / "tree")
    first = files.iloc[0]
    target, source = tmp_path / "tree" / first["split"] / first["label"].lower(), tmp_path / "run" / first["path"]
    assert os.path.samefile(first["file"], source) and str(first["file"]).startswith(str(target))
    assert source.stat().st_nlink == 2
    assert not stale.exists()
    assert sum(1 for p in (tmp_path / "tree").rglob("*.jpg")) == len(split)


def test_materialize_refuses_to_write_into_the_run_folder(tmp_path, videos, crops):
    split = splitting.build_split(videos, crops, SplitConfig())
    with pytest.raises(SplitError, match="out_dir"):
        splitting.materialize(split, tmp_path, tmp_path)


# --- tables for self-blended training -----------------------------------------------------


def test_a_real_only_table_splits_when_training_makes_its_own_fakes(videos):
    reals = videos[videos["label"] == "REAL"]
    split = splitting.build_split(reals, make_crops(reals), SplitConfig(), fakes="self_blend")
    assert set(split["label"]) == {"REAL"} and set(split["split"]) == {"train", "val", "test"}
    assert len(split) == len(make_crops(reals))  # nothing to balance against: every crop is kept


def test_a_real_only_table_is_refused_when_the_fakes_must_be_given(videos):
    reals = videos[videos["label"] == "REAL"]
    with pytest.raises(SplitError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splitting.build_split(reals, make_crops(reals), SplitConfig(), fakes="given")


def test_self_blend_keeps_real_only_groups_whole_and_balances_the_others(videos):
    extra = videos[videos["label"] == "REAL"].assign(video="solo.mp4", group="solo.mp4", person="P99")
    table = pd.concat([videos, extra.iloc[:1]], ignore_index=True)
    crops = make_crops(table)
    balanced = splitting.balance(labelled(table, crops), keep_real_only=True)
    counts = counts_per_group(balanced)
    assert counts.loc["solo.mp4"].tolist() == [10, 0]
    assert (counts.drop(index="solo.mp4")["REAL"] == counts.drop(index="solo.mp4")["FAKE"]).all()


def test_landmark_columns_of_the_crops_reach_split_csv(tmp_path, videos):
    crops = make_crops(videos)
    crops = crops.assign(**{column: 40.0 + i for i, column in enumerate(splitting.LANDMARK_COLUMNS)})
    split = splitting.build_split(videos, crops, SplitConfig())
    splitting.write_split(split, tmp_path / "split.csv")
    written = pd.read_csv(tmp_path / "split.csv")
    assert list(written.columns[-10:]) == splitting.LANDMARK_COLUMNS and (written["nose_y"] == 45.0).all()
