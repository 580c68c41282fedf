"""What the benchmarks share: finding videos, the machine line, the decode floor, writing results, the torch check."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from dfhelpers.files import json_safe
from dfhelpers.runfolder import VIDEO_SUFFIXES


# the torch side of the references (facenet-pytorch's MTCNN needs torchvision's NMS): the dev extra
# installs them, the product's install (`make venv`, no torch) leaves them out
TORCH_PACKAGES = ("torch", "torchvision", "facenet_pytorch")
DEV_INSTALL = "pip install '.[dev]'"


def require_torch(script: str, needed_for: str) -> None:
    """Exit with one line naming the fix when a package of TORCH_PACKAGES is not installed.

    Looks the packages up without importing them: a script loads torch when it chooses (before
    TensorFlow, or after its worker pool has started), not here.
    """
    missing = [name for name in TORCH_PACKAGES if not _is_installed(name)]
    if missing:
        sys.exit(f"{script}: needs {', '.join(missing)} (not in the product's install) for {needed_for}; "
                 f"install the dev extra in the project folder: {DEV_INSTALL}")


def add_video_arguments(parser: Any) -> None:
    """--recursive, --limit, --min-height and --out, the same in every benchmark."""
    parser.add_argument("--recursive", action="store_true", help="look for videos in sub-folders too")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only N videos, spread evenly over the list sorted by path (first and last included)")
    parser.add_argument("--min-height", type=int, default=0, metavar="PX",
                        help="only videos at least this many pixels high (e.g. 720 for the 720p/1080p ones)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json",
                        help="also write the summary (with the command and the machine line) here")


def find_videos(folder: Path, recursive: bool = False, limit: int | None = None, min_height: int = 0) -> list[Path]:
    """Video files of a folder sorted by path, those at least min_height pixels high; `limit` of them
    spread evenly over that list (a folder sorted by name often groups one kind of video)."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    paths = sorted(p for p in found if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if min_height:
        from dfhelpers import video

        paths = [p for p in paths if _height(p, video) >= min_height]
    if not paths:
        sys.exit(f"{folder}: no {'/'.join(VIDEO_SUFFIXES)} files{' of ' + str(min_height) + ' px or more' if min_height else ''}"
                 f"{'' if recursive else ' (not recursive: pass --recursive for sub-folders)'}")
    if limit is None or limit >= len(paths):
        return paths
    return [paths[round(i * (len(paths) - 1) / max(1, limit - 1))] for i in range(limit)] if limit > 1 else paths[:1]


def machine() -> dict[str, Any]:
    """The machine line: CPU model, cores, load average now (call again at the end), versions."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "load_average_start": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "platform": platform.platform()}


def finish_machine(machine_line: dict[str, Any]) -> dict[str, Any]:
    return {**machine_line, "load_average_end": round(os.getloadavg()[0], 2)}


def print_machine(machine_line: dict[str, Any]) -> None:
    print(f"machine: {machine_line['cpu']}, {machine_line['cores']} cores, load average "
          f"{machine_line['load_average_start']} at start", flush=True)


def decode_floor(paths: list[Path], sampled: dict[str, list[int]], repeats: int) -> dict[str, dict[str, float]]:
    """Per video, median seconds of (a) decoding every frame with PyAV, threads on (the floor of any
    method that looks at every frame) and (b) decoding only the sampled frames with dfhelpers.video
    (the floor of our sampling), each after one warm-up pass (the file in the page cache)."""
    floors = {}
    for path in paths:
        decode_all(path)  # warm-up: page cache, codec start-up
        every = median_seconds(lambda: decode_all(path), repeats)
        sampled_s = median_seconds(lambda: decode_sampled(path, sampled[path.name]), repeats)
        floors[path.name] = {"every_frame_s": every, "sampled_frames_s": sampled_s}
    return floors


def decode_all(path: Path) -> int:
    """Decode every frame to RGB with PyAV, FFmpeg's frame threads on; returns the frame count."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads: FFmpeg's fastest decode
        return sum(1 for frame in container.decode(stream) if frame.to_ndarray(format="rgb24") is not None)


def decode_sampled(path: Path, indices: list[int]) -> int:
    """Decode the sampled frames to RGB as the face stage does (dfhelpers.video.read_frames)."""
    from dfhelpers import video

    return sum(1 for _ in video.read_frames(path, indices))


