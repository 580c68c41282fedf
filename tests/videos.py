"""Tiny videos made in the test's tmp_path (no media is committed), and what the tests that run on
them share: small face settings, a run config, a video table, folder digests, a tiny model."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path
from typing import Mapping, Sequence

import av
import numpy as np
import pandas as pd

from dfhelpers import config
from dfhelpers.config import FacesConfig

ONE_THREAD = {"threads": "1"}  # x264's own defaults but one thread
VERYFAST = {"preset": "veryfast"}  # x264's veryfast preset, its own thread count

SMALL = FacesConfig(frames_per_video=4, workers=1)  # in-process: no worker start-up in most tests


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int = 15, codec: str = "libx264",
                index_first: bool = False, codec_options: Mapping[str, str] = ONE_THREAD) -> Path:
    """Encode RGB frames (all one size) into `path` with PyAV.

    index_first puts the MP4 index (moov) before the frames ("faststart", as streamed files
    have it), so that a truncated copy still opens and breaks mid-stream.
    """
    height, width = frames[0].shape[:2]
    options = {"movflags": "faststart"} if index_first else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = dict(codec_options)
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def grace_hopper() -> np.ndarray:
    """The face photo that ships with matplotlib (US Navy, public domain), as RGB."""
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


def face_frame(width: int = 320, height: int = 240, shift: int = 0, with_face: bool = True) -> np.ndarray:
    """A smooth background with Grace Hopper's portrait (face ~65 px) moved `shift` px right."""
    import cv2

    x_ramp = np.linspace(60, 160, width, dtype=np.float32)[None, :, None]
    y_ramp = np.linspace(0, 60, height, dtype=np.float32)[:, None, None]
    frame = np.clip(x_ramp + y_ramp + np.zeros((1, 1, 3), np.float32), 0, 255).astype(np.uint8)
    if with_face:
        portrait = cv2.resize(grace_hopper(), None, fx=0.35, fy=0.35, interpolation=cv2.INTER_AREA)
        top, left = (height - portrait.shape[0]) // 2, 40 + shift
        frame[top:top + portrait.shape[0], left:left + portrait.shape[1]] = portrait
    return frame


def face_video(path: Path, n_frames: int = 10, with_face: bool = True, faststart: bool = False) -> Path:
    """10 fps of face_frame, the portrait moving 4 px a frame (or the background alone)."""
    frames = [face_frame(shift=(4 * index) % 80, with_face=with_face) for index in range(n_frames)]
    return write_video(path, frames, fps=10, index_first=faststart, codec_options=VERYFAST)


def close_up_video(path: Path, n_frames: int = 16, with_face: bool = True, size: tuple[int, int] = (320, 240),
                   fps: int = 15) -> Path:
    """A short H.264 video of Grace Hopper's photo, the frame's height, sliding sideways (or a blank grey one)."""
    import cv2

    face = grace_hopper()
    width, height = size
    face = cv2.resize(face, (int(face.shape[1] * height / face.shape[0]), height))
    frames = []
    for index in range(n_frames):
        canvas = np.full((height, width, 3), 90, dtype=np.uint8)
        if with_face:
            left = 20 + 3 * index
            canvas[:, left:left + face.shape[1]] = face[:, : width - left]
        frames.append(canvas)
    return write_video(path, frames, fps=fps, codec_options={})


def middle_of_packet(path: Path, packet_number: int) -> int:
    """A byte offset inside the packet_number-th packet (decode order): cutting there breaks the stream."""
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    return packets[packet_number].pos + packets[packet_number].size // 2


def video_table(folder: Path) -> pd.DataFrame:
    """The .mp4 files of a folder as the face stage takes them; FAKE when "fake" is in the name."""
    paths = sorted(folder.glob("*.mp4"))
    labels = ["FAKE" if "fake" in p.name else "REAL" for p in paths]
    return pd.DataFrame({"video": [p.name for p in paths], "path": [str(p) for p in paths], "label": labels})


def make_cfg(tmp_path: Path, **faces_settings) -> config.Config:
    """A run in tmp_path/run with SMALL's face settings, overridden by faces_settings."""
    settings = {**{"frames_per_video": 4, "workers": 1}, **faces_settings}
    return config.from_dict({"work_dir": str(tmp_path / "run"), "data_dirs": [], "faces": settings}, base_dir=tmp_path)


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under a folder, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def save_tiny_model(path: Path, crop_size: int = 160, sharpness: float = 1.0) -> Path:
    """Crops (N, crop_size, crop_size, 3) 0..255 -> (N, 1) P(FAKE), deterministic weights.

    `sharpness` scales the logit: another model with the same ranking and other probabilities.
    """
    import keras

    crops = keras.Input((crop_size, crop_size, 3))
    mean_colour = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(crops))
    fake_probability = keras.layers.Dense(1, activation="sigmoid",
                                          kernel_initializer=keras.initializers.Constant(sharpness),
                                          bias_initializer=keras.initializers.Constant(-1.5 * sharpness))(mean_colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.Model(crops, fake_probability).save(path)
    return path


def tight_face() -> np.ndarray:
    """Grace Hopper's face cut to its MTCNN box and resized to 224 px, as Kaggle's face sets store faces."""
    import cv2

    from dfhelpers import facedetect

    photo = grace_hopper()
    boxes, _ = facedetect.FaceDetector(SMALL).detect([photo])[0]
    x1, y1, x2, y2 = boxes[0].astype(int)
    return cv2.resize(photo[y1:y2, x1:x2], (224, 224), interpolation=cv2.INTER_CUBIC)


def write_image(path: Path, rgb: np.ndarray) -> Path:
    """An RGB image file (its format by the suffix)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def write_kaggle_faces(folder: Path, face: np.ndarray, rows: list[tuple[str, str, str]]) -> Path:
    """Kaggle's deepfake-faces layout: metadata.csv (videoname, original_width, original_height, label,
    original) for `rows` (videoname, label, original) and faces_224/<stem>.jpg, each face shifted a pixel more."""
    from dfhelpers import imagesets

    table = pd.DataFrame(rows, columns=["videoname", "label", "original"]).assign(original_width=129,
                                                                                  original_height=129)
    folder.mkdir(parents=True, exist_ok=True)
    table[["videoname", "original_width", "original_height", "label", "original"]].to_csv(
        folder / imagesets.KAGGLE_CSV, index=False)
    for shift, name in enumerate(table["videoname"]):
        write_image(folder / imagesets.KAGGLE_IMAGES / f"{Path(name).stem}.jpg", np.roll(face, shift, axis=1))
    return folder
