"""Face stage: the original per-frame full-resolution MTCNN loop vs dfhelpers.faces.run_stage.

Usage:
    .venv/bin/python benchmarks/bench_faces.py VIDEO_DIR [--baseline-frames K] [--repeats R]

Both run in this process tree on the same videos: (a) the original loop, OpenCV decoding every
frame and MTCNN(margin=50, keep_all=True, thresholds=[.9, .9, .9]) on each full-resolution frame
with save_path, torch's default threads (here in the main process); (b) our stage with the
default faces config (a warm local process pool), median of R runs in fresh run folders.
Agreement: on the frames our stage samples, the share of faces that full-resolution MTCNN
finds that our stage also finds (IoU >= 0.5). Peak memory: the largest RSS of any pool worker.
Prints one line per video and, last, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from facenet_pytorch import MTCNN
from PIL import Image

from dfhelpers import config, faces, video

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def main() -> None:
    args = parse_args()
    paths = sorted(p for p in Path(args.video_dir).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)[: args.max_videos]
    if not paths:
        sys.exit(f"{args.video_dir}: no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) found")
    videos = pd.DataFrame({"video": [p.name for p in paths], "path": [str(p) for p in paths], "label": "?"})
    scratch = Path(tempfile.mkdtemp(prefix="bench_faces_"))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
          f"torch {torch.__version__}, {len(paths)} videos; baseline torch threads "
          f"{args.baseline_threads or torch.get_num_threads()}", flush=True)
    ours = run_ours(videos, scratch, args.repeats)
    ours["cpu"] = {p.name: ours_cpu_seconds(p, ours["cfg"]) for p in paths}
    if args.skip_baseline:
        report_ours(paths, ours)
        return
    if args.baseline_threads:
        torch.set_num_threads(args.baseline_threads)
    baseline = {p.name: run_baseline(p, scratch / "baseline", args.baseline_frames) for p in paths}
    agreement = {p.name: measure_agreement(p, ours["crops"], ours["cfg"]) for p in paths}
    report(paths, ours, baseline, agreement)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video_dir")
    parser.add_argument("--baseline-frames", type=int, default=None,
                        help="time the original loop on the first K frames of each video and extrapolate")
    parser.add_argument("--repeats", type=int, default=3, help="runs of our stage (median reported)")
    parser.add_argument("--baseline-threads", type=int, default=None,
                        help="torch threads for the baseline (default: torch's, all cores, as the original)")
    parser.add_argument("--max-videos", type=int, default=None)
    parser.add_argument("--skip-baseline", action="store_true",
                        help="quick check: time our stage only (no baseline, no agreement, no ratio)")
    return parser.parse_args()


def run_ours(videos: pd.DataFrame, scratch: Path, repeats: int) -> dict:
    """Our stage with the default faces config on a warm pool: median wall time of `repeats` runs."""
    cfg = config.from_dict({"work_dir": str(scratch / "ours_0"), "data_dirs": []}, base_dir=scratch)
    walls, statuses = [], None
    started = time.perf_counter()
    with faces.local_executor(cfg.faces) as pool:
        list(pool.map(time.sleep, [2.0] * cfg.faces.workers))  # start every worker and load MTCNN
        warmup_s = time.perf_counter() - started
        for repeat in range(repeats):
            run_cfg = config.from_dict({"work_dir": str(scratch / f"ours_{repeat}"), "data_dirs": []}, base_dir=scratch)
            started = time.perf_counter()
            statuses = faces.run_stage(run_cfg, videos, executor=pool)
            walls.append(time.perf_counter() - started)
    worker_peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # pool joined: counted
    return {"cfg": cfg, "walls": walls, "warmup_s": warmup_s, "statuses": statuses.set_index("video"),
            "crops": faces.load_crops(cfg), "worker_peak_mb": worker_peak_mb}


def ours_cpu_seconds(path: Path, cfg: config.Config) -> float:
    """CPU seconds of one video through our per-video work (extract, encode crops) on one thread.

    Unlike wall time, CPU time barely moves when other jobs share the cores.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(cfg.faces.torch_threads)
    detector = faces.FaceDetector(cfg.faces)
    started = time.process_time()
    result = faces.extract_video(path, cfg.faces, detector)
    for crop in result.crops:
        faces.encode_jpeg(crop, cfg.faces.jpeg_quality)
    seconds = time.process_time() - started
    torch.set_num_threads(previous)
    return seconds


def run_baseline(path: Path, out_dir: Path, max_frames: int | None) -> dict:
    """The original loop: OpenCV reads every frame, MTCNN detects and saves faces at full resolution."""
    mtcnn = MTCNN(margin=50, keep_all=True, thresholds=[0.9, 0.9, 0.9], device="cpu")
    capture = cv2.VideoCapture(str(path))
    n_total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    (out_dir / path.stem).mkdir(parents=True, exist_ok=True)
    n_frames = n_faces = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    while max_frames is None or n_frames < max_frames:
        is_read, bgr = capture.read()
        if not is_read:
            break
        image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        found = mtcnn(image, save_path=str(out_dir / path.stem / f"{n_frames}.jpg"))
        n_faces += 0 if found is None else len(found)
        n_frames += 1
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    capture.release()
    scale = n_total / max(1, n_frames)  # 1 unless extrapolated
    return {"seconds": seconds * scale, "cpu_seconds": cpu_seconds * scale, "frames": n_frames, "faces": n_faces, "extrapolated": n_frames < n_total, "n_total": n_total}


