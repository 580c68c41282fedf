"""How much data a detector needs: models trained on more and more identity families, each measured.

Takes a run whose notebooks 01-03 have run (CONFIG: its work_dir holds faces/ and
manifests/split.csv, e.g. configs/deepfake_faces.yaml on Kaggle's deepfake-faces download).
For each --families N it keeps N of the train split's families that have a REAL item (every
FAKE of a kept family comes along; "all" keeps every one), leaves val and test as they are,
trains the config's recipe on that in a run folder of its own (sharing the crops), then
measures the model as bench_accuracy does:

- in-domain: the run's test split, families no model of the curve trained on, from its stored
  crops (AUC, log loss, accuracy with 95% bootstrap intervals over items);
- across datasets (--cross FOLDER): a labelled folder of another data set, e.g. the
  FaceForensics++ development videos, from a run whose face stage cropped them (--cross-crops),
  at video level.

Training resumes, and a model already trained is reused (its training time read from its history,
its memory not watched again), so an interrupted curve continues.

    python benchmarks/bench_learning_curve.py --config faces.yaml --families 1000 4000 all \\
        --cross DEVSET --cross-crops runs/ffpp --out benchmarks/results/learning_curve_deepfake_faces.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when run as a script
import _common  # noqa: E402
import bench_accuracy  # noqa: E402

from dfhelpers import config, runfolder, splitting, train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    machine = _common.machine()
    _common.print_machine(machine)
    base = config.load(args.config)
    split = runfolder.read_split(base.split_csv).drop(columns="label_index")
    points = []
    for families in args.families:
        cfg = prepare_run(base, split, families, args.seed, Path(args.runs or base.work_dir / "learning_curve"))
        started, was_trained = time.monotonic(), train.is_trained(cfg)
        with _common.PeakMemory() as memory:
            card = train.fit(cfg)
        epoch_seconds = train.read_history(cfg)["seconds"]
        point = {"families": families, "n_train_families": int(split_families(cfg)),
                 # a model trained by an earlier run of the curve is reused: its epochs' seconds, as its history
                 # recorded them, are its training time, and its run's memory was not watched
                 "n_train_crops": card["n_train_crops"],
                 "train_seconds": round(float(epoch_seconds.sum()) if was_trained else time.monotonic() - started, 1),
                 "train_peak_rss_mb": None if was_trained else memory.peak_mb,
                 "epoch_seconds_median": round(float(epoch_seconds.median()), 1), "epochs": int(len(epoch_seconds)),
                 "model": str(cfg.model_path), "in_domain": measure(cfg, base.data_dirs[0], base, args)}
        if args.cross:
            point["cross"] = measure(cfg, Path(args.cross), base, args, crops_from=args.cross_crops)
        points.append(point)
        print(_line(point), flush=True)
        # after every point: an interrupted curve keeps the points it finished
        _common.write_result({"benchmark": "learning_curve", "config": str(args.config), "points": points,
                              "machine": _common.finish_machine(machine)}, args.out)
    return 0


def prepare_run(base: config.Config, split: pd.DataFrame, families: str, seed: int, runs: Path) -> config.Config:
    """A run folder for one point: split.csv with N train families (crops shared by a link), its config."""
    work_dir = runs / f"families_{families}"
    cfg = config.load(base.source, {"work_dir": str(work_dir), "train.model_name": f"families_{families}"})
    chosen = keep_train_families(split, families, seed)
    (work_dir / "faces").parent.mkdir(parents=True, exist_ok=True)
    if not (work_dir / "faces").exists():
        (work_dir / "faces").symlink_to(base.faces_dir, target_is_directory=True)
    splitting.write_split(chosen, cfg.split_csv)  # an identical file is left as it is: training resumes
    return cfg


def keep_train_families(split: pd.DataFrame, families: str, seed: int) -> pd.DataFrame:
    """The split with only `families` of its train families that have a REAL crop (all for "all")."""
    train_rows = split["split"] == "train"
    with_real = sorted(set(split.loc[train_rows & (split["label"] == "REAL"), "group"]))
    if families == "all" or int(families) >= len(with_real):
        kept = set(with_real)
    else:
        kept = set(np.random.default_rng(seed).choice(with_real, int(families), replace=False).tolist())
    return split[~train_rows | split["group"].isin(kept)].reset_index(drop=True)


def split_families(cfg: config.Config) -> int:
    split = runfolder.read_split(cfg.split_csv)
    return split.loc[split["split"] == "train", "group"].nunique()


def measure(cfg: config.Config, folder: Path, base: config.Config, args: argparse.Namespace,
            crops_from: str | None = None) -> dict[str, Any]:
    """bench_accuracy's figures for the model: the base run's test groups of `folder`, or (crops_from) all of it."""
    with tempfile.TemporaryDirectory(prefix="dfdetect-curve-") as scratch:
        out = Path(scratch) / "accuracy.json"
        options = ["--crops-from", crops_from] if crops_from else ["--groups-from", str(base.split_csv),
                                                                  "--crops-from", str(base.work_dir)]
        bench_accuracy.main([str(cfg.model_path), str(folder), "--config", str(args.config), *options,
                             "--bootstrap", str(args.bootstrap), "--out", str(out)])
        result = json.loads(out.read_text())
    return {key: result[key] for key in ("n_videos", "label_counts", "video", "intervals", "per_method", "frame_auc")}


def _line(point: dict[str, Any]) -> str:
    def auc(figures: dict[str, Any]) -> str:
        low, high = figures["intervals"]["auc"]
        return f"AUC {figures['video']['auc']:.3f} [{low:.3f}, {high:.3f}]"

    cross = f", across datasets {auc(point['cross'])}" if "cross" in point else ""
    return (f"{point['families']} families ({point['n_train_crops']} train crops, {point['train_seconds']:.0f} s): "
            f"in-domain {auc(point['in_domain'])}{cross}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the run config whose notebooks 01-03 have run")
    parser.add_argument("--families", nargs="+", default=["1000", "4000", "all"],
                        help="train families per point (numbers, or all)")
    parser.add_argument("--cross", help="a labelled folder of another data set, measured at video level")
    parser.add_argument("--cross-crops", help="a run folder whose face stage cropped --cross (its crops are scored)")
    parser.add_argument("--runs", help="where the points' run folders go (default <work_dir>/learning_curve)")
    parser.add_argument("--seed", type=int, default=0, help="which families a point keeps")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="write the JSON here too (benchmarks/results/...)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
