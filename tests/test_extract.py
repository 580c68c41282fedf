"""One video's faces in memory (dfhelpers.extract), and the thread that decodes ahead of detection."""

import threading

import numpy as np
import pytest

from dfhelpers import extract, facedetect, selfblend, tracking, video
from dfhelpers.config import FacesConfig
from videos import SMALL, face_video, folder_digest, middle_of_packet


@pytest.fixture(scope="module")
def detector() -> facedetect.FaceDetector:
    return facedetect.FaceDetector(SMALL)


def test_extract_video_returns_crops_in_memory_and_writes_nothing(tmp_path, detector):
    path = face_video(tmp_path / "fake_b.mp4", n_frames=12)
    before = folder_digest(tmp_path)
    result = extract.extract_video(path, SMALL, detector)
    assert result.status == "ok" and result.frames_read == 4
    assert result.frame_indices.tolist() == [0, 4, 7, 11]
    assert result.crops.shape == (4, 160, 160, 3) and result.crops.dtype == np.uint8
    assert set(result.tracks.tolist()) == {0}
    assert list(result.table().columns) == ["video", "frame", "face", "track", "x1", "y1", "x2", "y2", "prob",
                                            *selfblend.LANDMARK_COLUMNS]
    assert folder_digest(tmp_path) == before


# --- decoding ahead of detection ---


def decode_threads_alive() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name == "dfhelpers-decode"]


def test_decoding_ahead_finds_the_faces_of_detecting_each_decoded_frame(tmp_path, detector):
    path = face_video(tmp_path / "moving.mp4", n_frames=20)
    cfg = FacesConfig(frames_per_video=9, batch_size=2, workers=1)
    result = extract.extract_video(path, cfg, detector, decode_threads=2)
    frames = dict(video.read_frames(path, video.sample_indices(20, cfg)))
    # all frames in one call: which frames are key frames does not depend on the batches either
    found = tracking.FaceTracker(detector, cfg.detect_every).detect(list(frames.values()))
    expected = [(index, box) for index, (boxes, _, _) in zip(frames, found) for box in boxes]
    assert (result.status, result.frames_read) == ("ok", 9)
    assert result.frame_indices.tolist() == [index for index, _ in expected]
    assert np.allclose(result.boxes, np.array([box for _, box in expected]))


def test_a_video_breaking_mid_stream_is_partial_with_the_frames_before_the_break(tmp_path, detector):
    path = face_video(tmp_path / "broken.mp4", n_frames=30, faststart=True)
    path.write_bytes(path.read_bytes()[: middle_of_packet(path, 15)])
    result = extract.extract_video(path, FacesConfig(frames_per_video=30, batch_size=4, workers=1), detector)
    assert result.status.startswith("partial: ") and 0 < result.frames_read < 30
    assert result.n_faces > 0 and set(result.frame_indices) <= set(range(result.frames_read))
    assert not decode_threads_alive()


class FailingDetector:
    """Detects with MTCNN, then fails on the second batch, as a detector bug would."""

    def __init__(self, detector: facedetect.FaceDetector):
        self.detector, self.n_calls = detector, 0

    def detect_with_landmarks(self, frames):
        self.n_calls += 1
        if self.n_calls == 2:
            raise RuntimeError("detector failed on batch 2")
        return self.detector.detect_with_landmarks(frames)

    def __getattr__(self, name):  # the rest (detect_in_windows, faces_cfg) as the detector has it
        return getattr(self.detector, name)


def test_an_error_while_detecting_stops_the_decode_thread_and_reaches_the_caller(tmp_path, detector):
    path = face_video(tmp_path / "long.mp4", n_frames=40)
    cfg = FacesConfig(frames_per_video=40, batch_size=2, workers=1)  # 20 batches: the decoder is far from done
    with pytest.raises(RuntimeError, match="batch 2"):
        extract.extract_video(path, cfg, FailingDetector(detector))
    assert not decode_threads_alive()


def test_decoding_ahead_stays_one_batch_ahead_and_closes_the_source_when_left_early():
    produced, closed_in = [], []

    def endless_batches():
        try:
            while True:
                produced.append(len(produced))
                yield [produced[-1]]
        finally:
            closed_in.append(threading.current_thread().name)

    with extract._decoded_ahead(endless_batches(), depth=1) as decoded:
        taken = [next(decoded) for _ in range(3)]
    assert taken == [[0], [1], [2]]
    assert len(produced) <= 3 + 1  # the three taken and at most one made ahead
    assert closed_in == ["dfhelpers-decode"] and not decode_threads_alive()


def test_an_error_while_decoding_ahead_reaches_the_consumer_after_the_batches_before_it():
    def failing_batches():
        yield ["first"]
        raise MemoryError("no room for the next batch")

    received = []
    with pytest.raises(MemoryError, match="no room"):
        with extract._decoded_ahead(failing_batches()) as decoded:
            received.extend(decoded)
    assert received == [["first"]] and not decode_threads_alive()
