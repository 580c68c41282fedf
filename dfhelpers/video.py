"""Opening videos and sampling frames: which frames, how decoded, robust to broken files."""

from __future__ import annotations

import bisect
import dataclasses
import os
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from dfhelpers import compat
from dfhelpers.config import FacesConfig
from dfhelpers.errors import VideoReadError

try:  # PyAV decodes straight through and can skip unused frames; OpenCV is the fallback
    import av
except ImportError:  # pragma: no cover - av is a declared dependency
    av = None


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a video holds: frame count (presentation order), rate and frame size in pixels."""

    n_frames: int
    fps: float
    width: int
    height: int


def sample_indices(n_frames: int, faces_cfg: FacesConfig) -> list[int]:
    """Frame indices to read, ascending and unique, following `faces_cfg.sampling`.

    "even": `frames_per_video` evenly spaced frames, first and last included (all frames
    when the video is shorter); "every_k": frames 0, k, 2k, ...; "all": every frame, as the
    original per-frame workflow did.
    """
    if n_frames <= 0:
        return []
    if faces_cfg.sampling == "all":
        return list(range(n_frames))
    if faces_cfg.sampling == "every_k":
        return list(range(0, n_frames, max(1, faces_cfg.every_k)))
    if n_frames <= faces_cfg.frames_per_video:
        return list(range(n_frames))
    spaced = np.linspace(0, n_frames - 1, faces_cfg.frames_per_video).round().astype(int)
    return sorted(set(spaced.tolist()))


def probe(path: str | Path) -> VideoInfo:
    """Frame count, rate and size of a video, from one pass over its packets (no decoding).

    Container headers are not trusted for the count: a packet scan is exact and costs a
    few milliseconds. A file whose container declares more frames than it holds (cut short)
    reports the declared count, so that reading it ends with a VideoReadError naming the break.

    Raises:
        VideoReadError: the file cannot be opened, has no video stream or no frames.
    """
    path = Path(path)
    if av is None:
        return _probe_opencv(path)
    try:
        return _scan(path).info
    except VideoReadError as pyav_error:
        if not _opencv_can_open(path):
            raise pyav_error
        return _probe_opencv(path)


def read_frames(path: str | Path, indices: list[int], decode_threads: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, RGB uint8 frame (H, W, 3)) for the wanted indices, in order.

    Decodes straight through (no seeking, no whole video in memory). Frames that are not
    wanted and that no other frame refers to (H.264/HEVC non-reference frames) are not
    decoded at all: the decoder is told per packet to skip them, which leaves every decoded
    frame bit-identical. Packets that no wanted frame needs are not decoded either: when a
    keyframe that starts a closed GOP lies between two wanted frames, the packets before it
    are skipped (the demuxer still reads them, so frame indices stay exact) and decoding
    starts afresh at it. That saves nothing on FaceForensics++ c23 (keyframes 250 frames
    apart, 32 sampled frames ~10 apart) and about a third of the packets on short-GOP files
    (the sample generator draws GOPs of 8-60 frames). Decoding stops after the last wanted frame.

    Args:
        decode_threads: FFmpeg decoder threads (frame and slice threading when > 1; the
            frames are the same). 1 where every core already runs a worker (the face
            stage's pool); 2 lets a process that handles one video at a time decode on a
            second core.

    Raises:
        VideoReadError: the file cannot be opened, or decoding breaks before the last wanted
            frame; the frames yielded before the break are valid.
    """
    path = Path(path)
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return
    if av is None:
        yield from _read_opencv(path, wanted)
        return
    try:
        scan = _scan(path)
    except VideoReadError as pyav_error:
        if not _opencv_can_open(path):
            raise pyav_error
        yield from _read_opencv(path, wanted)
        return
    yield from _read_pyav(path, wanted, scan, decode_threads)


# --- private helpers -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Scan:
    info: VideoInfo
    index_of_pts: Optional[dict[int, int]]  # packet pts -> presentation index; None: no timestamps
    packets: list[tuple[Optional[int], bool]]  # decode order: (pts, None if discarded; is keyframe)


