"""Input pipeline vs training step throughput for the configured backbone (images/s).

    .venv/bin/python benchmarks/bench_train.py [--config configs/sample.yaml] [--repeats 3]

Uses the run's train crops when split.csv exists (a random --max-crops of them: a face set's
80,000 would take an hour a pass), otherwise synthetic JPEG crops of the configured crop size. The pipeline (decode, cache, shuffle, augment, batch) and the
training step (forward, backward, update on an in-memory batch) are timed separately;
the pipeline should be at least 3x faster so training never waits for data. The pipeline
is timed twice on the same crops: with train.fakes "given" and "self_blend" (half the
images self-blended on the fly).
Last line: {"pipeline_img_s": ..., "self_blend_pipeline_img_s": ..., "train_step_img_s": ..., "ratio": ...}.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when run as a script
import _common  # noqa: E402

from dfhelpers import config, inputs, model, runfolder  # noqa: E402
from dfhelpers.selfblend import LANDMARK_COLUMNS

SYNTHETIC_CROPS = 512  # enough for several batches, small enough to write in seconds
LANDMARK_FRACTIONS = np.array([[0.36, 0.40], [0.64, 0.40], [0.50, 0.55], [0.39, 0.68], [0.61, 0.68]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "sample.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed repeat")
    parser.add_argument("--max-crops", type=int, default=4096, help="train crops drawn from a run's split (default 4096)")
    parser.add_argument("--out", type=Path, help="write the JSON here too (benchmarks/results/...)")
    args = parser.parse_args()
    machine = _common.machine()
    _common.print_machine(machine)
    cfg = config.load(args.config)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as scratch:
        crops, cfg = _crops(cfg, Path(scratch), args.max_crops)
        given = _with_fakes(cfg, "given")
        pipeline_img_s = _pipeline_img_s(inputs.examples(crops, given, "train"), given, args.repeats)
        blending = _with_fakes(cfg, "self_blend")
        blend_img_s = _pipeline_img_s(inputs.examples(crops, blending, "train"), blending, args.repeats)
        train_step_img_s = _train_step_img_s(crops, given, args.repeats, args.steps)
    ratio = min(pipeline_img_s, blend_img_s) / train_step_img_s
    print(f"input pipeline: {pipeline_img_s:.0f} img/s given, {blend_img_s:.0f} img/s self_blend "
          f"(median of {args.repeats} epochs, {len(crops)} crops)")
    print(f"training step ({cfg.train.backbone}, {cfg.train.image_size} px, batch {cfg.train.batch_size}): "
          f"{train_step_img_s:.0f} img/s (median of {args.repeats})")
    print(f"pipeline / training step: {ratio:.1f}x ({'OK' if ratio >= 3 else 'pipeline is a bottleneck'})")
    _common.write_result({"benchmark": "bench_train", "backbone": cfg.train.backbone, "image_size": cfg.train.image_size,
                          "pipeline_img_s": round(pipeline_img_s, 1), "self_blend_pipeline_img_s": round(blend_img_s, 1),
                          "train_step_img_s": round(train_step_img_s, 1), "ratio": round(ratio, 2),
                          "machine": _common.finish_machine(machine)}, args.out)


def _with_fakes(cfg: config.Config, fakes: str) -> config.Config:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, fakes=fakes))


def _crops(cfg: config.Config, scratch: Path, max_crops: int) -> tuple[pd.DataFrame, config.Config]:
    """Up to max_crops of the run's train crops, or synthetic ones written to scratch (with cfg pointing there)."""
    if cfg.split_csv.is_file():
        split = runfolder.read_split(cfg.split_csv)
        train_crops = split[split["split"] == "train"]
        train_crops = train_crops.sample(min(max_crops, len(train_crops)), random_state=0)
        crops, _ = inputs.check_crops(train_crops, cfg.work_dir, cfg.faces.crop_size, "skip")
        if len(crops):
            print(f"crops: {len(crops)} train crops drawn from {cfg.split_csv}")
            return crops, cfg
    size = cfg.faces.crop_size
    rng = np.random.default_rng(0)
    rows = []
    for index in range(SYNTHETIC_CROPS):
        relative = Path("faces") / f"synthetic_{index:04d}.jpg"
        (scratch / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(scratch / relative, quality=95)
        points = (LANDMARK_FRACTIONS * size).reshape(-1)  # where MTCNN puts a face's points in a crop
        rows.append({"path": str(relative), "label_index": index % 2, **dict(zip(LANDMARK_COLUMNS, points))})
    print(f"crops: {SYNTHETIC_CROPS} synthetic {size} px crops (no split.csv at {cfg.split_csv})")
    return pd.DataFrame(rows), dataclasses.replace(cfg, work_dir=scratch)


def _pipeline_img_s(crops: pd.DataFrame, cfg: config.Config, repeats: int) -> float:
    """Images per second of the training pipeline over one epoch (train.epoch_sampling's length), median of repeats."""
    n_batches = -(-inputs.examples_per_epoch(crops, cfg.train) // cfg.train.batch_size)
    pipeline = inputs.make_dataset(crops, cfg, training=True).take(n_batches)  # a balanced set is endless
    for _ in pipeline:  # warm-up epoch: fills the cache, traces the augmentation
        pass
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        n_images = sum(int(labels.shape[0]) for _, labels in pipeline)
        rates.append(n_images / (time.perf_counter() - started))
    return statistics.median(rates)


def _train_step_img_s(crops: pd.DataFrame, cfg: config.Config, repeats: int, steps: int) -> float:
    """Median over repeats of the median step time; fit's per-call set-up is left out."""
    images, labels = next(iter(inputs.make_dataset(crops, cfg, training=False)))
    one_batch = tf.data.Dataset.from_tensors((images, labels)).repeat()
    classifier = model.compile_model(model.build(cfg.train, cfg.faces.crop_size, cfg.faces.margin), cfg.train, steps_per_epoch=steps)
    classifier.fit(one_batch, steps_per_epoch=3, epochs=1, verbose=0)  # warm-up: tracing
    rates = []
    for _ in range(repeats):
        clock = _StepClock()
        classifier.fit(one_batch, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[clock])
        rates.append(int(labels.shape[0]) / statistics.median(np.diff(clock.ends)))
    return statistics.median(rates)


class _StepClock(keras.callbacks.Callback):
    """End time of every training step; differences are step times without fit's set-up."""

    def __init__(self):
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


if __name__ == "__main__":
    main()
