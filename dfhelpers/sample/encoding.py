"""Encoding the sample's videos: reproducible H.264 mp4, per-video settings, optional double compression."""

from __future__ import annotations

import contextlib
import dataclasses
import fractions
import io
from pathlib import Path
from typing import Callable, Iterator

import av
import cv2
import numpy as np

from dfhelpers.files import atomic_path


@dataclasses.dataclass(frozen=True)
class EncoderSettings:
    """How one video is compressed; drawn per video in the plan, whatever its label."""

    crf: int = 20  # x264 quality
    x264_preset: str = "veryfast"
    gop: int = 250  # keyframe interval in frames (x264's default)
    first_crf: int = 0  # > 0: the frames are first encoded at this crf and decoded (double compression)


@contextlib.contextmanager
def mp4_writer(path: Path, fps: int, settings: EncoderSettings) -> Iterator[Callable[[np.ndarray], None]]:
    """A `write(frame)` callable that encodes RGB uint8 frames into `path` as H.264 (yuv420p, BT.601
    limited range) mp4, atomically; with double compression the frames are collected, encoded at
    `first_crf` in memory, decoded and encoded again on exit.

    Byte-identical for identical frames and settings: one x264 thread, no macroblock-tree rate
    control, and the RGB<->YUV conversions done by OpenCV.
    """
    if not settings.first_crf:
        with atomic_path(path) as staging_file, _encoder(str(staging_file), fps, settings) as write:
            yield write
        return
    first: list[np.ndarray] = []
    yield first.append
    buffer = io.BytesIO()
    with _encoder(buffer, fps, dataclasses.replace(settings, crf=settings.first_crf)) as write:
        for frame in first:
            write(frame)
    with atomic_path(path) as staging_file, _encoder(str(staging_file), fps, settings) as write:
        for frame in _decode(buffer.getvalue()):
            write(frame)


@contextlib.contextmanager
def _encoder(target: str | io.BytesIO, fps: int, settings: EncoderSettings) -> Iterator[Callable[[np.ndarray], None]]:
    container = av.open(target, "w", format="mp4")
    try:
        stream = container.add_stream("libx264", rate=fps)
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1  # x264 output depends on the thread count
        # mbtree off: x264's macroblock-tree rate control read uninitialised memory here (about
        # 1 encode in 6 differed for identical frames); without it the bytes are reproducible
        params = f"mbtree=0:keyint={settings.gop}:min-keyint={max(1, min(settings.gop, 25) // 2)}"
        stream.options = {"crf": str(settings.crf), "preset": settings.x264_preset, "x264-params": params}
        frame_count = [0]

        def write(frame: np.ndarray) -> None:
            if frame_count[0] == 0:
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                _tag_bt601(stream)
            video_frame = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            video_frame.pts = frame_count[0]
            video_frame.time_base = fractions.Fraction(1, fps)
            frame_count[0] += 1
            container.mux(stream.encode(video_frame))

        yield write
        container.mux(stream.encode())
    finally:
        container.close()


def _decode(data: bytes) -> Iterator[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(video=0):
            yield cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)


def _tag_bt601(stream) -> None:
    """Say what OpenCV's RGB->I420 produced (BT.601, limited range), so every decoder agrees."""
    context = stream.codec_context
    context.color_range = 1  # MPEG (limited)
    context.colorspace = context.color_primaries = context.color_trc = 6  # SMPTE 170M = BT.601
