"""Video scoring: dfhelpers.engine against its decode floor and full-resolution MTCNN, same videos, same model.

    .venv/bin/python benchmarks/bench_inference.py VIDEO_DIR --model M.keras [--build-model mobilenet_v2]
        [--recursive] [--limit N] [--min-height 720] [--repeats R] [--baseline-frames K] [--out FILE.json]

Everything runs in this process, in one run, on the same files and the same model object:

- decode floor: every frame decoded to RGB with PyAV (FFmpeg threads on), and the sampled
  frames alone as our scorer reads them; one warm-up pass, then the median of R per video.
- ours: dfhelpers.engine (the face stage's frame sampler and downscaled batched MTCNN, the
  training crop geometry, one batched model call per video), each video alone as `dfdetect
  predict VIDEO` scores it (score_paths with one path: its decoder gets every core; median of R
  after a warm-up video) and the whole folder as `dfdetect predict DIR` runs it (score_paths,
  score.threads videos in flight, median of R passes).
- baseline with equal work: the same sampled frames, decoded the same way, through
  full-resolution per-frame MTCNN (facenet-pytorch's default thresholds, as ours), then the
  same model once on all of the video's faces: only the detection differs; median of R.
- as original: the original notebook's loop (OpenCV decodes every frame, MTCNN(margin=50,
  keep_all=False, post_process=False, thresholds=(0.9, 0.9, 0.9)) on each full-resolution
  frame, one model.predict per face), timed on the first K frames and extrapolated.
- recall: per sampled frame, whether we kept a face and whether the baseline found one, both
  ways, and the agreement (IoU >= 0.5) of matched faces.

- model call: the same crops of each video through the model on the runtime the engine chose
  (onnxruntime when M has an up-to-date M.onnx: engine.choose_model), on it with score.mirror
  (each crop and its mirror) and through Keras (a traced tf.function, as the engine's
  fallback), median of R.

Speed does not depend on the weights, so --build-model builds the model (weights=None, random)
when M does not exist; the output says so. Imports and model loading are reported on their
own lines (benchmarks/bench_startup.py times them from the shell). One line per figure, then
one JSON object (also written by --out, with the command and the machine line).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import _common


def main() -> int:
    args = _parser().parse_args()
    _common.require_torch(Path(__file__).name, "its same-frames and as-original baselines (facenet-pytorch's MTCNN)")
    machine = _common.machine()
    _common.print_machine(machine)
    from dfhelpers.config import FacesConfig, ScoreConfig

    faces_cfg, score_cfg = FacesConfig(), ScoreConfig()
    _load_torch_first(faces_cfg.detector_threads)
    from dfhelpers import engine, video

    paths = _common.find_videos(args.video_dir, args.recursive, args.limit, args.min_height)
    weights_note = _ensure_model(Path(args.model), args.build_model, faces_cfg.crop_size)
    scorer, load_s = _timed(lambda: engine.VideoScorer(Path(args.model), faces_cfg, score_cfg).load())
    print(f"model: {args.model} ({weights_note}) on {scorer.choice.runtime} ({scorer.choice.path.name}); imports + "
          f"MTCNN + model load: {load_s:.1f} s (not in any per-video time); {len(paths)} videos", flush=True)
    sampled = {p.name: video.sample_indices(video.probe(p).n_frames, faces_cfg) for p in paths}
    floors = _common.decode_floor(paths, sampled, args.repeats)
    baseline = _SameFrames(scorer, args.baseline_threads)
    _timed(lambda: (scorer.score(paths[0]), baseline.score(paths[0], sampled[paths[0].name][:4])))  # warm-up
    ours = {p.name: _ours_alone(scorer, p, args.repeats) for p in paths}
    same_frames = {p.name: baseline.timed(p, sampled[p.name], args.repeats) for p in paths}
    folder_runs = [_timed(lambda: list(engine.score_paths(paths, scorer, progress=False)))[1] / len(paths)
                   for _ in range(max(1, args.repeats))]
    folder_s = statistics.median(folder_runs)
    model_calls = _model_calls(scorer, [ours[p.name]["scored"].crops for p in paths], args.repeats)
    original = _OriginalLoop(scorer.model, args.baseline_frames)
    as_original = {p.name: original.score(p) for p in paths}
    our_faces = _faces_table(ours)
    recall = _common.measure_recall(our_faces, {name: b["detections"] for name, b in same_frames.items()})
    summary = _summarize(paths, floors, ours, folder_s, same_frames, as_original, recall, load_s, args,
                         faces_cfg, score_cfg, weights_note)
    print(f"ours, spread of repeats: whole folder {min(folder_runs):.2f}-{max(folder_runs):.2f} s/video; one video "
          + ", ".join(f"{name} {min(o['runs']):.2f}-{max(o['runs']):.2f} s" for name, o in ours.items()))
    print(f"model call per video ({model_calls['faces_per_video']:.0f} faces, median of {args.repeats}): "
          f"{scorer.choice.runtime} {model_calls['engine_s'] * 1000:.0f} ms, keras {model_calls['keras_s'] * 1000:.0f} ms; "
          f"max |P(FAKE) difference| {model_calls['max_difference']:.1e}; with score.mirror "
          f"{model_calls['mirror_s'] * 1000:.0f} ms = +{(model_calls['mirror_s'] - model_calls['engine_s']) / folder_s:.1%} "
          f"of the folder figure", flush=True)
    summary.update({"runtime": scorer.choice.runtime, "model_call": model_calls,
                    "ours_folder_min_max_s_per_video": [round(min(folder_runs), 3), round(max(folder_runs), 3)],
                    "ours_one_video_min_max_s": {name: [round(min(o["runs"]), 3), round(max(o["runs"]), 3)]
                                                 for name, o in ours.items()}})
    _common.write_result({**summary, "machine": _common.finish_machine(machine)}, args.out)
    return 0


class _SameFrames:
    """Equal work: our sampled frames through full-resolution per-frame MTCNN, then the same model."""

    def __init__(self, scorer, threads: int | None):
        from facenet_pytorch import MTCNN

        self.scorer = scorer
        self.threads = threads
        cfg = scorer.faces_cfg
        self.mtcnn = MTCNN(image_size=cfg.crop_size, margin=cfg.margin, keep_all=True, post_process=False, device="cpu")

    def timed(self, path: Path, indices: list[int], repeats: int) -> dict:
        """Median seconds of `repeats` passes, the reference boxes per frame, the faces found."""
        times = []
        for _ in range(max(1, repeats)):
            started = time.perf_counter()
            detections = self.score(path, indices)
            times.append(time.perf_counter() - started)
        return {"seconds": statistics.median(times), "detections": detections}

    def score(self, path: Path, indices: list[int]) -> dict[int, np.ndarray]:
        import torch

        from dfhelpers import video

        ours_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads or ours_threads)
        try:
            boxes_by_frame, crops = {}, []
            for frame_index, frame in video.read_frames(path, indices):
                boxes, _ = self.mtcnn.detect(frame)
                boxes_by_frame[frame_index] = np.zeros((0, 4)) if boxes is None else np.asarray(boxes.tolist(), float)
                if boxes is not None:
                    crops.extend(face.permute(1, 2, 0).numpy() for face in self.mtcnn.extract(frame, boxes, None))
            if crops:
                self.scorer.predict(np.clip(np.stack(crops), 0, 255).astype(np.uint8))
            return boxes_by_frame
        finally:
            torch.set_num_threads(ours_threads)


class _OriginalLoop:
    """The original notebook's inference loop, kept as it was apart from the model's input range."""

    def __init__(self, classifier, max_frames: int):
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(margin=50, keep_all=False, post_process=False, thresholds=[0.9, 0.9, 0.9], device="cpu")
        self.model = classifier
        self.max_frames = max_frames
        size = int(self.model.input_shape[1])
        self.model.predict(np.zeros((1, size, size, 3), dtype=np.float32), verbose=0)  # traced once, as the original

    def score(self, path: Path) -> dict:
        """Seconds for the whole video (extrapolated from the first max_frames frames)."""
        import cv2

        capture = cv2.VideoCapture(str(path))
        n_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        frames_run = 0
        started = time.perf_counter()
        while frames_run < min(self.max_frames, n_frames):
            is_read, bgr = capture.read()
            if not is_read:
                break
            frames_run += 1
            face = self.mtcnn(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))  # full resolution, every frame
            if face is not None:  # (3, 160, 160) 0..255; the contract's model divides by 255 inside
                self.model.predict(face.permute(1, 2, 0).numpy()[None].astype(np.float32), verbose=0)
        seconds = time.perf_counter() - started
        capture.release()
        return {"seconds": seconds * n_frames / max(1, frames_run), "frames_run": frames_run, "n_frames": n_frames}


def _ours_alone(scorer, path: Path, repeats: int) -> dict:
    """One video scored as `dfdetect predict VIDEO` scores it: score_paths, its decoder on every core."""
    from dfhelpers import engine

    runs = [_timed(lambda: next(engine.score_paths([path], scorer, progress=False))) for _ in range(max(1, repeats))]
    return {"seconds": statistics.median(seconds for _, seconds in runs), "scored": runs[0][0],
            "runs": [seconds for _, seconds in runs]}


def _model_calls(scorer, crops_per_video: list[np.ndarray], repeats: int) -> dict:
    """Seconds per video of the engine's model call (without and with score.mirror) and of Keras' on the same
    crops, and the largest difference of the engine's and Keras' scores."""
    import dataclasses
    import tempfile

    from dfhelpers import engine

    with tempfile.TemporaryDirectory(prefix="bench_inference_") as folder:  # a copy without a sidecar: Keras
        keras_copy = Path(folder) / "keras_only.keras"
        keras_copy.write_bytes(scorer.choice.keras_path.read_bytes())
        keras_scorer = engine.VideoScorer(keras_copy, scorer.faces_cfg, scorer.score_cfg).load()
    mirrored = engine.VideoScorer(scorer.model_path, scorer.faces_cfg,
                                  dataclasses.replace(scorer.score_cfg, mirror=True)).load()
    crops_per_video = [crops for crops in crops_per_video if len(crops)]
    timings = {}
    for name, runner in (("engine_s", scorer), ("mirror_s", mirrored), ("keras_s", keras_scorer)):
        runner.predict(crops_per_video[0])  # warm-up
        timings[name] = statistics.median(_timed(lambda: [runner.predict(crops) for crops in crops_per_video])[1]
                                          for _ in range(max(1, repeats))) / len(crops_per_video)
    difference = max(float(np.abs(scorer.predict(crops) - keras_scorer.predict(crops)).max()) for crops in crops_per_video)
    return {**{name: round(value, 4) for name, value in timings.items()}, "max_difference": difference,
            "faces_per_video": float(np.mean([len(crops) for crops in crops_per_video]))}


def _faces_table(ours: dict):
    import pandas as pd

    tables = [o["scored"].faces.assign(video=name) for name, o in ours.items()]
    return pd.concat(tables, ignore_index=True)


def _summarize(paths, floors, ours, folder_s, same_frames, as_original, recall, load_s, args, faces_cfg, score_cfg,
               weights_note) -> dict:
    every = _common.mean(f["every_frame_s"] for f in floors.values())
    sampled_s = _common.mean(f["sampled_frames_s"] for f in floors.values())
    alone = _common.mean(o["seconds"] for o in ours.values())
    own_ratio = _common.mean(ours[p.name]["seconds"] / floors[p.name]["every_frame_s"] for p in paths)
    baseline_s = _common.mean(b["seconds"] for b in same_frames.values())
    original_s = _common.mean(o["seconds"] for o in as_original.values())
    frame_recall = 1 - recall["missed_frames"] / recall["ref_frames"] if recall["ref_frames"] else None
    agreement = recall["agreeing"] / recall["matched"] if recall["matched"] else None
    statuses = {o["scored"].status.split(":")[0] for o in ours.values()}
    print(f"decode floor: every frame {every:.2f} s/video (PyAV, threads on), the sampled frames alone "
          f"{sampled_s:.2f} s/video (median of {args.repeats} per video, mean over {len(paths)})")
    print(f"ours, whole folder ({score_cfg.threads} videos in flight): {folder_s:.2f} s/video "
          f"= {folder_s / every:.2f}x the every-frame floor, {folder_s / sampled_s:.2f}x the sampled-frames floor")
    print(f"ours, one video alone: {alone:.2f} s/video (median of {args.repeats}) = {own_ratio:.2f}x its own "
          f"every-frame floor (mean over videos); statuses {sorted(statuses)}")
    print(f"baseline, the same sampled frames through full-resolution MTCNN, then the same model: {baseline_s:.2f} s/video "
          f"= {baseline_s / alone:.1f}x one video alone, {baseline_s / folder_s:.1f}x the folder figure")
    if args.baseline_frames:
        print(f"as original, every frame at full resolution, one model.predict per face (extrapolated from "
              f"{args.baseline_frames} frames): {original_s:.1f} s/video = {original_s / folder_s:.0f}x the folder figure")
    print(f"recall: full-resolution MTCNN finds a face on {recall['ref_frames']} of {recall['frames']} sampled frames; "
          f"we miss {recall['missed_frames']} ({_pct(frame_recall)} recall) and find one on {recall['invented_frames']} "
          f"where it finds none; agreement (IoU >= 0.5) on matched faces {_pct(agreement)}")
    return {"benchmark": "bench_inference", "videos": len(paths), "frames_per_video": faces_cfg.frames_per_video,
            "detect_size": faces_cfg.detect_size, "thresholds": list(faces_cfg.thresholds), "threads": score_cfg.threads,
            "detector_threads": faces_cfg.detector_threads, "repeats": args.repeats, "model_weights": weights_note,
            "model_load_s": round(load_s, 2),
            "floor_every_frame_s_per_video": round(every, 3), "floor_sampled_frames_s_per_video": round(sampled_s, 3),
            "ours_folder_s_per_video": round(folder_s, 3), "ours_folder_vs_every_frame_floor": round(folder_s / every, 2),
            "ours_one_video_s": round(alone, 3), "ours_one_video_vs_own_floor": round(own_ratio, 2),
            "baseline_same_frames_s_per_video": round(baseline_s, 2),
            "speedup_vs_baseline_one_video": round(baseline_s / alone, 1),
            "original_every_frame_s_per_video": round(original_s, 1),
            "original_extrapolated_from_frames": args.baseline_frames,
            "speedup_vs_original_folder": round(original_s / folder_s, 1),
            "frame_recall": None if frame_recall is None else round(frame_recall, 4),
            "agreement_iou_0_5": None if agreement is None else round(agreement, 4), "recall_counts": recall}


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"


def _ensure_model(model_path: Path, build_backbone: str | None, crop_size: int) -> str:
    """'as given' for an existing model; else build one per the model contract (random weights)."""
    if model_path.is_file():
        return "as given"
    if build_backbone is None:
        sys.exit(f"{model_path}: not found; pass a trained model or --build-model mobilenet_v2")
    from dfhelpers import model
    from dfhelpers.config import TrainConfig

    classifier = model.build(TrainConfig(backbone=build_backbone, weights=None, image_size=crop_size), crop_size)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    classifier.save(model_path)
    return f"{build_backbone}, weights=None (random): built here, speed does not depend on the weights"


def _load_torch_first(n_threads: int) -> None:
    """torch (with Triton) before TensorFlow: the other order segfaults in this environment.

    With n_threads (faces.detector_threads) threads, as the face detector sets them for itself (spin-waiting
    OpenMP threads made detection 5x slower on a busy 2-core machine).
    """
    import torch
    import torchvision.ops  # noqa: F401

    torch.set_num_threads(max(1, n_threads))


def _timed(work):
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video_dir", type=Path)
    parser.add_argument("--model", required=True, help="a .keras model per the model contract")
    parser.add_argument("--build-model", metavar="BACKBONE", default=None,
                        help="build and save this backbone (weights=None) to --model when it does not exist")
    parser.add_argument("--baseline-frames", type=int, default=20, metavar="K",
                        help="the as-original loop runs the first K frames of each video, extrapolated to all")
    parser.add_argument("--baseline-threads", type=int, default=None, metavar="N",
                        help="torch threads for the same-frames baseline (default: the same as ours)")
    parser.add_argument("--repeats", type=int, default=3, help="passes of each timed method (median reported)")
    _common.add_video_arguments(parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())
