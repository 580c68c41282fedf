"""Builders of hostile inputs for the reliability tests: broken videos, bad metadata, bad crops.

Everything is generated in the test's tmp_path; no media is committed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def background_frames(n: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth moving colour gradients: a video with no face in it."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, size=3)
    frames = []
    for t in range(n):
        wave = 60 * np.sin((xs + 4 * t) / 37.0) + 40 * np.cos((ys - 3 * t) / 23.0)
        frames.append(np.clip(base[None, None, :] + wave[..., None], 0, 255).astype(np.uint8))
    return frames


def face_frames(face_rgb: np.ndarray, n: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """A face photo drifting slowly over a gradient background (enough for MTCNN)."""
    import cv2

    frames = background_frames(n, width, height, seed)
    scale = 0.8 * min(height / face_rgb.shape[0], width / face_rgb.shape[1])
    face = cv2.resize(face_rgb, (int(face_rgb.shape[1] * scale), int(face_rgb.shape[0] * scale)))
    fh, fw = face.shape[:2]
    for t, frame in enumerate(frames):
        x = (width - fw) // 2 + int(6 * np.sin(t / 5))
        y = (height - fh) // 2 + int(4 * np.cos(t / 7))
        frame[y:y + fh, x:x + fw] = face
    return frames


def truncated_copy(source: Path, target: Path, keep: float = 0.4) -> Path:
    """The first `keep` share of a video file's bytes: an interrupted download or copy. Without
    its index (written last by default) it cannot be opened; with it, it breaks mid-stream."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def write_metadata(folder: Path, entries: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metadata.json"
    path.write_text(json.dumps(entries))
    return path
