"""MTCNN face detection and cropping (batched), the crop manifest, resumable, local or distributed."""

from __future__ import annotations

import collections
import concurrent.futures
import concurrent.futures.process
import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import queue
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, Optional

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dfhelpers import compat, files, selfblend, tracking, video, workers
from dfhelpers.jpeg import encode_jpeg, jpeg_roundtrip  # noqa: F401 - faces.jpeg_roundtrip for scoring
from dfhelpers.config import Config, FacesConfig
from dfhelpers.errors import ConfigError, MetadataError, StageOutputMissing, VideoReadError

ROWS_FILE = "rows.csv"  # inside faces/<video stem>/: that video's manifest rows, committed with its crops
SETTINGS_FILE = "crop_settings.json"  # inside faces/: the settings the crops were made with
# MTCNN's five points per crop in crop pixels (0..crop_size, after the margin and the resize):
# eyes (left, right as seen in the image), nose tip, mouth corners (left, right)
LANDMARK_NAMES, LANDMARK_COLUMNS = selfblend.LANDMARK_NAMES, selfblend.LANDMARK_COLUMNS
CROP_COLUMNS = ["video", "frame", "face", "track", "x1", "y1", "x2", "y2", "prob", "path", *LANDMARK_COLUMNS]
STATUS_COLUMNS = ["video", "status", "frames_read", "n_faces", "seconds"]
# faces.csv holds both kinds of row: kind "crop" (one per face crop) and kind "video" (one per video)
MANIFEST_COLUMNS = ["kind", *CROP_COLUMNS, "status", "frames_read", "n_faces", "seconds"]
INT_COLUMNS = ["frame", "face", "track", "frames_read", "n_faces"]
# settings that change which crops are written; the others (workers, threads, batch size,
# scheduler, mtcnn_runtime: both runtimes find the same boxes to 1e-3 px) only change the speed,
# so a resumed run may change them freely
OUTPUT_SETTINGS = ("sampling", "frames_per_video", "every_k", "detect_size", "thresholds", "min_face_size",
                   "min_face_prob", "margin", "crop_size", "max_faces_per_frame", "track_max_shift", "jpeg_quality",
                   "redetect_misses", "detect_every")
# what a run folder made before a setting existed was made with (its crop_settings.json lacks the key)
SETTINGS_BEFORE_THEY_EXISTED = {"redetect_misses": False, "detect_every": 1}


@dataclasses.dataclass(frozen=True)
class VideoFaces:
    """The faces found in one video, in memory; k faces, ordered by frame then face index."""

    video: str  # file name
    frame_indices: np.ndarray  # (k,) int: the frame each face comes from
    face_indices: np.ndarray  # (k,) int: index within its frame, 0 = largest box
    boxes: np.ndarray  # (k, 4) float32: x1, y1, x2, y2 in full-resolution pixels
    landmarks: np.ndarray  # (k, 5, 2) float32: MTCNN's five points x, y in crop pixels (see LANDMARK_NAMES)
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
        points = pd.DataFrame(self.landmarks.reshape(-1, 10), columns=LANDMARK_COLUMNS)
        boxes = pd.DataFrame({"video": self.video, "frame": self.frame_indices, "face": self.face_indices,
                              "track": self.tracks, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "prob": self.probs})
        return pd.concat([boxes, points.round(2)], axis=1)


