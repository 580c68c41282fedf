"""Face stage: dfhelpers.faces against its decode floor and full-resolution MTCNN, on any folder of videos.

Usage:
    .venv/bin/python benchmarks/bench_faces.py VIDEO_DIR [--recursive] [--limit N] [--min-height 720]
        [--repeats R] [--baseline-frames K] [--runtime onnxruntime|torch] [--no-redetect-misses] [--detect-every K]
        [--out FILE.json]

Everything runs in this process tree, in one run, on the same files:

- decode floor: every frame decoded to RGB with PyAV (FFmpeg threads on), and the sampled
  frames alone as our stage reads them (dfhelpers.video.read_frames); one warm-up pass, then
  the median of R passes per video.
- ours, stage: dfhelpers.faces.run_stage with the default faces config on a warm local pool
  (seconds per video = wall time / videos, median of R runs in fresh run folders), and each
  video alone in this process with one detector thread (as one pool worker runs it), median of R.
- baseline with equal work: the same sampled frames, decoded the same way, through
  full-resolution per-frame MTCNN (facenet-pytorch's default thresholds, as our stage; crops
  saved as JPEG, as ours), torch's default threads; one warm-up video, median of R passes.
- as original: the original loop (OpenCV decodes every frame, MTCNN(margin=50, keep_all=True,
  thresholds=(0.9, 0.9, 0.9)) with save_path on each full-resolution frame), timed on the first
  K frames of each video and extrapolated to all of them (said so in the output).
- recall: per sampled frame, whether our stage kept a face and whether the baseline (full
  resolution, default thresholds) found one, both ways; faces matched at IoU >= 0.5 both ways;
  agreement = the share of reference faces in frames where both found faces that one of ours
  overlaps at IoU >= 0.5.

Prints one line per figure and, last, one JSON object (also written by --out, with the command
and the machine line).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

import _common
from dfhelpers import config, extract, facedetect, faces, jpeg, video


def main() -> None:
    args = parse_args()
    _common.require_torch(Path(__file__).name, "its full-resolution baseline (facenet-pytorch's MTCNN)")
    machine = _common.machine()
    _common.print_machine(machine)
    paths = _common.find_videos(args.video_dir, args.recursive, args.limit, args.min_height)
    scratch = Path(tempfile.mkdtemp(prefix="bench_faces_"))
    faces_settings = {"mtcnn_runtime": args.runtime, "redetect_misses": args.redetect_misses,
                      "detect_every": args.detect_every}
    cfg = config.from_dict({"work_dir": str(scratch / "ours_0"), "data_dirs": [], "faces": faces_settings},
                           base_dir=scratch)
    sampled = {p.name: video.sample_indices(video.probe(p).n_frames, cfg.faces) for p in paths}
    print(f"{len(paths)} videos, {describe_sizes(paths)}; {cfg.faces.frames_per_video} sampled frames per video, "
          f"detect_size {cfg.faces.detect_size}, thresholds {cfg.faces.thresholds}, {cfg.faces.workers} workers, "
          f"MTCNN on {cfg.faces.mtcnn_runtime}, redetect_misses {cfg.faces.redetect_misses}, "
          f"detect_every {cfg.faces.detect_every}",
          flush=True)
    floors = _common.decode_floor(paths, sampled, args.repeats)
    stage = run_stage(paths, scratch, args.repeats, faces_settings)
    single = {p.name: one_video_alone(p, cfg.faces, args.repeats) for p in paths}
    baseline = run_baseline(paths, sampled, cfg.faces, scratch / "baseline", args.repeats)
    original = {p.name: run_original(p, scratch / "original", args.baseline_frames) for p in paths}
    recall = _common.measure_recall(stage["crops"], baseline["detections"])
    summary = summarize(paths, floors, stage, single, baseline, original, recall, args, cfg.faces)
    shutil.rmtree(scratch, ignore_errors=True)  # crops of the benchmarked videos stay nowhere
    _common.write_result({**summary, "machine": _common.finish_machine(machine)}, args.out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=3, help="passes of each timed method (median reported)")
    parser.add_argument("--baseline-frames", type=int, default=20, metavar="K",
                        help="the as-original loop runs the first K frames of each video, extrapolated to all")
    parser.add_argument("--runtime", choices=["onnxruntime", "torch"], default=config.FacesConfig().mtcnn_runtime,
                        help="faces.mtcnn_runtime of our stage (the baseline is always facenet-pytorch)")
    parser.add_argument("--redetect-misses", action=argparse.BooleanOptionalAction,
                        default=config.FacesConfig().redetect_misses,
                        help="faces.redetect_misses of our stage (--no-redetect-misses: the detect_size copy only)")
    parser.add_argument("--detect-every", type=int, default=config.FacesConfig().detect_every, metavar="K",
                        help="faces.detect_every of our stage (1: every sampled frame detected in full)")
    _common.add_video_arguments(parser)
    return parser.parse_args()


def describe_sizes(paths: list[Path]) -> str:
    infos = [video.probe(p) for p in paths]
    sizes = pd.Series([f"{i.width}x{i.height}" for i in infos]).value_counts()
    return ", ".join(f"{n} at {size}" for size, n in sizes.items()) + \
        f", {statistics.median(i.n_frames for i in infos):.0f} frames (median)"


def run_stage(paths: list[Path], scratch: Path, repeats: int, faces_settings: dict) -> dict:
    """Our stage with the default faces config and faces_settings on a warm pool: wall time of each of `repeats` runs."""
    videos = pd.DataFrame({"video": [p.name for p in paths], "path": [str(p) for p in paths], "label": "?"})
    walls, cfg = [], None
    with faces.local_executor(config.FacesConfig(**faces_settings)) as pool:
        started = time.perf_counter()
        n_workers = config.FacesConfig(**faces_settings).workers
        list(pool.map(time.sleep, [2.0] * n_workers))  # start every worker, load MTCNN
        warmup_s = time.perf_counter() - started
        for repeat in range(max(1, repeats)):
            cfg = config.from_dict({"work_dir": str(scratch / f"ours_{repeat}"), "data_dirs": [],
                                    "faces": faces_settings}, base_dir=scratch)
            started = time.perf_counter()
            faces.run_stage(cfg, videos, executor=pool)
            walls.append(time.perf_counter() - started)
    worker_peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # pool joined: counted
    return {"walls": walls, "warmup_s": warmup_s, "crops": faces.load_crops(cfg), "statuses": faces.load_status(cfg),
            "worker_peak_mb": worker_peak_mb, "workers": cfg.faces.workers}


def one_video_alone(path: Path, faces_cfg: config.FacesConfig, repeats: int) -> dict:
    """One video through extract_video + JPEG encoding in this process, one detector thread (as a worker)."""
    if faces_cfg.mtcnn_runtime == "torch":
        import torch  # noqa: F401  - loaded first, so torch_num_threads restores the baseline's threads afterwards

    with faces.torch_num_threads(faces_cfg.detector_threads):
        detector = facedetect.FaceDetector(faces_cfg)
        cv2.setNumThreads(1)
        work = lambda: [jpeg.encode_jpeg(c, faces_cfg.jpeg_quality)  # noqa: E731
                        for c in extract.extract_video(path, faces_cfg, detector).crops]
        work()  # warm-up
        cpu_started = time.process_time()
        seconds = _common.median_seconds(work, repeats)
        cpu_s = (time.process_time() - cpu_started) / max(1, repeats)
        cv2.setNumThreads(-1)
    return {"seconds": seconds, "cpu_s": cpu_s}


def run_baseline(paths: list[Path], sampled: dict[str, list[int]], faces_cfg: config.FacesConfig,
                 out_dir: Path, repeats: int) -> dict:
    """The same sampled frames through full-resolution per-frame MTCNN (default thresholds), crops saved."""
    import torch
    from facenet_pytorch import MTCNN  # here, not at the top: spawned stage workers re-import this file

    mtcnn = MTCNN(image_size=faces_cfg.crop_size, margin=faces_cfg.margin, keep_all=True, device="cpu")
    _baseline_video(mtcnn, paths[0], sampled[paths[0].name][:4], out_dir)  # warm-up
    seconds, detections = {}, {}
    for path in paths:
        times = []
        for _ in range(max(1, repeats)):
            started = time.perf_counter()
            detections[path.name] = _baseline_video(mtcnn, path, sampled[path.name], out_dir)
            times.append(time.perf_counter() - started)
        seconds[path.name] = statistics.median(times)
    return {"seconds": seconds, "detections": detections, "threads": torch.get_num_threads()}


def _baseline_video(mtcnn: MTCNN, path: Path, indices: list[int], out_dir: Path) -> dict[int, np.ndarray]:
    """{frame index: boxes (k, 4)} of full-resolution MTCNN on the sampled frames; crops saved as JPEG."""
    boxes_by_frame = {}
    for frame_index, frame in video.read_frames(path, indices):
        boxes, probs = mtcnn.detect(frame)
        boxes_by_frame[frame_index] = np.zeros((0, 4)) if boxes is None else np.asarray(boxes.tolist(), float)
        if boxes is not None:
            mtcnn.extract(frame, boxes, str(out_dir / path.stem / f"{frame_index}.jpg"))
    return boxes_by_frame


def run_original(path: Path, out_dir: Path, max_frames: int) -> dict:
    """The original loop: OpenCV reads every frame, MTCNN detects and saves faces at full resolution."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(margin=50, keep_all=True, thresholds=[0.9, 0.9, 0.9], device="cpu")
    capture = cv2.VideoCapture(str(path))
    n_total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    n_frames = 0
    started = time.perf_counter()
    while n_frames < max_frames:
        is_read, bgr = capture.read()
        if not is_read:
            break
        image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        mtcnn(image, save_path=str(out_dir / path.stem / f"{n_frames}.jpg"))
        n_frames += 1
    seconds = time.perf_counter() - started
    capture.release()
    return {"seconds": seconds * n_total / max(1, n_frames), "frames": n_frames, "n_total": n_total}