def measure_agreement(path: Path, crops: pd.DataFrame, cfg: config.Config) -> dict:
    """Faces full-resolution MTCNN finds on our sampled frames, and how many of them we also found."""
    mtcnn = MTCNN(keep_all=True, thresholds=list(cfg.faces.thresholds), min_face_size=cfg.faces.min_face_size)
    ours = crops[crops["video"] == path.name]
    n_reference = n_matched = 0
    indices = video.sample_indices(video.probe(path).n_frames, cfg.faces)
    for frame_index, frame in video.read_frames(path, indices):
        boxes, probs = mtcnn.detect(frame)
        if boxes is None:
            continue
        reference = boxes[np.asarray(probs, dtype=float) >= cfg.faces.min_face_prob]
        our_boxes = ours.loc[ours["frame"] == frame_index, ["x1", "y1", "x2", "y2"]].to_numpy(dtype=float)
        overlaps = iou(reference, our_boxes)
        n_reference += len(reference)
        n_matched += int((overlaps.max(axis=1) >= 0.5).sum()) if our_boxes.size else 0
    return {"reference": n_reference, "matched": n_matched}


def iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    boxes, others = np.asarray(boxes, float).reshape(-1, 4), np.asarray(others, float).reshape(-1, 4)
    top_left = np.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area = lambda b: (b[:, 2:] - b[:, :2]).prod(axis=1)  # noqa: E731
    return intersection / (area(boxes)[:, None] + area(others)[None, :] - intersection)


def report(paths: list[Path], ours: dict, baseline: dict, agreement: dict) -> None:
    ours_per_video = statistics.median(ours["walls"]) / len(paths)
    for path in paths:
        status, base, agree = ours["statuses"].loc[path.name], baseline[path.name], agreement[path.name]
        how = f"extrapolated from {base['frames']} of {base['n_total']} frames" if base["extrapolated"] else "all frames"
        share = f"{agree['matched'] / agree['reference']:.1%}" if agree["reference"] else "n/a"
        print(f"{path.name}: baseline {base['seconds']:.1f} s ({how}, {base['faces']} faces), "
              f"ours {status['seconds']:.2f} s in one worker ({base['seconds'] / status['seconds']:.0f}x), "
              f"{status['n_faces']} faces on {status['frames_read']} frames [{status['status']}], "
              f"agreement {share} ({agree['matched']}/{agree['reference']}); CPU s: baseline "
              f"{base['cpu_seconds']:.1f}, ours {ours['cpu'][path.name]:.2f} ({base['cpu_seconds'] / ours['cpu'][path.name]:.0f}x)")
    baseline_per_video = statistics.median(b["seconds"] for b in baseline.values())
    n_reference = sum(a["reference"] for a in agreement.values())
    print_stage_line(paths, ours)
    print(json.dumps({
        "videos": len(paths), "baseline_s_per_video": round(baseline_per_video, 2),
        "ours_s_per_video": round(ours_per_video, 3), "speedup": round(baseline_per_video / ours_per_video, 1),
        "agreement": round(sum(a["matched"] for a in agreement.values()) / n_reference, 4) if n_reference else None,
        "peak_rss_mb": round(ours["worker_peak_mb"]),
        "baseline_extrapolated": any(b["extrapolated"] for b in baseline.values()),
        "baseline_cpu_s_per_video": round(statistics.median(b["cpu_seconds"] for b in baseline.values()), 2),
        "ours_cpu_s_per_video": round(statistics.median(ours["cpu"].values()), 3),
        "load_average": round(os.getloadavg()[0], 2)}))


def report_ours(paths: list[Path], ours: dict) -> None:
    for path in paths:
        status = ours["statuses"].loc[path.name]
        print(f"{path.name}: ours {status['seconds']:.2f} s in one worker, CPU {ours['cpu'][path.name]:.2f} s, "
              f"{status['n_faces']} faces on {status['frames_read']} frames [{status['status']}]")
    print_stage_line(paths, ours)
    print(json.dumps({"videos": len(paths), "ours_s_per_video": round(statistics.median(ours["walls"]) / len(paths), 3),
                      "ours_cpu_s_per_video": round(statistics.median(ours["cpu"].values()), 3),
                      "peak_rss_mb": round(ours["worker_peak_mb"]), "load_average": round(os.getloadavg()[0], 2)}))


def print_stage_line(paths: list[Path], ours: dict) -> None:
    print(f"ours: stage wall {', '.join(f'{w:.2f}' for w in ours['walls'])} s for {len(paths)} videos "
          f"({statistics.median(ours['walls']) / len(paths):.2f} s/video, median of {len(ours['walls'])}); "
          f"pool start-up and MTCNN load {ours['warmup_s']:.1f} s once; load average {os.getloadavg()[0]:.2f} "
          f"at end; this process peaked at {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
