"""Accuracy of a trained model on a labelled folder of videos, as `dfdetect evaluate` measures it.

Scores every video of FOLDER (its metadata.json gives labels and, where present, `method`) with
MODEL through the inference engine (sampled frames, MTCNN, the classifier, the video rule of
the config's `score` section), and prints video AUC, log loss and accuracy with 95% bootstrap
intervals over videos, plus one AUC per manipulation method against all REAL videos. The
figures go to a JSON file with the command, the commit and the machine line.

--groups-from SPLIT_CSV keeps only the videos that a run's split.csv puts in the given split
(default: test: whole identity groups the model never trained on), for a model trained on the
other groups of the same folder: the held-out figure of real-data training.

--against BASELINE.keras scores a second model on the same videos and prints MODEL minus
BASELINE for each metric, with intervals from a paired bootstrap (each draw takes the same
videos for both): two recipes compared on one small set, where their own intervals overlap.
--against-set KEY=VALUE scores the baseline with a setting of the config changed (the model is
MODEL itself without --against): one scoring choice, e.g. score.mirror, compared paired.

    python benchmarks/bench_accuracy.py runs/sample/models/sample.keras DEVSET \\
        --out benchmarks/results/accuracy_demo_faceforensics.json
    python benchmarks/bench_accuracy.py runs/ffpp/models/ffpp.keras DEVSET \\
        --groups-from runs/ffpp/manifests/split.csv --out benchmarks/results/accuracy_ffpp_heldout.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when run as a script
import _common  # noqa: E402

from dfhelpers import config, engine, faces, metadata, runfolder, scoring  # noqa: E402
from dfhelpers.errors import DfdetectError  # noqa: E402
from dfhelpers.metrics import compare, comparison_table, evaluate, metrics_table  # noqa: E402

METRICS = ("auc", "log_loss", "accuracy", "ap", "eer")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    machine = _common.machine()
    _common.print_machine(machine)
    cfg = config.load(args.config) if args.config else None
    faces_cfg = cfg.faces if cfg else config.FacesConfig()
    score_cfg = cfg.score if cfg else config.ScoreConfig()
    videos = select_videos(Path(args.folder), args.groups_from, args.split)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dfdetect-accuracy-") as scratch:
        cache_root = Path(args.cache) if args.cache else Path(scratch)
        scored = score_videos([(Path(args.model), faces_cfg, score_cfg)] + _baseline(args, faces_cfg, score_cfg),
                              videos, args, cache_root)
    predictions, face_scores = scored[0]
    metrics = evaluate(predictions, score_cfg.threshold, face_scores, n_bootstrap=args.bootstrap,
                       seed=score_cfg.bootstrap_seed, confidence=score_cfg.confidence)
    summary = summarise(metrics)
    print(metrics_table(metrics).to_string(), flush=True)
    if args.against or args.against_set:
        comparison = compare(scored[1][0], predictions, score_cfg.threshold, n_bootstrap=args.bootstrap,
                             seed=score_cfg.bootstrap_seed, confidence=score_cfg.confidence)
        baseline = Path(args.against or args.model)
        print(f"{args.model} minus {baseline}{''.join(' ' + item for item in args.against_set)}, "
              f"{comparison['n_videos']} videos, paired bootstrap ({comparison['bootstrap']['n']} draws):\n"
              f"{comparison_table(comparison).to_string()}", flush=True)
        summary["against"] = {"model": str(baseline), "model_card": _card(baseline), "settings": args.against_set,
                              **_rounded_comparison(comparison)}
    _common.write_result({"benchmark": "accuracy", "model": str(args.model), "model_card": _card(Path(args.model)),
                          "folder": str(args.folder), "groups_from": args.groups_from, "split": args.split,
                          "seconds": round(time.monotonic() - started, 1),
                          **summary, "machine": _common.finish_machine(machine)}, args.out)
    return 0


def score_videos(models: list[tuple[Path, config.FacesConfig, config.ScoreConfig]], videos: pd.DataFrame,
                 args: argparse.Namespace, cache_root: Path) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """(predictions, faces) of each (model, faces settings, score settings) on the chosen videos: from
    stored crops, or through the engine with faces detected once where the face settings are the
    first's (its pass feeds the others' caches)."""
    scorers = [engine.VideoScorer(model, faces_cfg, score_cfg) for model, faces_cfg, score_cfg in models]
    if args.crops_from:
        return [score_stored_crops(videos, scorer, Path(args.crops_from)) for scorer in scorers]
    caches = [engine.ScoreCache.for_scorer(cache_root, scorer) for scorer in scorers]
    also = [(scorer, cache) for scorer, cache in zip(scorers[1:], caches[1:]) if scorer.faces_cfg == scorers[0].faces_cfg]
    return [engine.score_table(videos, scorer, cache, progress=True, also=also if index == 0 else ())
            for index, (scorer, cache) in enumerate(zip(scorers, caches))]


def _baseline(args: argparse.Namespace, faces_cfg: config.FacesConfig,
              score_cfg: config.ScoreConfig) -> list[tuple[Path, config.FacesConfig, config.ScoreConfig]]:
    """The baseline to measure against, if any: --against's model (default MODEL) with --against-set's settings."""
    if not (args.against or args.against_set):
        return []
    if args.against_set:
        import yaml

        pairs = [item.partition("=") for item in args.against_set]
        if not args.config or any(not sep or not key.startswith(("score.", "faces.")) for key, sep, _ in pairs):
            raise SystemExit(f"--against-set {' '.join(args.against_set)}: give score.NAME=VALUE or faces.NAME=VALUE "
                             "settings of the --config file")
        changed = config.load(args.config, {key: yaml.safe_load(value) for key, _, value in pairs})
        faces_cfg, score_cfg = changed.faces, changed.score
    return [(Path(args.against or args.model), faces_cfg, score_cfg)]


def select_videos(folder: Path, groups_from: str | None, split: str) -> pd.DataFrame:
    """The labelled videos of `folder`; with a split.csv only those whose crops it puts in `split`.

    split.csv names each crop's video and identity group, and a group lies in one split only,
    so these are the videos of the held-out groups (a video balancing left without crops is not
    among them).
    """
    videos = metadata.list_videos(folder)
    if groups_from is None:
        return videos
    split_csv = Path(groups_from)
    try:
        crops = runfolder.read_split(split_csv)  # the training's own reader: checked, names as text
    except DfdetectError as err:
        raise SystemExit(str(err)) from err
    chosen = videos[videos["video"].isin(set(crops.loc[crops["split"] == split, "video"]))].reset_index(drop=True)
    if chosen.empty:
        raise SystemExit(f"{split_csv}: no video of {folder} is in its {split!r} split; check the folder and split")
    return chosen


def score_stored_crops(videos: pd.DataFrame, scorer: engine.VideoScorer,
                       work_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, faces) from the crops a run's face stage stored for these videos.

    The face stage samples, detects and crops as scoring does and stores each crop as the scorer
    JPEG-compresses it (dfhelpers.jpeg), and the crops read back here as the scorer reads its own
    back, so the scores are the engine's without detecting every video again (a quick loop over
    many models); the run's faces settings must be the ones to measure.
    """
    from tqdm.auto import tqdm

    run = config.from_dict({"work_dir": str(work_dir), "data_dirs": []}, base_dir=work_dir)
    try:
        crops, statuses = faces.load_crops(run), faces.load_status(run).set_index("video")["status"].to_dict()
    except DfdetectError as err:  # no faces.csv: not a run folder, or its face stage never ran
        raise SystemExit(str(err)) from err
    crops = crops[crops["video"].isin(set(videos["video"]))].reset_index(drop=True)
    pixels = [read_crop(run.work_dir / path) for path in tqdm(crops["path"], desc="crops")]
    scores = scorer.predict(np.stack(pixels)) if pixels else np.zeros(0)
    face_scores = crops.assign(score=scores, crop="")[scoring.FACE_COLUMNS]
    return scoring.predictions_from_faces(videos, face_scores, statuses, scorer.score_cfg), face_scores