class FaceDetector:
    """MTCNN, loaded once, run on downscaled copies of frames in batches.

    Boxes come back in full-resolution pixels. Detecting on a copy whose longest side is
    `detect_size` (640 px for 1080p: 1/9 of the pixels) is what makes the stage cheap; faces
    smaller than `min_face_size` x (full size / detect_size) are not found there, so with
    `redetect_misses` a frame without a face is detected again at full resolution (only misses
    pay for it, and of a batch's misses only the first when full resolution finds nothing there).
    The nets run on onnxruntime (dfhelpers.mtcnn, no torch in the process) or, with
    `mtcnn_runtime: torch`, in facenet-pytorch itself; both give the same faces.
    """

    def __init__(self, faces_cfg: FacesConfig):
        self.faces_cfg = faces_cfg
        if faces_cfg.mtcnn_runtime == "torch":
            compat.avoid_triton_after_tensorflow()  # a notebook may have loaded TensorFlow first
            import torch
            from facenet_pytorch import MTCNN  # imported here: torch is heavy and only this runtime needs it

            # MTCNN's R/O-net stages are thousands of tiny ops: more threads than free cores made
            # detection 5x slower on a busy 2-core machine (OpenMP spin-waiting)
            torch.set_num_threads(max(1, faces_cfg.torch_threads))
            # select_largest: faces come back largest first, as in the original keep_all workflow
            self._mtcnn = MTCNN(keep_all=True, thresholds=list(faces_cfg.thresholds),
                                min_face_size=faces_cfg.min_face_size, select_largest=True, device="cpu")
            # the windows' pyramid (detect_in_windows) in a second instance: threads share a detector
            # (dfdetect scores two videos at once), so the first one's settings never change
            self._window_mtcnn = MTCNN(keep_all=True, thresholds=list(faces_cfg.thresholds),
                                       min_face_size=WINDOW_MIN_FACE, select_largest=True, device="cpu")
        else:
            from dfhelpers import mtcnn

            self._mtcnn = mtcnn.Mtcnn(faces_cfg.thresholds, faces_cfg.min_face_size, threads=faces_cfg.torch_threads)

    def detect(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per frame: boxes (k, 4) float32 full-resolution x1, y1, x2, y2 and probs (k,) float32.

        Frames may differ in size: MTCNN batches only equal-size images, so frames are grouped.
        Only faces with prob >= min_face_prob whose crop is not empty are kept, largest first,
        at most max_faces_per_frame.
        """
        return [(boxes, probs) for boxes, probs, _ in self.detect_with_landmarks(frames)]

    def detect_with_landmarks(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """As `detect`, plus MTCNN's five landmarks per face: (k, 5, 2) float32 full-resolution x, y.

        The points are the eyes (left, right as seen in the image), the nose tip and the mouth
        corners (left, right), in that order.
        """
        results: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = [_no_faces()] * len(frames)
        positions_by_shape: dict[tuple[int, ...], list[int]] = {}
        for position, frame in enumerate(frames):
            positions_by_shape.setdefault(frame.shape, []).append(position)
        batch_size = max(1, self.faces_cfg.batch_size)
        for shape, positions in positions_by_shape.items():
            for start in range(0, len(positions), batch_size):
                chunk = positions[start:start + batch_size]
                for position, found in zip(chunk, self._detect_same_size([frames[p] for p in chunk])):
                    results[position] = found
        return results

    def _detect_same_size(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        height, width = frames[0].shape[:2]
        scale = min(1.0, self.faces_cfg.detect_size / max(height, width))  # never upscale
        small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if small_size == (width, height):
            small = np.stack(frames)
        else:  # INTER_AREA: the anti-aliased downscale that keeps small faces detectable
            small = np.stack([cv2.resize(f, small_size, interpolation=cv2.INTER_AREA) for f in frames])
        to_full = np.array([width / small_size[0], height / small_size[1]] * 2, dtype=np.float32)
        found = [self._keep(*detection, to_full, frames[0].shape) for detection in self._run_mtcnn(small)]
        misses = [i for i, (boxes, _, _) in enumerate(found) if not len(boxes)]
        if misses and self.faces_cfg.redetect_misses and small_size != (width, height):
            same = np.ones(4, dtype=np.float32)
            for i in misses:  # one at a time: a batch of full-resolution pyramids would cost GBs
                [detection] = self._run_mtcnn(frames[i][None])
                found[i] = self._keep(*detection, same, frames[0].shape)
                if not len(found[i][0]):
                    # nothing at full size either: the other misses of this batch are most likely
                    # faceless too (a scene without people), so a faceless video pays for one
                    # full-size frame per batch, not for all 32
                    break
        return found

    def detect_in_windows(self, frames: list[np.ndarray],
                          windows: list[tuple[int, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per window (position in frames, square x1, y1, x2, y2 in full-resolution pixels): the faces
        MTCNN finds inside it, in full-resolution pixels, kept as `detect` keeps them.

        Each window is cut from its full-resolution frame (black beyond the frame's edges) and
        scaled to WINDOW_SIZE px; the pyramid starts at WINDOW_MIN_FACE px there. A window twice
        a face's size (dfhelpers.tracking) finds that face from ~0.4x to 1.6x its size.
        """
        if not windows:
            return []
        images = np.stack([_window_image(frames[position], window, WINDOW_SIZE) for position, window in windows])
        # window pixels -> frame pixels: scaled by the window's side, moved by its corner
        return [self._keep(*detection, np.full(4, (window[2] - window[0]) / WINDOW_SIZE, dtype=np.float32),
                           frames[position].shape, corner=window[:2])
                for (position, window), detection in zip(windows, self._run_mtcnn(images, windows=True))]

    def _run_mtcnn(self, images: np.ndarray, windows: bool = False) -> list[tuple[Any, Any, Any]]:
        """(boxes, probs, points) per image as facenet's MTCNN.detect returns them (None: no face).

        windows: the images are detect_in_windows' windows (the pyramid starts at WINDOW_MIN_FACE px).
        """
        if self.faces_cfg.mtcnn_runtime == "torch":
            mtcnn = self._window_mtcnn if windows else self._mtcnn
            return list(zip(*mtcnn.detect(images, landmarks=True)))
        return self._mtcnn.detect(images, min_face_size=WINDOW_MIN_FACE if windows else None)

    def _keep(self, boxes: Any, probs: Any, points: Any, to_full: np.ndarray, shape: tuple[int, ...],
              corner: Any = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MTCNN's faces in frame pixels (x to_full, + corner), filtered: see `detect`."""
        if boxes is None:
            return _no_faces()
        corner = np.asarray(corner, dtype=np.float32)
        # tolist(): facenet-pytorch returns object arrays with numpy 2
        boxes = np.asarray(np.asarray(boxes).tolist(), dtype=np.float32).reshape(-1, 4) * to_full + np.tile(corner, 2)
        probs = np.asarray(np.asarray(probs).tolist(), dtype=np.float32).reshape(-1)
        points = np.asarray(np.asarray(points).tolist(), dtype=np.float32).reshape(-1, 5, 2) * to_full[:2] + corner
        cfg = self.faces_cfg
        is_kept = [p >= cfg.min_face_prob and _has_area(_crop_box(b, cfg.crop_size, cfg.margin, shape))
                   for b, p in zip(boxes, probs)]
        kept = np.flatnonzero(is_kept)[: cfg.max_faces_per_frame]  # None keeps all
        return boxes[kept], probs[kept], points[kept]


def crop_face(frame: np.ndarray, box: np.ndarray, crop_size: int, margin: int) -> np.ndarray:
    """Square uint8 crop of a face, the same pixels as facenet-pytorch's `extract_face`.

    `margin` is in output pixels (as extract_face): the box grows by
    margin x box size / (crop_size - margin), is clipped to the frame, then resized with
    cv2.INTER_AREA (extract_face's resize for numpy frames).
    """
    x1, y1, x2, y2 = _crop_box(np.asarray(box), crop_size, margin, frame.shape)
    if not _has_area((x1, y1, x2, y2)):
        raise ValueError(f"box {list(box)} lies outside the {frame.shape[1]}x{frame.shape[0]} frame")
    return cv2.resize(frame[y1:y2, x1:x2], (crop_size, crop_size), interpolation=cv2.INTER_AREA)


def landmarks_in_crop(points: np.ndarray, box: np.ndarray, crop_size: int, margin: int,
                      shape: tuple[int, ...]) -> np.ndarray:
    """Full-frame landmarks (5, 2) moved into the pixels of the crop that crop_face makes from `box`."""
    x1, y1, x2, y2 = _crop_box(np.asarray(box), crop_size, margin, shape)
    scale = np.array([crop_size / max(x2 - x1, 1), crop_size / max(y2 - y1, 1)], dtype=np.float32)
    return ((np.asarray(points, dtype=np.float32) - np.array([x1, y1], dtype=np.float32)) * scale).astype(np.float32)


def extract_video(path: str | Path, faces_cfg: FacesConfig, detector: FaceDetector,
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
        indices = video.sample_indices(video.probe(path).n_frames, faces_cfg)
    except VideoReadError as err:
        indices, problems = [], [err]
    batches = _frame_batches(path, indices, faces_cfg.batch_size, problems, decode_threads)
    tracker = tracking.FaceTracker(detector, faces_cfg.detect_every)
    with _decoded_ahead(batches) as decoded:
        for batch in decoded:
            frames_read += len(batch)
            detections = tracker.detect([frame for _, frame in batch])
            for (frame_index, frame), (boxes, probs, points) in zip(batch, detections):
                for face_index, (box, prob, face_points) in enumerate(zip(boxes, probs, points)):
                    crop = crop_face(frame, box, faces_cfg.crop_size, faces_cfg.margin)
                    in_crop = landmarks_in_crop(face_points, box, faces_cfg.crop_size, faces_cfg.margin, frame.shape)
                    found.append((frame_index, face_index, box, float(prob), crop, in_crop))
    status = _status(frames_read, len(found), problems)
    return _video_faces(path.name, found, faces_cfg, frames_read, status, time.perf_counter() - started)


def assign_tracks(frame_indices: np.ndarray, boxes: np.ndarray, max_shift: float) -> np.ndarray:
    """Track id per face: a face continues the nearest track whose latest box is close enough.

    Frames are visited in order. A (face, track) pair may match when the face's centre lies
    within max_shift x the track's latest box width of that box's centre and neither box is
    more than twice the other's width (a face does not double in size between sampled frames).
    Pairs are matched greedily, nearest first, one face per track; unmatched faces open new
    tracks (ids 0, 1, ... in order of appearance).
    """
    frame_indices = np.asarray(frame_indices)
    tracks = np.full(len(frame_indices), -1, dtype=int)
    last_boxes: list[np.ndarray] = []  # latest box of each track
    for frame_index in sorted(set(frame_indices.tolist())):
        positions = np.flatnonzero(frame_indices == frame_index)
        shifts = _relative_shift(boxes[positions], np.array(last_boxes).reshape(-1, 4))
        for flat in np.argsort(shifts, axis=None, kind="stable"):
            face, track = np.unravel_index(flat, shifts.shape)
            if shifts[face, track] > max_shift:
                break
            if tracks[positions[face]] == -1 and track not in tracks[positions]:
                tracks[positions[face]] = track
        for position in positions:
            if tracks[position] == -1:
                tracks[position] = len(last_boxes)
                last_boxes.append(boxes[position])
            else:
                last_boxes[tracks[position]] = boxes[position]
    return tracks


def run_stage(cfg: Config, videos: pd.DataFrame, executor: Optional[concurrent.futures.Executor] = None) -> pd.DataFrame:
    """Crop the faces of every video into cfg.faces_dir and write cfg.faces_csv.

    Videos already committed are skipped; a video interrupted half way is redone. Work runs
    through `executor` if given (the caller owns it), else a Dask cluster when
    cfg.faces.scheduler is set (workers must see cfg.work_dir), else a local process pool
    of cfg.faces.workers processes (in this process when workers <= 1). One bad video never
    stops the stage: it gets a status. Returns the status table with labels.

    Raises:
        ConfigError: faces_dir holds crops made with different output settings.
        MetadataError: two videos share a file stem (their crop folders would collide).
    """
    _check_unique_stems(videos, cfg)
    _claim_settings(cfg)
    _remove_partial_folders(cfg.faces_dir)
    pending = videos[[not _is_committed(cfg.faces_dir, name) for name in videos["video"]]]
    failures = _run_videos(pending, cfg, executor, n_done=len(videos) - len(pending))
    manifest = _merge_manifest(cfg.faces_dir, videos["video"].tolist(), failures)
    files.write_csv(manifest, cfg.faces_csv)
    labels = videos[["video"]].assign(label=videos["label"] if "label" in videos else "")
    return _status_rows(manifest).merge(labels, on="video", how="left")[["video", "label", *STATUS_COLUMNS[1:]]]


def load_videos(cfg: Config) -> pd.DataFrame:
    """The video table of stage 01 (manifests/videos.csv).

    Raises:
        StageOutputMissing: notebook 01 has not run for this work_dir.
    """
    if not cfg.videos_csv.is_file():
        raise StageOutputMissing(f"{cfg.videos_csv} not found; run notebooks/01_data_classification.ipynb first")
    return pd.read_csv(cfg.videos_csv, keep_default_na=False)


def load_crops(cfg: Config) -> pd.DataFrame:
    """One row per crop: video, frame, face, track, x1, y1, x2, y2, prob, path (relative to cfg.work_dir),
    and the five landmarks in crop pixels (LANDMARK_COLUMNS; empty in manifests made before they were stored).
    """
    manifest = _read_manifest(cfg)
    crops = manifest[manifest["kind"] == "crop"].reindex(columns=CROP_COLUMNS)
    return crops.astype({"frame": int, "face": int, "track": int}).reset_index(drop=True)


def load_status(cfg: Config) -> pd.DataFrame:
    """One row per video: video, status, frames_read, n_faces, seconds.

    status is "ok", "no_face", "partial: <reason>" (the file broke mid-stream; faces of the
    frames before the break are kept), "unreadable: <reason>", or "error: <reason>" (an
    unexpected failure; not committed, so the next run retries that video).
    """
    return _status_rows(_read_manifest(cfg))


def summarize(statuses: pd.DataFrame) -> pd.DataFrame:
    """Videos per status kind (the part before ':') and label, with totals and faces found."""
    kinds = statuses.assign(kind=statuses["status"].str.split(":").str[0])
    counts = pd.crosstab(kinds["kind"], kinds["label"].fillna("?"), margins=True, margins_name="total")
    faces_found = kinds.groupby("kind")["n_faces"].sum()
    return counts.assign(faces=faces_found.reindex(counts.index).fillna(kinds["n_faces"].sum()).astype(int))


def local_executor(faces_cfg: FacesConfig) -> concurrent.futures.ProcessPoolExecutor:
    """A process pool whose workers each load MTCNN once, use torch_threads threads, and exit
    when this process dies (a killed kernel leaves no 1 GB orphans; see dfhelpers.workers)."""
    return workers.process_pool(faces_cfg.workers, _init_worker, (faces_cfg,))


@contextlib.contextmanager
def torch_threads(n_threads: int) -> Iterator[None]:
    """Use n_threads torch threads inside the block, then restore the caller's setting.

    More threads than free cores is far slower than fewer: on a busy 2-core machine MTCNN
    with 2 threads ran 10x slower than with 1. Without torch in the process (the onnxruntime
    detector takes its threads from its config) this does nothing and imports nothing.
    """
    if "torch" not in sys.modules:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --- private helpers -------------------------------------------------------------------

_DETECTORS: dict[FacesConfig, FaceDetector] = {}  # per process: MTCNN loaded once per settings
_MAX_WIDTH_RATIO = 2.0  # a face does not double or halve in width between sampled frames
# dfhelpers.tracking's windows: scaled to 128 px, a face twice smaller than its window is 64 px
# there; the pyramid's first level finds faces of 24 px (P-net's 12 px cells at scale 0.5)
WINDOW_SIZE, WINDOW_MIN_FACE = 128, 24


def _no_faces() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.float32), np.zeros((0, 5, 2), dtype=np.float32)


def _crop_box(box: np.ndarray, crop_size: int, margin: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """extract_face's arithmetic, operation for operation (same dtype, same truncation)."""
    margin_x = margin * (box[2] - box[0]) / (crop_size - margin)
    margin_y = margin * (box[3] - box[1]) / (crop_size - margin)
    height, width = shape[:2]
    return (int(max(box[0] - margin_x / 2, 0)), int(max(box[1] - margin_y / 2, 0)),
            int(min(box[2] + margin_x / 2, width)), int(min(box[3] + margin_y / 2, height)))


def _window_image(frame: np.ndarray, window: np.ndarray, size: int) -> np.ndarray:
    """The window's pixels of a frame as a size x size RGB image; black where it leaves the frame."""
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in window)  # whole pixels (tracking.face_windows)
    inside = frame[max(y1, 0):max(min(y2, height), 0), max(x1, 0):max(min(x2, width), 0)]
    if inside.shape[:2] != (y2 - y1, x2 - x1):
        padded = np.zeros((max(y2 - y1, 1), max(x2 - x1, 1), 3), dtype=frame.dtype)
        top, left = max(0, -y1), max(0, -x1)
        padded[top:top + inside.shape[0], left:left + inside.shape[1]] = inside
        inside = padded
    return cv2.resize(inside, (size, size), interpolation=cv2.INTER_AREA)


def _has_area(crop_box: tuple[int, int, int, int]) -> bool:
    return crop_box[2] > crop_box[0] and crop_box[3] > crop_box[1]


def _relative_shift(boxes: np.ndarray, track_boxes: np.ndarray) -> np.ndarray:
    """(faces, tracks): centre distance in track-box widths; inf when the widths differ over 2x."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    track_boxes = np.asarray(track_boxes, dtype=float).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    track_centres = (track_boxes[:, :2] + track_boxes[:, 2:]) / 2
    widths = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-6)
    track_widths = np.maximum(track_boxes[:, 2] - track_boxes[:, 0], 1e-6)
    distances = np.linalg.norm(centres[:, None, :] - track_centres[None, :, :], axis=2) / track_widths[None, :]
    width_ratio = widths[:, None] / track_widths[None, :]
    return np.where((width_ratio <= _MAX_WIDTH_RATIO) & (width_ratio >= 1 / _MAX_WIDTH_RATIO), distances, np.inf)


def _frame_batches(path: Path, indices: list[int], batch_size: int, problems: list[VideoReadError],
                   decode_threads: int = 1) -> Generator[list[tuple[int, np.ndarray]], None, None]:
    """Batches of (index, frame); a read error ends the batches (after the partial one) and is appended to problems."""
    batch: list[tuple[int, np.ndarray]] = []
    try:
        for item in video.read_frames(path, indices, decode_threads):
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
        tracks=assign_tracks(frame_indices, boxes, faces_cfg.track_max_shift),
        crops=np.array([f[4] for f in found], dtype=np.uint8).reshape(-1, size, size, 3),
        frames_read=frames_read, status=status, seconds=seconds)


# --- the stage: per-video commit, executors, manifest ------------------------------------


def _init_worker(faces_cfg: FacesConfig) -> None:
    """Pool initializer: load MTCNN (which takes torch_threads threads); one OpenCV thread per worker."""
    cv2.setNumThreads(1)
    _detector_for(faces_cfg)


def _detector_for(faces_cfg: FacesConfig) -> FaceDetector:
    if faces_cfg not in _DETECTORS:
        _DETECTORS[faces_cfg] = FaceDetector(faces_cfg)
    return _DETECTORS[faces_cfg]


def _process_video(name: str, path: str, faces_cfg: FacesConfig, faces_dir: str, work_dir: str) -> dict[str, Any]:
    """Runs on a worker: extract one video, write its crops and rows, commit them with one rename."""
    if faces_cfg not in _DETECTORS and multiprocessing.parent_process() is not None:
        _init_worker(faces_cfg)  # a worker process without our initializer (Dask, a caller's pool)
    started = time.perf_counter()
    result = extract_video(path, faces_cfg, _detector_for(faces_cfg))
    final_dir = Path(faces_dir) / Path(name).stem
    staging_dir = Path(faces_dir) / f".{final_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    staging_dir.mkdir(parents=True)
    crop_paths = []
    for frame_index, face_index, crop in zip(result.frame_indices, result.face_indices, result.crops):
        file_name = f"{frame_index:05d}_{face_index}.jpg"
        (staging_dir / file_name).write_bytes(encode_jpeg(crop, faces_cfg.jpeg_quality))
        crop_paths.append((final_dir / file_name).relative_to(work_dir).as_posix())
    seconds = round(time.perf_counter() - started, 3)
    rows = _video_rows(dataclasses.replace(result, video=name), crop_paths, seconds)
    rows.to_csv(staging_dir / ROWS_FILE, index=False)
    _commit(staging_dir, final_dir)
    return {"video": name, "status": result.status, "n_faces": result.n_faces}


def _commit(staging_dir: Path, final_dir: Path) -> None:
    """Rename the finished folder into place; if another run committed it first, keep theirs."""
    try:
        os.rename(staging_dir, final_dir)
    except OSError:
        if not (final_dir / ROWS_FILE).is_file():
            shutil.rmtree(final_dir, ignore_errors=True)  # a stale folder without rows: not committed
            os.rename(staging_dir, final_dir)
        else:
            shutil.rmtree(staging_dir, ignore_errors=True)


def _video_rows(result: VideoFaces, crop_paths: list[str], seconds: float) -> pd.DataFrame:
    """The manifest rows of one video: its status row, then one row per crop."""
    status_row = pd.DataFrame([{"kind": "video", "video": result.video, "status": result.status,
                                "frames_read": result.frames_read, "n_faces": result.n_faces, "seconds": seconds}])
    crops = result.table().assign(kind="crop", path=crop_paths)
    return pd.concat([status_row, crops], ignore_index=True).reindex(columns=MANIFEST_COLUMNS)


@dataclasses.dataclass
class _Runner:
    """Where per-video tasks run: an executor, how many tasks to keep queued, how to replace it."""

    pool: concurrent.futures.Executor
    window: int  # tasks in flight: keeps workers busy without queueing 100,000 DFDC videos at once
    restart: Optional[Callable[[], concurrent.futures.Executor]] = None  # a fresh local pool after a crash


def _run_videos(pending: pd.DataFrame, cfg: Config, executor: Optional[concurrent.futures.Executor],
                n_done: int) -> dict[str, str]:
    """Run every pending video; returns video -> "error: ..." for the ones that failed unexpectedly."""
    failures: dict[str, str] = {}
    crashed: list[Any] = []  # rows in flight when a worker process died: one of them killed it
    queue = collections.deque(pending.itertuples())
    with contextlib.ExitStack() as stack:
        runner = _open_runner(cfg, executor, stack)
        progress = stack.enter_context(tqdm(total=n_done + len(queue), initial=n_done, unit="video", desc="faces"))
        running: dict[concurrent.futures.Future, tuple[Any, concurrent.futures.Executor]] = {}
        n_faces = 0
        while queue or running:
            while queue and len(running) < runner.window:
                row = queue.popleft()
                running[_submit(runner, row, cfg, stack)] = (row, runner.pool)
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                row, pool = running.pop(future)
                n_faces += _collect(future, row, failures, crashed)
                if crashed and crashed[-1] is row and pool is runner.pool and runner.restart is not None:
                    runner.pool = stack.enter_context(runner.restart())  # the broken pool accepts no more work
                progress.update(1)
            progress.set_postfix(faces=n_faces, failed=len(failures))
    for row in crashed:
        _retry_alone(row, cfg, failures)
    return failures


def _submit(runner: _Runner, row: Any, cfg: Config, stack: Optional[contextlib.ExitStack] = None
            ) -> concurrent.futures.Future:
    """Submit one video; a local pool that broke since the last check is replaced first."""
    task = (_process_video, row.video, str(row.path), cfg.faces, str(cfg.faces_dir), str(cfg.work_dir))
    try:
        return runner.pool.submit(*task)
    except concurrent.futures.process.BrokenProcessPool:
        if runner.restart is None or stack is None:
            raise
        runner.pool = stack.enter_context(runner.restart())
        return runner.pool.submit(*task)


def _collect(future: concurrent.futures.Future, row: Any, failures: dict[str, str], crashed: list[Any]) -> int:
    """Faces found by a finished task; a failure is recorded (a crashed worker's rows go to `crashed`)."""
    try:
        return int(future.result()["n_faces"])
    except concurrent.futures.process.BrokenProcessPool:
        crashed.append(row)
    except Exception as err:  # noqa: BLE001 - one bad video must not stop the stage
        failures[row.video] = f"error: {type(err).__name__}: {' '.join(str(err).split())}"
    return 0


def _retry_alone(row: Any, cfg: Config, failures: dict[str, str]) -> None:
    """Run a video that was in flight when a worker died, alone in a fresh process.

    A dying worker fails every task of its pool, not only the culprit; alone, an innocent
    video succeeds and the culprit is named.
    """
    with local_executor(dataclasses.replace(cfg.faces, workers=1)) as pool:
        try:
            _submit(_Runner(pool, 1), row, cfg).result()
        except Exception as err:  # noqa: BLE001 - record and go on
            failures[row.video] = f"error: the worker process died on this video ({type(err).__name__})"


def _open_runner(cfg: Config, executor: Optional[concurrent.futures.Executor],
                 stack: contextlib.ExitStack) -> _Runner:
    """The caller's executor, a Dask cluster's, a local process pool, or this process (workers <= 1)."""
    many = 1_000_000  # a caller's or a cluster's executor does its own queueing
    if executor is not None:
        return _Runner(executor, many)
    if cfg.faces.scheduler:
        try:
            from dask.distributed import Client
        except ImportError as err:
            raise ConfigError(f"faces.scheduler is {cfg.faces.scheduler!r} but dask.distributed is not installed; "
                              "pip install 'dask[distributed]' or unset faces.scheduler") from err
        client = stack.enter_context(Client(cfg.faces.scheduler))
        return _Runner(client.get_executor(), many)
    if cfg.faces.workers <= 1:
        stack.enter_context(torch_threads(cfg.faces.torch_threads))  # this process is the worker
        return _Runner(_InlineExecutor(), 1)
    restart = functools.partial(local_executor, cfg.faces)
    return _Runner(stack.enter_context(restart()), 2 * cfg.faces.workers, restart)


class _InlineExecutor(concurrent.futures.Executor):
    """Runs each task in this process at submit time (workers <= 1: no process start-up cost)."""

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:  # type: ignore[override]
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - delivered through the future, as a pool would
            future.set_exception(err)
        return future


def _is_committed(faces_dir: Path, video_name: str) -> bool:
    return (faces_dir / Path(video_name).stem / ROWS_FILE).is_file()


def _remove_partial_folders(faces_dir: Path) -> None:
    """Folders of videos interrupted half way (never committed): their video is redone."""
    for staging_dir in faces_dir.glob(".*.partial-*"):
        shutil.rmtree(staging_dir, ignore_errors=True)
    for video_dir in (d for d in faces_dir.iterdir() if d.is_dir()) if faces_dir.is_dir() else []:
        if not (video_dir / ROWS_FILE).is_file():
            shutil.rmtree(video_dir, ignore_errors=True)


def _claim_settings(cfg: Config) -> None:
    """Record the output settings on the first run; refuse to mix crops made with other ones."""
    settings = json.loads(json.dumps({name: getattr(cfg.faces, name) for name in OUTPUT_SETTINGS}))
    settings_path = cfg.faces_dir / SETTINGS_FILE
    if not settings_path.is_file():
        files.write_json(settings, settings_path)
        return
    previous = {**SETTINGS_BEFORE_THEY_EXISTED, **json.loads(settings_path.read_text())}
    changed = [f"{name}: {previous.get(name)!r} -> {value!r}" for name, value in settings.items()
               if previous.get(name) != value]
    if changed:
        raise ConfigError(f"{settings_path}: crops were made with other faces settings ({'; '.join(changed)}); "
                          f"use a new work_dir, or delete {cfg.faces_dir} to redo the crops")


def _check_unique_stems(videos: pd.DataFrame, cfg: Config) -> None:
    stems = videos["video"].map(lambda name: Path(name).stem)
    duplicated = videos["video"][stems.duplicated(keep=False)].tolist()
    if duplicated:
        raise MetadataError(f"{cfg.videos_csv}: videos {duplicated[:4]} share a file stem, so their crop folders "
                            "would collide; keep only one of them in the metadata")


def _merge_manifest(faces_dir: Path, video_names: list[str], failures: dict[str, str]) -> pd.DataFrame:
    """faces.csv in the order of the video table: committed rows, plus a row per failed video."""
    parts = []
    for name in video_names:
        rows_path = faces_dir / Path(name).stem / ROWS_FILE
        if rows_path.is_file():
            parts.append(pd.read_csv(rows_path, keep_default_na=False, na_values=[""], dtype={"video": str}))
        elif name in failures:
            parts.append(pd.DataFrame([{"kind": "video", "video": name, "status": failures[name],
                                        "frames_read": 0, "n_faces": 0}]))
    manifest = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=MANIFEST_COLUMNS)
    return manifest.reindex(columns=MANIFEST_COLUMNS).astype({c: "Int64" for c in INT_COLUMNS})


def _read_manifest(cfg: Config) -> pd.DataFrame:
    if not cfg.faces_csv.is_file():
        raise StageOutputMissing(f"{cfg.faces_csv} not found; run notebooks/02_face_crop.ipynb first")
    return pd.read_csv(cfg.faces_csv, keep_default_na=False, na_values=[""], dtype={"video": str, "status": str})


def _status_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    statuses = manifest[manifest["kind"] == "video"][STATUS_COLUMNS]
    return statuses.astype({"frames_read": int, "n_faces": int}).reset_index(drop=True)
