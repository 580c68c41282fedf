"""Face-image folders as data folders: Kaggle's deepfake-faces layout and labels.csv, through the stages."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import videos
from dfhelpers import config, evaluation, extract, facedetect, faces, grouping, imagesets, metadata, splitting
from dfhelpers.errors import MetadataError

FACES_CFG = videos.SMALL


@pytest.fixture(scope="module")
def tight_face() -> np.ndarray:
    return videos.tight_face()


FAMILIES = [("reala.mp4", "REAL", ""), ("fakea1.mp4", "FAKE", "reala.mp4"), ("fakea2.mp4", "FAKE", "reala.mp4"),
            ("realb.mp4", "REAL", ""), ("fakeb1.mp4", "FAKE", "realb.mp4")]


def test_a_kaggle_deepfake_faces_folder_lists_one_item_per_image_grouped_by_family(tmp_path, tight_face):
    folder = videos.write_kaggle_faces(tmp_path / "deepfake-faces", tight_face, FAMILIES)
    items = metadata.read_videos([folder])
    assert items["video"].tolist() == [name for name, _, _ in FAMILIES]
    assert items["path"].tolist() == [str(folder / "faces_224" / f"{Path(n).stem}.jpg") for n, _, _ in FAMILIES]
    assert items["group"].tolist() == ["reala.mp4"] * 3 + ["realb.mp4"] * 2  # a family is one identity group
    assert items["original"].iloc[0] is None and items["original_width"].eq("129").all()


def test_a_missing_image_is_skipped_with_a_warning_and_is_an_error_when_strict(tmp_path, tight_face):
    folder = videos.write_kaggle_faces(tmp_path / "deepfake-faces", tight_face, FAMILIES)
    (folder / "faces_224" / "fakea2.jpg").unlink()
    with pytest.warns(UserWarning, match=r"metadata.csv: 1 entry without its file \(first: 'fakea2.mp4'\)"):
        assert "fakea2.mp4" not in metadata.read_videos([folder])["video"].tolist()
    with pytest.raises(MetadataError, match="fakea2.mp4"):
        metadata.read_videos([folder], strict=True)


@pytest.mark.parametrize("bad_row, message", [
    (("fakeb2.mp4", "fake", "realb.mp4"), r"metadata.csv: row 7: unknown label 'fake'; use REAL or FAKE"),
    (("fakeb2.mp4", "FAKE", ""), r"metadata.csv: row 7: FAKE without 'original'"),
    (("fakeb1.mp4", "FAKE", "realb.mp4"), r"metadata.csv: 'fakeb1.mp4' is listed twice"),
])
def test_malformed_labels_stop_with_one_line_naming_the_file_and_row(tmp_path, tight_face, bad_row, message):
    folder = videos.write_kaggle_faces(tmp_path / "deepfake-faces", tight_face, [*FAMILIES, bad_row])
    with pytest.raises(MetadataError, match=message) as raised:
        metadata.read_videos([folder])
    assert "\n" not in str(raised.value)


def test_a_labels_csv_without_a_header_column_names_the_columns_it_needs(tmp_path):
    (tmp_path / "labels.csv").write_text("file,label\na.png,REAL\n")
    with pytest.raises(MetadataError, match=r"labels.csv: missing column 'image'; the header must name image, label"):
        metadata.read_part(tmp_path)


def test_a_folder_without_a_labels_file_names_the_three_it_accepts(tmp_path):
    with pytest.raises(MetadataError, match="metadata.json, metadata.csv, labels.csv"):
        metadata.read_part(tmp_path)


def test_labels_csv_images_are_items_named_by_their_path(tmp_path, tight_face):
    for name in ("real/a.png", "fake/a.png"):
        videos.write_image(tmp_path / name, tight_face)
    pd.DataFrame({"image": ["real/a.png", "fake/a.png"], "label": ["REAL", "FAKE"], "original": ["", "real/a.png"],
                  "method": ["", "swap"]}).to_csv(tmp_path / "labels.csv", index=False)
    items = metadata.read_part(tmp_path)
    assert items["video"].tolist() == ["real/a.png", "fake/a.png"]
    assert items["group"].tolist() == ["real/a.png", "real/a.png"] and items["method"].tolist() == ["", "swap"]
    assert [faces.crop_folder_name(n) for n in items["video"]] == ["real__a", "fake__a"]  # no shared crop folder


def _sequence_folder(root: Path, face: np.ndarray) -> Path:
    rows = []
    for sequence, label, original in (("r1", "REAL", ""), ("f1", "FAKE", "r1")):
        for frame in range(3):
            videos.write_image(root / sequence / f"{frame:03d}.png", np.roll(face, 4 * frame, axis=0))
            rows.append({"image": f"{sequence}/{frame:03d}.png", "label": label, "original": original,
                         "video": sequence})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def test_images_that_share_a_video_are_one_item_whose_frames_are_its_images(tmp_path, tight_face):
    folder = _sequence_folder(tmp_path, tight_face)
    items = metadata.read_part(folder)
    assert items["video"].tolist() == ["r1", "f1"] and items["path"].tolist() == [str(folder / "r1"),
                                                                                   str(folder / "f1")]
    assert imagesets.n_frames(folder / "r1") == 3
    frames = list(imagesets.read_frames(folder / "r1", [0, 2, 5]))
    assert [index for index, _ in frames] == [0, 2]
    side = 224 + 2 * round(imagesets.PAD_FRACTION * 224)
    assert frames[0][1].shape == (side, side, 3)


def test_a_sequence_whose_folder_holds_an_unlisted_image_is_refused(tmp_path, tight_face):
    folder = _sequence_folder(tmp_path, tight_face)
    videos.write_image(folder / "r1" / "999.png", tight_face)
    with pytest.raises(MetadataError, match=r"r1/999.png is in sequence 'r1''s folder but not listed"):
        metadata.read_part(folder)


def test_a_tight_face_image_is_cropped_in_the_framing_of_a_video_crop(tmp_path, tight_face):
    """The same face, framed by a video frame or cut tight to its box: the crops put it in the same place."""
    frame = np.full((480, 480, 3), 120, dtype=np.uint8)
    frame[128:352, 128:352] = tight_face
    detector = facedetect.FaceDetector(FACES_CFG)
    boxes, _, points = detector.detect_with_landmarks([frame])[0]
    in_video_crop = facedetect.landmarks_in_crop(points[0], boxes[0], FACES_CFG.crop_size, FACES_CFG.margin,
                                                 frame.shape)
    image = extract.extract_video(videos.write_image(tmp_path / "face.jpg", tight_face), FACES_CFG, detector)
    assert image.status == "ok" and image.crops.shape == (1, FACES_CFG.crop_size, FACES_CFG.crop_size, 3)
    assert np.abs(image.landmarks[0] - in_video_crop).max() < 0.03 * FACES_CFG.crop_size


def test_the_face_stage_runs_images_and_videos_together_and_counts_bad_images(tmp_path, tight_face):
    image_folder = videos.write_kaggle_faces(tmp_path / "deepfake-faces", tight_face, FAMILIES)
    videos.write_image(image_folder / "faces_224" / "realb.jpg", np.full((224, 224, 3), 90, dtype=np.uint8))  # no face
    (image_folder / "faces_224" / "fakeb1.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")  # a broken image
    video_folder = tmp_path / "videos"
    video_folder.mkdir()
    videos.write_video(video_folder / "v.mp4", [videos.face_frame(shift=s) for s in range(6)])
    (video_folder / "metadata.json").write_text('{"v.mp4": {"label": "REAL"}}')
    cfg = config.from_dict({"work_dir": str(tmp_path / "run"), "data_dirs": [str(image_folder), str(video_folder)],
                            "faces": {"frames_per_video": 4, "workers": 1}}, base_dir=tmp_path)
    items = metadata.read_videos(cfg.data_dirs)
    statuses = faces.run_stage(cfg, items).set_index("video")["status"]
    assert statuses[["reala.mp4", "fakea1.mp4", "fakea2.mp4", "v.mp4"]].eq("ok").all()
    assert statuses["realb.mp4"] == "no_face" and statuses["fakeb1.mp4"].startswith("unreadable: fakeb1.jpg")
    crops = faces.load_crops(cfg)
    assert crops.groupby("video").size().to_dict() == {"fakea1.mp4": 1, "fakea2.mp4": 1, "reala.mp4": 1, "v.mp4": 4}


def test_the_split_keeps_each_family_of_face_images_on_one_side(tmp_path, tight_face):
    rows = [(f"{kind}{family}{k}.mp4", label, f"real{family}0.mp4" if label == "FAKE" else "")
            for family in range(12) for kind, label, k in (("real", "REAL", 0), ("fake", "FAKE", 1), ("fake", "FAKE", 2))]
    items = metadata.read_videos([videos.write_kaggle_faces(tmp_path / "faces", tight_face, rows)])
    crops = items[["video"]].assign(frame=0, face=0, track=0, path=items["video"] + ".jpg")
    split_cfg = config.SplitConfig(balance="none", val_fraction=0.2, test_fraction=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = splitting.build_split(items, crops, split_cfg)
    grouping.check_leakage(split)
    assert split.groupby("group")["split"].nunique().eq(1).all() and split["group"].nunique() == 12
    assert set(split["split"]) == {"train", "val", "test"}


def test_an_image_folder_is_measured_at_frame_and_sequence_level(tmp_path, tight_face):
    folder = _sequence_folder(tmp_path / "sequences", tight_face)
    model_path = videos.save_tiny_model(tmp_path / "tiny.keras")
    score_cfg = config.ScoreConfig(aggregation="mean", trim=0, bootstrap=20)  # min_faces 12 > 3 images
    [(name, result)] = list(evaluation.evaluate_each([folder], model_path, FACES_CFG, score_cfg, tmp_path / "out",
                                                     labelled=True, progress=False))
    predictions = result["predictions"].set_index("video")
    assert predictions.loc[["r1", "f1"], "n_faces"].tolist() == [3, 3]  # a sequence's images are its frames
    assert predictions["status"].eq("ok").all() and predictions["label"].tolist() == ["REAL", "FAKE"]
    faces_of = result["faces"].groupby("video")["score"]
    assert predictions["score"].to_dict() == pytest.approx(faces_of.mean().to_dict())
    saved = json.loads((tmp_path / "out" / "sequences" / "metrics.json").read_text())
    assert saved["n_videos"] == 2 and saved["frame"]["n_faces"] == 6