def read_crop(path: Path) -> np.ndarray:
    """A stored crop as RGB uint8, decoded as dfhelpers.jpeg.jpeg_roundtrip decodes the scorer's crops
    (OpenCV's decoder: the pixels the model sees when it scores the video itself)."""
    import cv2

    encoded = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    bgr = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"{path}: not a readable JPEG crop; crop that video again (notebook 02) or drop --crops-from")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def summarise(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures the README quotes: video metrics with intervals, AUC per method, videos not judged."""
    video = {name: _rounded(metrics[name]) for name in METRICS}
    intervals = {name: [_rounded(v) for v in metrics["intervals"][name]] for name in METRICS}
    methods = {row["value"]: {"auc": _rounded(row["auc"]), "auc_interval": [_rounded(v) for v in row["intervals"]["auc"]],
                              "n_videos": row["n_videos"]}
               for row in metrics["breakdown"] if row["column"] == "method" and row["against"] != "itself"}
    return {"n_videos": metrics["n_labelled"], "label_counts": metrics["label_counts"], "video": video,
            "intervals": intervals, "per_method": methods, "frame_auc": _rounded(metrics["frame"]["auc"]),
            # videos scored with the prior, as dfdetect evaluate counts them (scoring.status_counts):
            # a `partial:` video (decoding broke after some frames) is judged on the faces it has
            "n_not_judged": metrics["n_prior"],
            "bootstrap": metrics["bootstrap"]}


def _card(model_path: Path) -> dict[str, Any]:
    """What the model card says of how the model was made (backbone, fakes, calibration, epochs, and
    the start: the sha256 of the train.init classifier it was fine-tuned or calibrated from)."""
    import json

    card_path = model_path.with_suffix(".json")
    if not card_path.is_file():
        return {}
    card = json.loads(card_path.read_text())
    train, calibration = card.get("fingerprint", {}).get("train", {}), card.get("calibration", {})
    return {"backbone": card.get("backbone"), "fakes": train.get("fakes"), "epochs": train.get("epochs"),
            "image_size": train.get("image_size"), "best_epoch": card.get("best_epoch"),
            "calibration": calibration.get("method"), "temperature": calibration.get("temperature"),
            "offset": calibration.get("offset"), "trained_at": card.get("trained_at"),
            "n_train_crops": card.get("n_train_crops"), "seconds": card.get("seconds_this_run"),
            "init_sha256": (card.get("init") or {}).get("sha256", "")[:12] or None}


def _rounded_comparison(comparison: dict[str, Any]) -> dict[str, Any]:
    return {"n_videos": comparison["n_videos"],
            "difference": {name: _rounded(comparison["difference"][name]) for name in METRICS},
            "intervals": {name: [_rounded(v) for v in comparison["intervals"][name]] for name in METRICS},
            "better_share": {name: _rounded(comparison["better_share"][name]) for name in METRICS},
            "bootstrap": comparison["bootstrap"]}


def _rounded(value: Any) -> Any:
    return round(float(value), 4) if value is not None and value == value else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a trained .keras model (its ONNX sidecar is used when fresh)")
    parser.add_argument("folder", help="a labelled folder of videos (metadata.json beside them)")
    parser.add_argument("--config", help="take the faces and score settings from this run config "
                                         "(default: the defaults, as dfdetect without --config)")
    parser.add_argument("--groups-from", help="a run's manifests/split.csv: score only its --split groups")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--crops-from", help="a run folder whose face stage cropped these videos: score its "
                                             "stored crops instead of detecting again (same faces settings)")
    parser.add_argument("--against", metavar="BASELINE.keras",
                        help="also score this model on the same videos and print MODEL minus it, with paired "
                             "bootstrap intervals: whether one recipe beats another on a small set")
    parser.add_argument("--against-set", action="append", default=[], metavar="KEY=VALUE",
                        help="score the baseline (--against, or MODEL itself) with this setting of --config changed, "
                             "e.g. score.mirror=false: one scoring choice compared paired (repeatable)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples of the videos (default 2000)")
    parser.add_argument("--cache", help="keep the face scores in this folder (a re-run scores nothing twice)")
    parser.add_argument("--out", type=Path, help="write the JSON here too (benchmarks/results/...)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
