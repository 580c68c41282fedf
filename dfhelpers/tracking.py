"""Faces across a video's sampled frames: followed between key frames (MTCNN on small windows), joined into tracks.

A video's sampled frames are visited in order. Every `detect_every`-th one (a key frame) gets
the full detection (`FaceDetector.detect_with_landmarks`: the whole frame's pyramid, and the
full-resolution retry of a miss). Each frame after it, up to the next key frame, is searched
only in a square window around each face the key frame found, twice the face's size: the
cascade on a 128 px image instead of a 640 px one, so the P-net pyramid and the proposals it
hands to R-net shrink ~20x. Boxes, probabilities and landmarks still come from MTCNN's own
O-net, on the frame's own pixels: nothing is interpolated.

Nothing is lost to a failed follow: a frame where any window finds no face (the face left,
turned away, or moved more than half a face) is detected in full like a key frame. New faces
that enter between key frames are found at the next key frame.

Which frames are key frames depends only on the frame's position among the sampled frames,
so the faces found do not depend on how frames are batched.

Once a video's faces are found, `assign_tracks` gives each one a track id: the same person
from one sampled frame to the next (the `track` column of the crop manifest).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from dfhelpers import mtcnn  # its NMS only: onnxruntime is imported when a cascade is built

WINDOW_FACTOR = 2.0  # window side / face size: a face may move half its size and grow or shrink ~1.6x
Detection = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (k, 4), probs (k,), points (k, 5, 2)


class FaceTracker:
    """Faces of one video's sampled frames, frame batches in order; see the module docstring.

    Args:
        detector: a `dfhelpers.facedetect.FaceDetector` (anything with `detect_with_landmarks` and
            `detect_in_windows`).
        detect_every: 1 detects every frame in full (no windows).
    """

    def __init__(self, detector: Any, detect_every: int):
        self.detector = detector
        self.detect_every = max(1, int(detect_every))
        self._position = 0  # of the next frame among the video's sampled frames
        self._key_boxes: Optional[np.ndarray] = None  # the faces of the latest key frame

    def detect(self, frames: list[np.ndarray]) -> list[Detection]:
        """The next frames of the video: per frame, as `FaceDetector.detect_with_landmarks`."""
        positions = range(self._position, self._position + len(frames))
        self._position += len(frames)
        results: list[Optional[Detection]] = [None] * len(frames)
        keys = [i for i, position in enumerate(positions) if position % self.detect_every == 0]
        for i, found in zip(keys, self._in_full(frames, keys)):
            results[i] = found
        windows: list[tuple[int, np.ndarray]] = []
        in_full: list[int] = []
        for i in range(len(frames)):
            if results[i] is not None:
                self._key_boxes = results[i][0]
            elif self._key_boxes is not None and len(self._key_boxes):
                windows += [(i, window) for window in face_windows(self._key_boxes)]
            else:
                in_full.append(i)  # the key frame found no face: nothing to follow
        per_window = self.detector.detect_in_windows(frames, windows) if windows else []
        by_frame: dict[int, list[Detection]] = {}
        for (i, _), found in zip(windows, per_window):
            by_frame.setdefault(i, []).append(found)
        for i, founds in by_frame.items():
            if all(len(boxes) for boxes, _, _ in founds):
                results[i] = merge_detections(founds, self.detector.faces_cfg.max_faces_per_frame)
            else:
                in_full.append(i)  # a face was lost: detect this frame as a key frame is
        in_full.sort()
        for i, found in zip(in_full, self._in_full(frames, in_full)):
            results[i] = found
        return results  # type: ignore[return-value]

    def _in_full(self, frames: list[np.ndarray], chosen: list[int]) -> list[Detection]:
        return self.detector.detect_with_landmarks([frames[i] for i in chosen]) if chosen else []


def face_windows(boxes: np.ndarray) -> list[np.ndarray]:
    """Square windows (x1, y1, x2, y2), WINDOW_FACTOR x each face's longer side, centred on it.

    Windows may reach past the frame's edges (the outside reads as black): a face near an edge
    keeps the scale every other window has.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = np.maximum(np.round(WINDOW_FACTOR * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])), 2)
    corners = np.round(centres - sides[:, None] / 2)  # whole pixels: the window's image is exactly its pixels
    return [np.array([x, y, x + side, y + side], dtype=np.float32) for (x, y), side in zip(corners, sides)]


def merge_detections(founds: list[Detection], max_faces: Optional[int]) -> Detection:
    """One frame's faces from several windows: duplicates (IoU > 0.5) keep the likelier, largest first."""
    boxes = np.concatenate([f[0] for f in founds]).reshape(-1, 4)
    probs = np.concatenate([f[1] for f in founds]).reshape(-1)
    points = np.concatenate([f[2] for f in founds]).reshape(-1, 5, 2)
    kept = mtcnn.batched_nms(boxes, probs, np.zeros(len(boxes), dtype=np.int64), 0.5)  # MTCNN's own NMS
    areas = (boxes[kept, 2] - boxes[kept, 0]) * (boxes[kept, 3] - boxes[kept, 1])
    order = kept[np.argsort(-areas, kind="stable")][:max_faces]  # None keeps all
    return boxes[order], probs[order], points[order]


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


# --- private helpers -------------------------------------------------------------------

_MAX_WIDTH_RATIO = 2.0  # a face does not double or halve in width between sampled frames


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