def _read_error(path: Path, reason: str) -> VideoReadError:
    """A VideoReadError whose `reason` attribute is the short cause (for a manifest status)."""
    reason = " ".join(str(reason).split()) or "unknown error"
    return VideoReadError(f"{path}: {reason}; check the file, or re-encode it (ffmpeg -i in.mp4 out.mp4) to use it",
                          reason)


def _ffmpeg_reason(error: Exception) -> str:
    """FFmpeg's message without the file path it appends."""
    return str(getattr(error, "strerror", None) or error)


def _scan(path: Path) -> _Scan:
    """Open with PyAV and demux every packet once: frame count and presentation order."""
    _check_not_special(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise _read_error(path, f"cannot open: {_ffmpeg_reason(err)}") from err
    with container:
        if not container.streams.video:
            raise _read_error(path, "no video stream")
        stream = container.streams.video[0]
        pts_values, n_packets, has_all_pts, packets = [], 0, True, []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet demux yields at the end
                    continue
                n_packets += 1
                packets.append((None if packet.is_discard else packet.pts, bool(packet.is_keyframe)))
                if packet.is_discard:  # outside the edit list: the decoder drops these frames
                    continue
                has_all_pts &= packet.pts is not None
                pts_values.append(packet.pts)
        except av.FFmpegError as err:
            raise _read_error(path, f"cannot read packets: {_ffmpeg_reason(err)}") from err
        declared = int(stream.frames or 0)
        is_cut_short = declared > n_packets
        n_frames = declared if is_cut_short else len(pts_values)
        if n_frames == 0:
            raise _read_error(path, "no frames")
        info = VideoInfo(n_frames, float(stream.average_rate or stream.guessed_rate or 0.0),
                         int(stream.codec_context.width), int(stream.codec_context.height))
    index_of_pts = {pts: i for i, pts in enumerate(sorted(pts_values))} if has_all_pts else None
    return _Scan(info, index_of_pts, packets)


def _read_pyav(path: Path, wanted: list[int], scan: _Scan, decode_threads: int) -> Iterator[tuple[int, np.ndarray]]:
    is_wanted = set(wanted)
    last_wanted = wanted[-1]
    n_yielded = 0
    decoded_index = -1  # counting mode (no timestamps): frames arrive in presentation order
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context
        # FFmpeg's own default (0) starts one thread per core, in every worker of a pool
        codec.thread_count = max(1, decode_threads)
        codec.thread_type = "AUTO" if decode_threads > 1 else "SLICE"
        try:
            for frame in _decode_needed(container, stream, scan, wanted):
                decoded_index += 1
                index = decoded_index if scan.index_of_pts is None else scan.index_of_pts.get(frame.pts, -1)
                if index in is_wanted:
                    yield index, _to_rgb(frame)
                    n_yielded += 1
                if index >= last_wanted or n_yielded == len(wanted):
                    return
        except av.FFmpegError as err:
            raise _read_error(path, f"decoding broke after {decoded_index + 1} frames: {_ffmpeg_reason(err)}") from err
    if n_yielded < len(wanted):
        raise _read_error(path, f"stream ends early: {n_yielded} of {len(wanted)} wanted frames decoded "
                               f"(the container declares {scan.info.n_frames} frames)")


def _decode_needed(container: "av.container.InputContainer", stream: "av.VideoStream", scan: _Scan,
                   wanted: list[int]) -> Iterator["av.VideoFrame"]:
    """Decoded frames in output order, from only the packets the wanted frames need."""
    codec = stream.codec_context
    is_wanted = set(wanted)
    needed = _needed_packets(scan, wanted)
    position, has_skipped = -1, False
    for packet in container.demux(stream):
        if packet.size:
            position += 1
            if needed is not None and position not in needed:
                has_skipped = True
                continue
        if has_skipped:  # at a clean keyframe: output the frames the decoder holds, then start afresh
            yield from codec.decode(None)
            codec.flush_buffers()
            has_skipped = False
        if scan.index_of_pts is not None and packet.pts is not None and not packet.is_discard:
            # skip_frame is read per packet, so toggling it here skips exactly the unwanted
            # non-reference frames; reference frames are always decoded
            codec.skip_frame = "DEFAULT" if scan.index_of_pts.get(packet.pts, -1) in is_wanted else "NONREF"
        yield from packet.decode()


def _needed_packets(scan: _Scan, wanted: list[int]) -> Optional[set[int]]:
    """Decode positions of the packets the wanted frames need; None: every packet (no timestamps,
    or a wanted frame without a packet, as in a file cut short).

    A wanted frame needs the packets from the last clean keyframe at or before its own packet
    up to it. A keyframe is clean when no packet between it and the next keyframe is shown
    before it: an open GOP's leading frames refer to the GOP before (HEVC CRA, x264 open-gop,
    MPEG-4 part 2 B-frames). The first packet always counts as clean.
    """
    if scan.index_of_pts is None:
        return None
    shown = [-1 if pts is None else scan.index_of_pts.get(pts, -1) for pts, _ in scan.packets]
    position_of = {index: position for position, index in enumerate(shown) if index >= 0}
    if any(index not in position_of for index in wanted):
        return None
    keyframes = [position for position, (_, is_key) in enumerate(scan.packets) if is_key and shown[position] >= 0]
    gop_ends = [*keyframes[1:], len(shown)]
    clean = sorted({0, *(key for key, end in zip(keyframes, gop_ends) if min(shown[key:end]) >= shown[key])})
    needed: set[int] = set()
    for index in wanted:
        end = position_of[index]
        needed.update(range(clean[bisect.bisect_right(clean, end) - 1], end + 1))
    return needed


def _to_rgb(frame: "av.VideoFrame") -> np.ndarray:
    """RGB array of a decoded frame, upright when the file carries a rotation (phone videos)."""
    rgb = frame.to_ndarray(format="rgb24")
    quarter_turns = int(round(frame.rotation / 90)) % 4 if frame.rotation else 0
    # PyAV reports the counterclockwise angle that displays the frame upright
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def _check_not_special(path: Path) -> None:
    """A FIFO, socket or device named like a video would block the decoder forever: refuse it."""
    if _is_special(path):
        raise _read_error(path, "cannot open: not a regular file (a FIFO, socket or device)")


def _is_special(path: Path) -> bool:
    return path.exists() and not path.is_file() and not path.is_dir()  # a folder fails to open by itself


def _opencv_can_open(path: Path) -> bool:
    if _is_special(path):
        return False
    # OpenCV's own FFmpeg prints why it cannot open a file ("moov atom not found") on stderr, in a
    # notebook too; the row's status already says it. OpenCV reads the level when it opens its first video
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", compat.OPENCV_FFMPEG_QUIET)
    capture = cv2.VideoCapture(str(path))
    try:
        return capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) > 0
    finally:
        capture.release()


def _probe_opencv(path: Path) -> VideoInfo:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise _read_error(path, "cannot open (OpenCV)")
        n_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if n_frames <= 0:
            raise _read_error(path, "no frames (OpenCV)")
        return VideoInfo(n_frames, float(capture.get(cv2.CAP_PROP_FPS)),
                         int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        capture.release()


def _read_opencv(path: Path, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Fallback reader: grab() every frame (no colour conversion), retrieve() the wanted ones."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise _read_error(path, "cannot open (OpenCV)")
        is_wanted = set(wanted)
        for index in range(wanted[-1] + 1):
            if not capture.grab():
                raise _read_error(path, f"stream ends early at frame {index} (OpenCV)")
            if index in is_wanted:
                is_ok, bgr = capture.retrieve()
                if not is_ok:
                    raise _read_error(path, f"cannot decode frame {index} (OpenCV)")
                yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
