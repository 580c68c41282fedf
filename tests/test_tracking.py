"""Following faces between key frames (dfhelpers.tracking) with the real MTCNN."""

import json

import numpy as np
import pytest

from dfhelpers import facedetect, faces, tracking
from dfhelpers.config import FacesConfig
from dfhelpers.errors import ConfigError
from videos import face_frame, face_video, make_cfg, video_table

CFG = FacesConfig(workers=1)


class CountingDetector:
    """The real detector; counts the frames it detects in full."""

    def __init__(self, detector: facedetect.FaceDetector):
        self.detector, self.in_full = detector, 0

    def detect_with_landmarks(self, frames):
        self.in_full += len(frames)
        return self.detector.detect_with_landmarks(frames)

    def __getattr__(self, name):
        return getattr(self.detector, name)


@pytest.fixture(scope="module")
def detector() -> facedetect.FaceDetector:
    return facedetect.FaceDetector(CFG)


def iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    return overlap / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap)


def test_following_finds_the_faces_of_full_detection_and_detects_only_key_frames_in_full(detector):
    frames = [face_frame(shift=6 * i) for i in range(12)]
    counting = CountingDetector(detector)
    followed = tracking.FaceTracker(counting, detect_every=4).detect(frames)
    in_full = detector.detect_with_landmarks(frames)
    assert counting.in_full == 3  # frames 0, 4 and 8
    assert len(followed) == len(in_full) == len(frames)
    for (boxes, probs, points), (full_boxes, _, full_points) in zip(followed, in_full):
        assert len(boxes) == len(full_boxes) == 1 and probs[0] >= CFG.min_face_prob
        assert iou(boxes[0], full_boxes[0]) > 0.85
        eye_distance = np.linalg.norm(full_points[0, 0] - full_points[0, 1])
        assert np.abs(points[0] - full_points[0]).max() < 0.25 * eye_distance


def test_a_frame_where_a_followed_face_is_lost_is_detected_in_full(detector):
    frames = [face_frame(), face_frame(with_face=False), face_frame(shift=4)]
    counting = CountingDetector(detector)
    found = tracking.FaceTracker(counting, detect_every=4).detect(frames)
    assert [len(boxes) for boxes, _, _ in found] == [1, 0, 1]
    assert counting.in_full == 2  # the key frame, and the frame whose window came up empty


def test_after_a_key_frame_without_faces_every_frame_is_detected_in_full(detector):
    frames = [face_frame(with_face=False), face_frame(), face_frame(shift=4)]
    counting = CountingDetector(detector)
    found = tracking.FaceTracker(counting, detect_every=4).detect(frames)
    assert [len(boxes) for boxes, _, _ in found] == [0, 1, 1]
    assert counting.in_full == 3


def test_the_faces_found_do_not_depend_on_how_the_frames_are_batched(detector):
    frames = [face_frame(shift=5 * i) for i in range(10)]
    whole = tracking.FaceTracker(detector, detect_every=4).detect(frames)
    tracker = tracking.FaceTracker(detector, detect_every=4)
    in_threes = [found for start in range(0, 10, 3) for found in tracker.detect(frames[start:start + 3])]
    assert_same_faces(in_threes, whole, len(frames))


def test_detect_every_1_detects_every_frame_in_full(detector):
    frames = [face_frame(shift=5 * i) for i in range(5)]
    followed = tracking.FaceTracker(detector, detect_every=1).detect(frames)
    in_full = detector.detect_with_landmarks(frames)
    assert_same_faces(followed, in_full, len(frames))


def assert_same_faces(ours: list, theirs: list, n_frames: int) -> None:
    """Both found one face in each of n_frames frames, with equal boxes, probs and points."""
    assert len(ours) == len(theirs) == n_frames
    assert all(len(boxes) == 1 for boxes, _, _ in theirs)  # a face in every frame: nothing compared is empty
    for found, expected in zip(ours, theirs):
        assert len(found) == len(expected) == 3  # boxes, probs, points
        for a, b in zip(found, expected):
            assert np.array_equal(a, b)


def test_a_window_past_the_frame_edge_reads_black_and_still_finds_the_face(detector):
    [(boxes, _, _)] = detector.detect_with_landmarks([face_frame()])
    frame = np.ascontiguousarray(face_frame()[:, int(boxes[0, 0]) - 8:])  # the face 8 px from the left edge
    [(full_boxes, _, _)] = detector.detect_with_landmarks([frame])
    [window] = tracking.face_windows(full_boxes)
    assert window[0] < 0
    [(boxes, _, _)] = detector.detect_in_windows([frame], [(0, window)])
    assert len(boxes) == 1 and iou(boxes[0], full_boxes[0]) > 0.85


