"""One video's faces in memory, nothing written: frames decoded ahead of detection, detected, tracked, cropped."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Generator, Iterator, Optional

import numpy as np
import pandas as pd

from dfhelpers import facedetect, imagesets, selfblend, tracking, video
from dfhelpers.config import FacesConfig
from dfhelpers.errors import VideoReadError


@dataclasses.dataclass(frozen=True)
class VideoFaces:
    """The faces found in one video, in memory; k faces, ordered by frame then face index."""

    video: str  # file name
    frame_indices: np.ndarray  # (k,) int: the frame each face comes from
    face_indices: np.ndarray  # (k,) int: index within its frame, 0 = largest box
    boxes: np.ndarray  # (k, 4) float32: x1, y1, x2, y2 in full-resolution pixels
    landmarks: np.ndarray  # (k, 5, 2) float32: MTCNN's five points x, y in crop pixels (see selfblend.LANDMARK_NAMES)
    probs: np.ndarray  # (k,) float32: MTCNN face probability
    tracks: np.ndarray  # (k,) int: per-video track id, the same person across frames
    crops: np.ndarray  # (k, crop_size, crop_size, 3) uint8 RGB, before JPEG compression
    frames_read: int
    status: str  # "ok", "no_face", "partial: <reason>" (broke mid-stream), "unreadable: <reason>"
    seconds: float

    @property
    def n_faces(self) -> int:
        return len(self.frame_indices)

    def table(self) -> pd.DataFrame:
        """One row per face: video, frame, face, track, x1, y1, x2, y2, prob, landmark columns (no paths)."""
        x1, y1, x2, y2 = (self.boxes.reshape(-1, 4)[:, i] for i in range(4))
        points = pd.DataFrame(self.landmarks.reshape(-1, 10), columns=selfblend.LANDMARK_COLUMNS)
        boxes = pd.DataFrame({"video": self.video, "frame": self.frame_indices, "face": self.face_indices,
                              "track": self.tracks, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "prob": self.probs})
        return pd.concat([boxes, points.round(2)], axis=1)


def extract_video(path: str | Path, faces_cfg: FacesConfig, detector: facedetect.FaceDetector,
                  decode_threads: int = 1) -> VideoFaces:
    """Detect, track and crop the faces of one video in memory; writes nothing.

    A video that cannot be read gets status "unreadable: <reason>"; one that breaks mid-stream
    keeps the faces of the frames decoded before the break, with status "partial: <reason>".
    A background thread decodes the next batch of frames while this one detects (PyAV's
    decoder and torch release the GIL, so the two overlap on two cores); about two batches
    are in memory at once (the one detected, the next one decoded), however long the video.

    Args:
        decode_threads: FFmpeg threads of that decoder (video.read_frames): 1 in a worker of
            the stage's pool, where every core already runs a worker; 2 in a process that
            handles one video at a time.
    """
    started = time.perf_counter()
    path = Path(path)
    found: list[tuple] = []  # frame, face, box, prob, crop, landmarks in crop pixels
    frames_read, problems = 0, []
    try:
        n_frames, read = _frame_source(path, decode_threads)
        indices = video.sample_indices(n_frames, faces_cfg)
    except VideoReadError as err:
        indices, problems, read = [], [err], None
    batches = _frame_batches(read, indices, faces_cfg.batch_size, problems)
    tracker = tracking.FaceTracker(detector, faces_cfg.detect_every)
    with _decoded_ahead(batches) as decoded:
        for batch in decoded:
            frames_read += len(batch)
            detections = tracker.detect([frame for _, frame in batch])
            for (frame_index, frame), (boxes, probs, points) in zip(batch, detections):
                for face_index, (box, prob, face_points) in enumerate(zip(boxes, probs, points)):
                    crop = facedetect.crop_face(frame, box, faces_cfg.crop_size, faces_cfg.margin)
                    in_crop = facedetect.landmarks_in_crop(face_points, box, faces_cfg.crop_size, faces_cfg.margin,
                                                           frame.shape)
                    found.append((frame_index, face_index, box, float(prob), crop, in_crop))
    status = _status(frames_read, len(found), problems)
    return _video_faces(path.name, found, faces_cfg, frames_read, status, time.perf_counter() - started)


# --- private helpers -------------------------------------------------------------------


def _frame_source(path: Path, decode_threads: int) -> tuple[int, Callable[[list[int]], Iterator]]:
    """An item's frame count and its frame reader: a video's, or a face-image item's (one image, or a
    sequence folder's images) — the one place the two kinds of item differ.

    Raises:
        VideoReadError: the item cannot be opened.
    """
    if imagesets.is_image_item(path):
        return imagesets.n_frames(path), functools.partial(imagesets.read_frames, path)
    return video.probe(path).n_frames, functools.partial(video.read_frames, path, decode_threads=decode_threads)


def _frame_batches(read: Optional[Callable[[list[int]], Iterator]], indices: list[int], batch_size: int,
                   problems: list[VideoReadError]) -> Generator[list[tuple[int, np.ndarray]], None, None]:
    """Batches of (index, frame); a read error ends the batches (after the partial one) and is appended to problems."""
    batch: list[tuple[int, np.ndarray]] = []
    try:
        for item in read(indices) if indices and read is not None else ():
            batch.append(item)
            if len(batch) == max(1, batch_size):
                yield batch
                batch = []
    except VideoReadError as err:
        problems.append(err)
    if batch:
        yield batch


@contextlib.contextmanager
def _decoded_ahead(batches: Generator[list, None, None], depth: int = 1) -> Iterator[Iterator[list]]:
    """`batches`, produced by a background thread at most `depth` items ahead of the consumer.

    The producer starts on the next item only when the consumer has taken one, so at most
    depth + 1 items exist at once (the one being consumed included). An exception the
    producer raises is raised to the consumer in its place. Leaving the block, at the end or
    early (an error while detecting), stops the producer and joins it: no thread and no open
    video outlive the block.
    """
    handoff: queue.Queue = queue.Queue()  # holds at most `depth` items: each needs a unit of room
    room = threading.Semaphore(max(1, depth))
    is_stopping = threading.Event()
    producer = threading.Thread(target=_produce, args=(batches, handoff, room, is_stopping),
                                name="dfhelpers-decode", daemon=True)  # daemon: never holds up an exit
    producer.start()
    try:
        yield _consume(handoff, room)
    finally:
        is_stopping.set()
        room.release()  # a producer waiting for room wakes up and sees the stop
        producer.join()


@dataclasses.dataclass(frozen=True)
class _ProducerFailed:
    error: BaseException


_END_OF_BATCHES = object()


def _produce(batches: Generator[list, None, None], handoff: queue.Queue, room: threading.Semaphore,
             is_stopping: threading.Event) -> None:
    """Runs in the decode thread: wait for room, make the next item, hand it over; then the end marker."""
    try:
        while True:
            room.acquire()
            if is_stopping.is_set():
                return
            item = next(batches, _END_OF_BATCHES)
            handoff.put(item)
            if item is _END_OF_BATCHES:
                return
    except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
        handoff.put(_ProducerFailed(err))
    finally:
        batches.close()  # in this thread: the generator's open video is closed where it was used


def _consume(handoff: queue.Queue, room: threading.Semaphore) -> Iterator[list]:
    while True:
        item = handoff.get()
        room.release()  # the producer makes the next item while this one is used
        if item is _END_OF_BATCHES:
            return
        if isinstance(item, _ProducerFailed):
            raise item.error
        yield item


def _status(frames_read: int, n_faces: int, problems: list[VideoReadError]) -> str:
    if problems:
        reason = getattr(problems[0], "reason", str(problems[0]))
        return f"{'partial' if frames_read else 'unreadable'}: {reason}"
    return "ok" if n_faces else "no_face"


def _video_faces(name: str, found: list, faces_cfg: FacesConfig, frames_read: int, status: str,
                 seconds: float) -> VideoFaces:
    size = faces_cfg.crop_size
    frame_indices = np.array([f[0] for f in found], dtype=int)
    boxes = np.array([f[2] for f in found], dtype=np.float32).reshape(-1, 4)
    return VideoFaces(
        video=name, frame_indices=frame_indices, face_indices=np.array([f[1] for f in found], dtype=int),
        boxes=boxes, probs=np.array([f[3] for f in found], dtype=np.float32),
        landmarks=np.array([f[5] for f in found], dtype=np.float32).reshape(-1, 5, 2),
        tracks=tracking.assign_tracks(frame_indices, boxes, faces_cfg.track_max_shift),
        crops=np.array([f[4] for f in found], dtype=np.uint8).reshape(-1, size, size, 3),
        frames_read=frames_read, status=status, seconds=seconds)
