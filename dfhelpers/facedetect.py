"""The face detector (MTCNN on onnxruntime or torch, batched) and the crop geometry of facenet's extract_face."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from dfhelpers import compat
from dfhelpers.config import FacesConfig
from dfhelpers.errors import ConfigError

# dfhelpers.tracking's windows: scaled to 128 px, a face twice smaller than its window is 64 px
# there; the pyramid's first level finds faces of 24 px (P-net's 12 px cells at scale 0.5)
WINDOW_SIZE, WINDOW_MIN_FACE = 128, 24


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
            try:  # imported here: torch is heavy and only this runtime needs it
                import torch
                from facenet_pytorch import MTCNN
            except ImportError as err:
                raise ConfigError(f"faces.mtcnn_runtime: torch needs torch and facenet-pytorch ({err}); "
                                  "pip install 'dfdetect[torch]', or use the default onnxruntime") from err

            # MTCNN's R/O-net stages are thousands of tiny ops: more threads than free cores made
            # detection 5x slower on a busy 2-core machine (OpenMP spin-waiting)
            torch.set_num_threads(max(1, faces_cfg.detector_threads))
            # select_largest: faces come back largest first, as in the original keep_all workflow
            self._mtcnn = MTCNN(keep_all=True, thresholds=list(faces_cfg.thresholds),
                                min_face_size=faces_cfg.min_face_size, select_largest=True, device="cpu")
            # the windows' pyramid (detect_in_windows) in a second instance: threads share a detector
            # (dfdetect scores two videos at once), so the first one's settings never change
            self._window_mtcnn = MTCNN(keep_all=True, thresholds=list(faces_cfg.thresholds),
                                       min_face_size=WINDOW_MIN_FACE, select_largest=True, device="cpu")
        else:
            from dfhelpers import mtcnn

            self._mtcnn = mtcnn.Mtcnn(faces_cfg.thresholds, faces_cfg.min_face_size, threads=faces_cfg.detector_threads)

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


# --- private helpers -------------------------------------------------------------------


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