def summarize(paths, floors, stage, single, baseline, original, recall, args, faces_cfg) -> dict:
    """Print one line per figure; return the JSON summary."""
    n = len(paths)
    every = _common.mean(f["every_frame_s"] for f in floors.values())
    sampled_s = _common.mean(f["sampled_frames_s"] for f in floors.values())
    stage_s = statistics.median(stage["walls"]) / n
    single_s = _common.mean(s["seconds"] for s in single.values())
    single_spread = [statistics.median(s["seconds"] for s in single.values()),
                     min(s["seconds"] for s in single.values()), max(s["seconds"] for s in single.values())]
    own_ratio = _common.mean(single[p.name]["seconds"] / floors[p.name]["every_frame_s"] for p in paths)
    baseline_s = _common.mean(baseline["seconds"].values())
    original_s = _common.mean(o["seconds"] for o in original.values())
    statuses = stage["statuses"]["status"].str.split(":").str[0].value_counts().to_dict()
    print(f"decode floor: every frame {every:.2f} s/video (PyAV, threads on), the sampled frames alone "
          f"{sampled_s:.2f} s/video (median of {args.repeats} per video, mean over {n})")
    print(f"ours, stage: {stage_s:.2f} s/video with {stage['workers']} workers (median of {len(stage['walls'])} runs: "
          f"{', '.join(f'{w:.1f}' for w in stage['walls'])} s) = {stage_s / every:.2f}x the every-frame floor, "
          f"{stage_s / sampled_s:.2f}x the sampled-frames floor; statuses {statuses}")
    print(f"ours, one video in one worker: {single_s:.2f} s/video (CPU {_common.mean(s['cpu_s'] for s in single.values()):.2f} s)"
          f" = {own_ratio:.2f}x its own every-frame floor (mean over videos); median {single_spread[0]:.2f} s, "
          f"{single_spread[1]:.2f}-{single_spread[2]:.2f} s over videos")
    print(f"baseline, the same sampled frames through full-resolution MTCNN ({baseline['threads']} torch threads): "
          f"{baseline_s:.2f} s/video = {baseline_s / stage_s:.1f}x our stage, {baseline_s / single_s:.1f}x one video alone")
    if args.baseline_frames:
        print(f"as original, every frame at full resolution (extrapolated from {args.baseline_frames} frames): "
              f"{original_s:.1f} s/video = {original_s / stage_s:.0f}x our stage")
    frame_recall = 1 - recall["missed_frames"] / recall["ref_frames"] if recall["ref_frames"] else None
    agreement = recall["agreeing"] / recall["matched"] if recall["matched"] else None
    print(f"recall: full-resolution MTCNN finds a face on {recall['ref_frames']} of {recall['frames']} sampled frames; "
          f"we miss {recall['missed_frames']} of them ({_pct(frame_recall)} recall) and find one on "
          f"{recall['invented_frames']} frames where it finds none; faces: reference {recall['ref_faces']}, ours "
          f"{recall['ours_faces']}, missed {recall['missed_faces']}, invented {recall['invented_faces']}; agreement "
          f"(IoU >= 0.5) on matched faces {_pct(agreement)}; worker peak RSS {stage['worker_peak_mb']:.0f} MB")
    return {"benchmark": "bench_faces", "videos": n, "sizes": describe_sizes(paths),
            "frames_per_video": faces_cfg.frames_per_video, "detect_size": faces_cfg.detect_size,
            "thresholds": list(faces_cfg.thresholds), "workers": stage["workers"], "repeats": args.repeats,
            "mtcnn_runtime": faces_cfg.mtcnn_runtime, "redetect_misses": faces_cfg.redetect_misses,
            "detect_every": faces_cfg.detect_every,
            "floor_every_frame_s_per_video": round(every, 3), "floor_sampled_frames_s_per_video": round(sampled_s, 3),
            "ours_stage_s_per_video": round(stage_s, 3), "ours_stage_vs_every_frame_floor": round(stage_s / every, 2),
            "ours_stage_vs_sampled_floor": round(stage_s / sampled_s, 2),
            "ours_one_video_one_worker_s": round(single_s, 3), "ours_one_video_vs_own_floor": round(own_ratio, 2),
            "ours_one_video_one_worker_s_median_min_max": [round(x, 3) for x in single_spread],
            "baseline_same_frames_s_per_video": round(baseline_s, 2), "speedup_vs_baseline": round(baseline_s / stage_s, 1),
            "original_every_frame_s_per_video": round(original_s, 1), "original_extrapolated_from_frames": args.baseline_frames,
            "speedup_vs_original": round(original_s / stage_s, 1),
            "frame_recall": None if frame_recall is None else round(frame_recall, 4),
            "agreement_iou_0_5": None if agreement is None else round(agreement, 4), "recall_counts": recall,
            "statuses": statuses, "worker_peak_rss_mb": round(stage["worker_peak_mb"])}


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"


if __name__ == "__main__":
    main()
