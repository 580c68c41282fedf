import concurrent.futures
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from facenet_pytorch.models.utils.detect_face import extract_face

from dfhelpers import extract, facedetect, faces, jpeg, tracking
from dfhelpers.config import FacesConfig
from dfhelpers.errors import ConfigError, StageOutputMissing
from videos import (SMALL, face_frame, face_video, folder_digest, grace_hopper, make_cfg, middle_of_packet,
                    video_table)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """MTCNN in this process with one thread, as the stage's workers run it (fast on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def detector() -> facedetect.FaceDetector:
    return facedetect.FaceDetector(SMALL)


@pytest.fixture(scope="module")
def good_videos(tmp_path_factory) -> Path:
    """Two face videos (read-only for the tests)."""
    folder = tmp_path_factory.mktemp("good_videos")
    face_video(folder / "real_a.mp4")
    face_video(folder / "fake_b.mp4", n_frames=12)
    return folder


@pytest.fixture(scope="module")
def mixed_videos(tmp_path_factory) -> Path:
    """Face videos plus every kind of bad input the stage must survive."""
    folder = tmp_path_factory.mktemp("mixed_videos")
    face_video(folder / "real_ok.mp4")
    face_video(folder / "fake_ok.mp4")
    face_video(folder / "real_noface.mp4", with_face=False)
    (folder / "fake_empty.mp4").write_bytes(b"")
    (folder / "real_text.mp4").write_text("this is a text file, not a video\n")
    cut = face_video(folder / "fake_cut.mp4")  # index (moov) at the end: cut, it cannot be opened
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    broken = face_video(folder / "real_broken.mp4", n_frames=30, faststart=True)  # index first: breaks mid-stream
    broken.write_bytes(broken.read_bytes()[: middle_of_packet(broken, 15)])
    return folder


@pytest.mark.parametrize("box", [
    np.array([100.3, 80.7, 180.2, 190.9], dtype=np.float32),
    np.array([-12.5, -8.25, 60.0, 75.5], dtype=np.float32),  # over the top-left corner
    np.array([250.0, 170.0, 330.4, 260.0], dtype=np.float64),  # over the bottom-right corner
])
def test_crop_face_matches_facenet_extract_face_pixel_for_pixel(box):
    frame = face_frame()
    ours = facedetect.crop_face(frame, box, crop_size=160, margin=50)
    theirs = extract_face(frame, box, image_size=160, margin=50).permute(1, 2, 0).numpy().astype(np.uint8)
    assert ours.dtype == np.uint8 and ours.shape == (160, 160, 3)
    assert np.array_equal(ours, theirs)


def test_detector_returns_full_resolution_boxes_from_a_downscaled_copy():
    frame = face_frame(width=640, height=480)
    small_copy = facedetect.FaceDetector(FacesConfig(detect_size=320))
    [(boxes, probs)] = small_copy.detect([frame])
    [(reference_boxes, _)] = facedetect.FaceDetector(FacesConfig(detect_size=640)).detect([frame])
    assert len(boxes) == 1 and probs[0] >= 0.9
    iou = tracking._relative_shift(boxes, reference_boxes)[0, 0]  # centre shift in face widths
    assert iou < 0.1
    assert boxes[0, 2] - boxes[0, 0] == pytest.approx(reference_boxes[0, 2] - reference_boxes[0, 0], rel=0.15)


def test_detector_accepts_frames_of_different_sizes_in_one_call(detector):
    frames = [face_frame(), face_frame(400, 300), face_frame(with_face=False), face_frame(shift=20)]
    found = detector.detect(frames)
    assert [len(boxes) for boxes, _ in found] == [1, 1, 0, 1]
    assert all(boxes.dtype == np.float32 and boxes.shape[1] == 4 for boxes, _ in found)


def test_landmarks_are_stored_in_crop_pixels_on_the_face(tmp_path, good_videos):
    cfg = make_cfg(tmp_path)
    faces.run_stage(cfg, video_table(good_videos))
    crops = faces.load_crops(cfg)
    points = crops[faces.LANDMARK_COLUMNS].to_numpy(dtype=float).reshape(-1, 5, 2)
    assert np.isfinite(points).all()
    # the margin (50 of 160 px) keeps every point well inside the crop, eyes above the mouth
    assert ((points > 25) & (points < 135)).all()
    assert (points[:, :2, 1].max(axis=1) < points[:, 3:, 1].min(axis=1)).all()
    assert (points[:, 0, 0] < points[:, 1, 0]).all()


def test_landmarks_in_crop_follow_the_crop_geometry():
    box = np.array([100.0, 50.0, 210.0, 160.0], dtype=np.float32)  # 110 px; margin 50 -> crop box 50 px wider
    points = np.array([[120.0, 80.0], [190.0, 80.0], [155.0, 110.0], [130.0, 140.0], [180.0, 140.0]])
    in_crop = facedetect.landmarks_in_crop(points, box, crop_size=160, margin=50, shape=(480, 640, 3))
    x1, y1, x2, y2 = facedetect._crop_box(box, 160, 50, (480, 640, 3))
    expected = (points - [x1, y1]) * [160 / (x2 - x1), 160 / (y2 - y1)]
    assert np.allclose(in_crop, expected, atol=1e-4)


def test_a_manifest_made_before_landmarks_loads_with_empty_landmark_columns(tmp_path, good_videos):
    cfg = make_cfg(tmp_path)
    faces.run_stage(cfg, video_table(good_videos))
    old = pd.read_csv(cfg.faces_csv).drop(columns=faces.LANDMARK_COLUMNS)
    old.to_csv(cfg.faces_csv, index=False)
    crops = faces.load_crops(cfg)
    assert len(crops) == 8 and crops[faces.LANDMARK_COLUMNS].isna().all().all()


def test_jpeg_roundtrip_equals_the_written_crop_read_back(tmp_path, good_videos, detector):
    cfg = make_cfg(tmp_path)
    faces.run_stage(cfg, video_table(good_videos))
    first = faces.load_crops(cfg).iloc[0]
    result = extract.extract_video(good_videos / first["video"], cfg.faces, detector)
    written = cv2.cvtColor(cv2.imread(str(cfg.work_dir / first["path"])), cv2.COLOR_BGR2RGB)
    assert np.array_equal(jpeg.jpeg_roundtrip(result.crops[0], cfg.faces.jpeg_quality), written)


def test_each_bad_video_gets_its_status_while_the_others_are_cropped(tmp_path, mixed_videos):
    cfg = make_cfg(tmp_path, workers=2)  # the default: a local process pool
    statuses = faces.run_stage(cfg, video_table(mixed_videos)).set_index("video")
    assert statuses.loc["real_ok.mp4", "status"] == "ok" and statuses.loc["real_ok.mp4", "n_faces"] == 4
    assert statuses.loc["fake_ok.mp4", "status"] == "ok"
    assert statuses.loc["real_noface.mp4", "status"] == "no_face"
    for name in ["fake_empty.mp4", "real_text.mp4", "fake_cut.mp4"]:
        assert statuses.loc[name, "status"].startswith("unreadable: "), name
    assert statuses.loc["real_broken.mp4", "status"].startswith("partial: ")
    assert 0 < statuses.loc["real_broken.mp4", "frames_read"] < 4
    crops = faces.load_crops(cfg)
    assert set(crops["video"]) == {"real_ok.mp4", "fake_ok.mp4", "real_broken.mp4"}
    assert all((cfg.work_dir / path).is_file() for path in crops["path"])
    assert faces.load_status(cfg)["video"].tolist() == video_table(mixed_videos)["video"].tolist()


def test_the_video_folder_is_byte_for_byte_unchanged(tmp_path, mixed_videos):
    before = folder_digest(mixed_videos)
    faces.run_stage(make_cfg(tmp_path), video_table(mixed_videos))
    assert folder_digest(mixed_videos) == before


class InterruptAfter(concurrent.futures.Executor):
    """Runs `n_tasks` tasks in this process, then raises KeyboardInterrupt as Ctrl-C would."""

    def __init__(self, n_tasks: int):
        self.n_left = n_tasks

    def submit(self, fn, /, *args, **kwargs):
        if self.n_left == 0:
            raise KeyboardInterrupt
        self.n_left -= 1
        future = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_a_killed_run_resumed_gives_the_manifest_of_an_uninterrupted_run(tmp_path, mixed_videos):
    videos = video_table(mixed_videos)
    uninterrupted = make_cfg(tmp_path / "a")
    faces.run_stage(uninterrupted, videos)
    interrupted = make_cfg(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        faces.run_stage(interrupted, videos, executor=InterruptAfter(3))
    half_written = interrupted.faces_dir / ".real_ok.partial-dead"  # a worker killed while writing
    half_written.mkdir()
    (half_written / "00000_0.jpg").write_bytes(b"\xff\xd8 half a jpeg")
    assert not interrupted.faces_csv.exists()
    faces.run_stage(interrupted, videos)
    expected = pd.read_csv(uninterrupted.faces_csv).drop(columns="seconds")
    assert pd.read_csv(interrupted.faces_csv).drop(columns="seconds").equals(expected)
    assert not half_written.exists()


def test_a_second_run_skips_committed_videos(tmp_path, good_videos):
    cfg = make_cfg(tmp_path)
    faces.run_stage(cfg, video_table(good_videos))
    crop_times = {p: p.stat().st_mtime_ns for p in cfg.faces_dir.rglob("*.jpg")}
    statuses = faces.run_stage(cfg, video_table(good_videos))
    assert (statuses["status"] == "ok").all()
    assert {p: p.stat().st_mtime_ns for p in cfg.faces_dir.rglob("*.jpg")} == crop_times


def test_changing_an_output_setting_on_a_used_run_folder_raises(tmp_path, good_videos):
    faces.run_stage(make_cfg(tmp_path), video_table(good_videos))
    with pytest.raises(ConfigError, match="margin"):
        faces.run_stage(make_cfg(tmp_path, margin=20), video_table(good_videos))


def test_a_run_folder_made_before_redetect_misses_existed_resumes_only_without_it(tmp_path, good_videos):
    cfg = make_cfg(tmp_path, redetect_misses=False)
    faces.run_stage(cfg, video_table(good_videos))
    settings_path = cfg.faces_dir / faces.SETTINGS_FILE
    settings = json.loads(settings_path.read_text())
    del settings["redetect_misses"]  # as a crop_settings.json written before the key existed
    settings_path.write_text(json.dumps(settings))
    faces.run_stage(cfg, video_table(good_videos))  # those crops were made without re-detection
    with pytest.raises(ConfigError, match="redetect_misses: False -> True"):
        faces.run_stage(make_cfg(tmp_path, redetect_misses=True), video_table(good_videos))


def test_a_face_too_small_for_the_detection_copy_is_found_by_detecting_the_miss_again():
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    portrait = cv2.resize(grace_hopper(), None, fx=0.12, fy=0.12, interpolation=cv2.INTER_AREA)  # face ~25 px wide
    frame[500:500 + portrait.shape[0], 900:900 + portrait.shape[1]] = portrait
    found = {redetect: facedetect.FaceDetector(FacesConfig(redetect_misses=redetect)).detect([frame])[0]
             for redetect in (False, True)}
    assert len(found[False][0]) == 0  # 1/3 of 25 px: below MTCNN's 20 px on the 640 px copy
    [box] = found[True][0]
    assert 900 <= box[0] < box[2] <= 900 + portrait.shape[1] and 500 <= box[1] < box[3] <= 500 + portrait.shape[0]


def test_a_faceless_batch_pays_for_one_full_resolution_detection_not_one_per_frame():
    frames = [np.full((1080, 1920, 3), 60 + 10 * i, np.uint8) for i in range(6)]
    detector = facedetect.FaceDetector(FacesConfig(redetect_misses=True, batch_size=6))
    sizes = []
    run = detector._run_mtcnn
    detector._run_mtcnn = lambda images: sizes.append(images.shape[1:3]) or run(images)
    assert all(len(boxes) == 0 for boxes, _ in detector.detect(frames))
    assert sizes == [(360, 640), (1080, 1920)]  # the batch on the copy, then one frame at full size


def test_the_crop_reader_names_the_notebook_to_run_when_its_manifest_is_missing(tmp_path):
    cfg = make_cfg(tmp_path)
    with pytest.raises(StageOutputMissing, match="02_face_crop"):
        faces.load_crops(cfg)


def test_a_dask_scheduler_address_runs_the_stage_on_the_cluster(tmp_path, good_videos):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        cfg = make_cfg(tmp_path, scheduler=cluster.scheduler_address)
        statuses = faces.run_stage(cfg, video_table(good_videos))
    assert (statuses["status"] == "ok").all()
    assert len(faces.load_crops(cfg)) == 8