def test_both_mtcnn_runtimes_find_the_same_faces_in_windows():
    frame = face_frame()
    runtimes = {runtime: facedetect.FaceDetector(FacesConfig(mtcnn_runtime=runtime, workers=1))
                for runtime in ("onnxruntime", "torch")}
    [(full_boxes, _, _)] = runtimes["onnxruntime"].detect_with_landmarks([frame])
    windows = [(0, window) for window in tracking.face_windows(full_boxes)]
    [(ort_boxes, ort_probs, ort_points)] = runtimes["onnxruntime"].detect_in_windows([frame], windows)
    [(torch_boxes, torch_probs, torch_points)] = runtimes["torch"].detect_in_windows([frame], windows)
    assert len(ort_boxes) == len(torch_boxes) == 1
    np.testing.assert_allclose(ort_boxes, torch_boxes, atol=0.05)
    np.testing.assert_allclose(ort_probs, torch_probs, atol=1e-4)
    np.testing.assert_allclose(ort_points, torch_points, atol=0.05)
    assert runtimes["torch"]._mtcnn.min_face_size == 20  # windows never change the frames' detector


def test_windows_are_whole_pixel_squares_twice_the_face_centred_on_it():
    boxes = np.array([[100.4, 50.2, 160.4, 130.2], [10.0, 10.0, 12.0, 11.0]], dtype=np.float32)
    big, tiny = tracking.face_windows(boxes)
    assert big.tolist() == [50.0, 10.0, 210.0, 170.0]  # 2 x 80 px, centred on (130.4, 90.2)
    assert np.array_equal(tiny, np.round(tiny)) and tiny[2] - tiny[0] == tiny[3] - tiny[1] >= 2


def test_merging_windows_keeps_the_likelier_of_two_overlapping_faces_largest_first():
    def found(box, prob):
        return np.array([box], np.float32), np.array([prob], np.float32), np.full((1, 5, 2), prob, np.float32)

    boxes, probs, points = tracking.merge_detections(
        [found([0, 0, 50, 50], 0.9), found([2, 2, 52, 52], 0.99), found([200, 0, 300, 100], 0.8)], max_faces=None)
    assert boxes.tolist() == [[200, 0, 300, 100], [2, 2, 52, 52]]
    assert probs.tolist() == pytest.approx([0.8, 0.99]) and points[1, 0, 0] == pytest.approx(0.99)
    one, _, _ = tracking.merge_detections([found([0, 0, 50, 50], 0.9), found([200, 0, 300, 100], 0.8)], max_faces=1)
    assert one.tolist() == [[200, 0, 300, 100]]


def test_tracks_follow_a_moving_face_and_keep_two_people_apart():
    frame_indices = np.array([0, 0, 10, 10, 20, 30])
    boxes = np.array([[100, 100, 200, 200], [600, 100, 700, 200],   # two people
                      [640, 110, 740, 210], [150, 100, 250, 200],   # both moved, listed in the other order
                      [210, 100, 310, 200],                          # the first person again
                      [1500, 800, 1540, 840]], dtype=np.float32)     # someone new, far away
    tracks = tracking.assign_tracks(frame_indices, boxes, max_shift=1.0)
    assert tracks.tolist() == [0, 1, 1, 0, 0, 2]


def test_detect_every_below_1_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match="faces.detect_every is 0"):
        FacesConfig(detect_every=0)


def test_a_run_folder_made_before_detect_every_existed_resumes_only_detecting_every_frame(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    face_video(folder / "real_a.mp4")
    cfg = make_cfg(tmp_path, detect_every=1)
    faces.run_stage(cfg, video_table(folder))
    settings_path = cfg.faces_dir / faces.SETTINGS_FILE
    settings = json.loads(settings_path.read_text())
    del settings["detect_every"]  # as a crop_settings.json written before the key existed
    settings_path.write_text(json.dumps(settings))
    faces.run_stage(cfg, video_table(folder))
    with pytest.raises(ConfigError, match="detect_every: 1 -> 4"):
        faces.run_stage(make_cfg(tmp_path, detect_every=4), video_table(folder))