def median_seconds(work: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def write_result(summary: dict[str, Any], out: Path | None) -> None:
    """Print the summary as the last line; with --out also write it with the command and commit that produced it."""
    # a NaN (the mean of nothing: a baseline run on 0 frames) is written as null: not measured, not 0
    record = json_safe({"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": COMMIT_AT_START,
                        **summary})
    line = json.dumps(record, allow_nan=False)
    print(line, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")


def commit() -> str:
    """The repository's short HEAD commit, or "unknown" outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# the code a benchmark runs is the code it imported: an hour-long run outlives later commits
COMMIT_AT_START = commit()


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def measure_recall(faces: Any, reference: dict[str, dict[int, Any]]) -> dict[str, Any]:
    """Frames and faces where the reference (full-resolution MTCNN) and ours agree, both ways.

    `faces`: our faces, a DataFrame with video, frame, x1, y1, x2, y2; `reference`: per video,
    {sampled frame index: reference boxes (k, 4)}, every sampled frame present (k may be 0).
    """
    import numpy as np

    counts: dict[str, Any] = dict.fromkeys(["frames", "ref_frames", "ours_frames", "missed_frames", "invented_frames",
                                            "ref_faces", "ours_faces", "missed_faces", "invented_faces", "matched",
                                            "agreeing"], 0)
    counts["missed_face_widths_px"] = []  # full-resolution widths of the reference faces we did not find
    by_frame = {key: group[["x1", "y1", "x2", "y2"]].to_numpy(float) for key, group in faces.groupby(["video", "frame"])}
    for name, frames in reference.items():
        for frame_index, ref_boxes in frames.items():
            our_boxes = by_frame.get((name, frame_index), np.zeros((0, 4)))
            _count_frame(counts, ref_boxes, our_boxes)
    return counts


def _count_frame(counts: dict[str, Any], ref_boxes: Any, our_boxes: Any) -> None:
    """Add one frame: faces are paired greedily by IoU (highest first, any overlap, each face once);
    a pair agrees at IoU >= 0.5; a face without a partner is missed (reference) or invented (ours)."""
    has_ref, has_ours = len(ref_boxes) > 0, len(our_boxes) > 0
    counts["frames"] += 1
    counts["ref_frames"] += has_ref
    counts["ours_frames"] += has_ours
    counts["missed_frames"] += has_ref and not has_ours
    counts["invented_frames"] += has_ours and not has_ref
    counts["ref_faces"] += len(ref_boxes)
    counts["ours_faces"] += len(our_boxes)
    overlaps = iou(ref_boxes, our_boxes)
    pairs = _greedy_pairs(overlaps)
    counts["matched"] += len(pairs)
    counts["agreeing"] += sum(int(overlaps[r, o] >= 0.5) for r, o in pairs)
    counts["missed_faces"] += len(ref_boxes) - len(pairs)
    counts["invented_faces"] += len(our_boxes) - len(pairs)
    paired = {r for r, _ in pairs}
    counts["missed_face_widths_px"] += [round(float(b[2] - b[0])) for i, b in enumerate(ref_boxes) if i not in paired]


def _greedy_pairs(overlaps: Any) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    used_ref, used_ours = set(), set()
    for flat in (-overlaps).argsort(axis=None, kind="stable") if overlaps.size else []:
        r, o = divmod(int(flat), overlaps.shape[1])
        if overlaps[r, o] <= 0:
            break
        if r not in used_ref and o not in used_ours:
            pairs.append((r, o))
            used_ref.add(r)
            used_ours.add(o)
    return pairs


def iou(boxes: Any, others: Any) -> Any:
    """(n, m) intersection over union of two sets of x1, y1, x2, y2 boxes."""
    import numpy as np

    boxes, others = np.asarray(boxes, float).reshape(-1, 4), np.asarray(others, float).reshape(-1, 4)
    top_left = np.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area = lambda b: (b[:, 2:] - b[:, :2]).prod(axis=1)  # noqa: E731
    return intersection / (area(boxes)[:, None] + area(others)[None, :] - intersection)


def _is_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a half-removed package
        return False


def _height(path: Path, video: Any) -> int:
    try:
        return video.probe(path).height
    except Exception:  # noqa: BLE001 - an unreadable file is not a benchmark input
        return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class PeakMemory:
    """The largest resident memory of this process and its children, sampled in a thread."""

    def __init__(self, every_s: float = 0.2):
        self.every_s, self.peak_mb, self._stop = every_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.every_s):
            try:
                processes = [me, *me.children(recursive=True)]
                rss = sum(process.memory_info().rss for process in processes if process.is_running())
            except psutil.Error:
                continue
            self.peak_mb = max(self.peak_mb, rss // 2**20)
