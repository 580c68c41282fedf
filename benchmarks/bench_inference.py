"""Video scoring speed: the original per-frame loop vs dfhelpers.engine, same videos, same model, one process.

    .venv/bin/python benchmarks/bench_inference.py VIDEO_DIR --model M.keras [--build-model mobilenet_v2]
        [--baseline-frames K] [--limit N] [--repeats R]

(a) the original loop: every frame decoded, MTCNN(margin=50, keep_all=False, post_process=False,
    thresholds=[.9, .9, .9]) on the full-resolution frame, one `model.predict` per face, the
    original trimmed mean. With --baseline-frames K only the first K frames are run and the time
    is scaled to the whole video (said so in every line and in the summary).
(b) dfhelpers.engine: the face stage's frame sampler and downscaled batched MTCNN, the training
    crop geometry, one batched model call per video, the configured aggregation. Timed per video
    alone (VideoScorer.score) and over the whole folder (score_paths, as `dfdetect predict DIR`
    and notebook 05 run it, score.threads videos in flight); the summary's ours_s_per_video is the
    folder figure, ours_single_video_s the other.

Speed does not depend on the weights, so --build-model builds the model (weights=None, random)
when M does not exist; the output says so. Interpreter start-up, imports and model/MTCNN loading
are reported on their own lines, never inside the per-video times. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

PROCESS_STARTED = time.time()  # psutil's create_time gives the true start; this is the fallback

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")


def main() -> int:
    args = _parser().parse_args()
    startup_s = _seconds_since_process_start()
    from dfhelpers.config import FacesConfig, ScoreConfig

    faces_cfg = FacesConfig(frames_per_video=args.frames)
    score_cfg = ScoreConfig()
    videos = sorted(p for p in Path(args.video_dir).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)[: args.limit]
    if not videos:
        print(f"{args.video_dir}: no video files", file=sys.stderr)
        return 2
    weights_note = _ensure_model(Path(args.model), args.build_model, faces_cfg.crop_size)
    print(f"machine: {platform.machine()} {os.cpu_count()} CPU cores, {platform.platform()}; python {platform.python_version()}")
    print(f"interpreter start: {startup_s:.1f} s (not in any per-video time)")
    print(f"model: {args.model} ({weights_note})")
    scorer, load_s = _load_ours(Path(args.model), faces_cfg, score_cfg)
    baseline = _OriginalLoop(scorer._model, args.baseline_frames, args.baseline_threads)  # the same model object
    print(f"torch/TensorFlow imports + model + MTCNN load: {load_s:.1f} s; the original's MTCNN: "
          f"{baseline.load_s:.1f} s (neither in per-video times)")
    print(f"torch threads: ours {faces_cfg.torch_threads} (faces.torch_threads), original "
          f"{args.baseline_threads or faces_cfg.torch_threads}{'' if args.baseline_threads else ' (the same)'}")
    warmup_s = _timed(lambda: (scorer.score(videos[0]), baseline.warm_up()))[1]
    print(f"warm-up (one video through ours, one model.predict of the original): {warmup_s:.1f} s, not counted")
    rows = [_bench_video(path, scorer, baseline, args.repeats) for path in videos]
    folder_s = _folder_seconds(videos, scorer, args.repeats)
    print(f"whole folder as `dfdetect predict DIR` runs it ({score_cfg.threads} videos in flight): "
          f"{folder_s:.2f} s per video (median of {args.repeats} passes)")
    summary = _summary(rows, folder_s, load_s, args.baseline_frames is not None, faces_cfg, score_cfg, weights_note)
    print(f"mean over {len(rows)} videos: original {summary['baseline_s_per_video']:.1f} s, ours "
          f"{summary['ours_s_per_video']:.2f} s per video in a folder ({summary['speedup']:.1f}x faster), "
          f"{summary['ours_single_video_s']:.2f} s for a video alone ({summary['speedup_single_video']:.1f}x)")
    print(json.dumps(summary))
    return 0


class _OriginalLoop:
    """The original notebook's inference loop, kept as it was apart from the model's input range."""

    def __init__(self, detector_model, max_frames: int | None, threads: int | None = None):
        from facenet_pytorch import MTCNN

        started = time.perf_counter()
        self.mtcnn = MTCNN(margin=50, keep_all=False, post_process=False, thresholds=[0.9, 0.9, 0.9], device="cpu")
        self.load_s = time.perf_counter() - started
        self.model = detector_model
        self.max_frames = max_frames
        self.threads = threads

    def warm_up(self) -> None:
        """Keras traces model.predict on its first call; the original paid that once per run."""
        size = int(self.model.input_shape[1])
        self.model.predict(np.zeros((1, size, size, 3), dtype=np.float32), verbose=0)

    def score(self, path: Path) -> tuple[float, float, int, int]:
        """(seconds for the whole video, video score, frames run, frames in the video).

        Runs with `threads` torch threads (default: the same as ours, so that the ratio measures
        the method; torch's own default is one per core), restored afterwards.
        """
        import torch

        ours_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads or ours_threads)
        try:
            return self._score(path)
        finally:
            torch.set_num_threads(ours_threads)

    def _score(self, path: Path) -> tuple[float, float, int, int]:
        import cv2

        capture = cv2.VideoCapture(str(path))
        n_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        limit = n_frames if self.max_frames is None else min(self.max_frames, n_frames)
        face_scores, frames_run = [], 0
        started = time.perf_counter()
        while frames_run < limit:
            is_read, bgr = capture.read()
            if not is_read:
                break
            frames_run += 1
            face = self.mtcnn(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))  # full resolution, every frame
            if face is not None:
                # (3, 160, 160) 0..255; the original divided by 255 here, the contract's model does it inside
                crop = face.permute(1, 2, 0).numpy()[None].astype(np.float32)
                face_scores.append(float(self.model.predict(crop, verbose=0)[0][0]))  # one call per face
        seconds = time.perf_counter() - started
        capture.release()
        scale = n_frames / max(1, frames_run)  # extrapolate to every frame when only some were run
        return seconds * scale, _original_video_score(face_scores), frames_run, n_frames


def _original_video_score(face_scores: list[float]) -> float:
    if len(face_scores) > 11:
        score = float(np.mean(sorted(face_scores)[5:-5]))
    else:
        score = 0.5
    return 0.01 if score == 0 else 0.99 if score == 1 else score


def _bench_video(path: Path, scorer, baseline: _OriginalLoop, repeats: int) -> dict:
    cpu_started = _cpu_seconds()
    ours = [_timed(lambda: scorer.score(path)) for _ in range(max(1, repeats))]
    ours_cpu_s = (_cpu_seconds() - cpu_started) / len(ours)
    ours_s = statistics.median(seconds for _, seconds in ours)
    scored = ours[0][0]
    from dfhelpers import scoring

    prediction = scoring.predictions_from_faces(
        _one_video(scored), scored.faces.assign(video=scored.video), {scored.video: scored.status}, scorer.score_cfg)
    ours_score = float(prediction["score"].iloc[0])
    cpu_started = _cpu_seconds()
    baseline_s, baseline_score, frames_run, n_frames = baseline.score(path)
    baseline_cpu_s = (_cpu_seconds() - cpu_started) * n_frames / max(1, frames_run)
    how = f"{frames_run} frames" if frames_run == n_frames else f"extrapolated from {frames_run} of {n_frames} frames"
    print(f"{path.name}: original {baseline_s:.1f} s ({how}), ours alone {ours_s:.2f} s (median of {len(ours)}, "
          f"{scored.frames_read} frames, {len(scored.faces)} faces, {prediction['status'].iloc[0]}): "
          f"{baseline_s / ours_s:.1f}x faster; scores original {baseline_score:.3f}"
          f"{'' if frames_run == n_frames else ' (from those frames)'}, ours {ours_score:.3f}; "
          f"CPU seconds original {baseline_cpu_s:.1f}, ours {ours_cpu_s:.2f}", flush=True)
    return {"baseline_s": baseline_s, "ours_s": ours_s, "extrapolated": frames_run < n_frames,
            "baseline_cpu_s": baseline_cpu_s, "ours_cpu_s": ours_cpu_s}


def _folder_seconds(videos: list[Path], scorer, repeats: int) -> float:
    """Seconds per video when the scorer runs over the whole folder (videos overlap in threads)."""
    from dfhelpers import engine

    passes = [_timed(lambda: list(engine.score_paths(videos, scorer, progress=False)))[1]
              for _ in range(max(1, repeats))]
    return statistics.median(passes) / len(videos)


def _summary(rows: list[dict], folder_s: float, load_s: float, asked_to_extrapolate: bool, faces_cfg, score_cfg,
             weights_note: str) -> dict:
    baseline_mean = float(np.mean([row["baseline_s"] for row in rows]))
    single_mean = float(np.mean([row["ours_s"] for row in rows]))
    return {"videos": len(rows), "baseline_s_per_video": round(baseline_mean, 2),
            "ours_s_per_video": round(folder_s, 3), "speedup": round(baseline_mean / folder_s, 1),
            "model_load_s": round(load_s, 2),
            "baseline_extrapolated": bool(asked_to_extrapolate and any(row["extrapolated"] for row in rows)),
            "ours_single_video_s": round(single_mean, 3), "speedup_single_video": round(baseline_mean / single_mean, 1),
            "baseline_cpu_s_per_video": round(float(np.mean([row["baseline_cpu_s"] for row in rows])), 2),
            "ours_cpu_s_per_video": round(float(np.mean([row["ours_cpu_s"] for row in rows])), 3),
            "frames_per_video": faces_cfg.frames_per_video, "detect_size": faces_cfg.detect_size,
            "threads": score_cfg.threads, "torch_threads": faces_cfg.torch_threads, "model_weights": weights_note, "cpu_cores": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def _load_ours(model_path: Path, faces_cfg, score_cfg):
    from dfhelpers import engine

    return _timed(lambda: engine.VideoScorer(model_path, faces_cfg, score_cfg).load())


def _ensure_model(model_path: Path, build_backbone: str | None, crop_size: int) -> str:
    """'as given' for an existing model; else build one per the model contract (random weights)."""
    if model_path.is_file():
        return "as given"
    if build_backbone is None:
        sys.exit(f"{model_path}: not found; pass a trained model or --build-model mobilenet_v2")
    _load_torch_first()
    from dfhelpers import model
    from dfhelpers.config import TrainConfig

    detector = model.build(TrainConfig(backbone=build_backbone, weights=None, image_size=crop_size), crop_size)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    detector.save(model_path)
    return f"{build_backbone}, weights=None (random): built here, speed does not depend on the weights"


def _load_torch_first() -> None:
    """torch (with Triton) before TensorFlow: the other order segfaults in this environment."""
    import torchvision.ops  # noqa: F401


def _one_video(scored):
    import pandas as pd

    return pd.DataFrame({"video": [scored.video], "path": [scored.path]})


def _timed(work):
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads (contention on a shared machine
    inflates wall time; CPU time shows the work itself)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _seconds_since_process_start() -> float:
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except ImportError:
        return time.time() - PROCESS_STARTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video_dir", type=Path)
    parser.add_argument("--model", required=True, help="a .keras model per the model contract")
    parser.add_argument("--build-model", metavar="BACKBONE", default=None,
                        help="build and save this backbone (weights=None) to --model when it does not exist")
    parser.add_argument("--baseline-frames", type=int, default=None, metavar="K",
                        help="run the original loop on the first K frames and extrapolate (said so in the output)")
    parser.add_argument("--baseline-threads", type=int, default=None, metavar="N",
                        help="torch threads for the original loop (default: the same as ours)")
    parser.add_argument("--frames", type=int, default=32, help="frames per video for our scorer (faces.frames_per_video)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N videos")
    parser.add_argument("--repeats", type=int, default=3, help="runs of our scorer per video (median)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
