"""Metrics of scored videos with bootstrap intervals over videos, their tables, the confusion matrix."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from dfhelpers.logloss import log_loss
from dfhelpers.runfolder import LABELS, label_index
from dfhelpers.scoring import status_counts

METRIC_NAMES = ("auc", "ap", "eer", "log_loss", "accuracy")  # the order of every metrics table
BREAKDOWN_COLUMNS = ("part", "method", "source")  # metadata columns a report is broken down by, when present
LOWER_IS_BETTER = ("eer", "log_loss")


def evaluate(predictions: pd.DataFrame, threshold: float, faces: pd.DataFrame | None = None,
             n_bootstrap: int = 0, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Video-level (and, given `faces`, frame-level) metrics over the labelled rows, with a breakdown.

    AUC, AP, EER, log loss (the DFDC metric) and accuracy at `threshold`; with n_bootstrap > 0
    each gets a `confidence` interval from a seeded bootstrap that resamples videos (the frame
    level resamples videos too and keeps all their faces). Unlabelled videos are counted, not
    scored. A metric a set cannot define (AUC of one class) is NaN and `notes` says why.
    """
    labelled = predictions[predictions["label"].isin(LABELS)]
    boot = {"n": int(n_bootstrap), "seed": int(seed), "confidence": float(confidence), "unit": "video"}
    metrics: dict[str, Any] = {"n_videos": int(len(predictions)), "n_labelled": int(len(labelled)),
                               **status_counts(predictions), "threshold": float(threshold),
                               "label_counts": _label_totals(predictions), "bootstrap": boot}
    metrics.update(measure(_video_samples(labelled), threshold, boot))
    metrics["confusion"] = confusion(predictions, threshold)
    if faces is not None:
        frame_samples = _frame_samples(labelled, faces)
        metrics["frame"] = dict(measure(frame_samples, threshold, boot),
                                n_faces=int(sum(len(scores) for scores in frame_samples[1])))
    if len(labelled) == 0:
        metrics["notes"].insert(0, "no labelled videos: metrics need labels (a metadata.json beside the videos)")
    metrics["breakdown"] = breakdown(labelled, threshold, boot)
    return metrics


Samples = tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]  # is_fake, scores and rank scores per video


def measure(samples: Samples, threshold: float, boot: dict[str, Any]) -> dict[str, Any]:
    """Point metrics and bootstrap intervals of per-video samples (is_fake per video, its scores,
    and the scores it ranks by).

    Each video contributes all its scores (one at video level, its faces at frame level); the
    bootstrap draws videos with replacement, `boot["n"]` times from `boot["seed"]`.
    """
    is_fake, scores, ranks = samples

    def metrics_of(picks: np.ndarray | None) -> dict[str, Any]:
        labels, flat = _flatten(is_fake, scores, picks)
        return point_metrics(labels, flat, threshold, ranks=_flatten(is_fake, ranks, picks)[1])

    point = metrics_of(None)
    result: dict[str, Any] = {name: point[name] for name in METRIC_NAMES}
    result["notes"] = point["notes"]
    result["intervals"] = {name: [math.nan, math.nan] for name in METRIC_NAMES}
    if boot["n"] > 0 and len(is_fake):
        rng = np.random.default_rng(boot["seed"])
        draws = _draw_values([metrics_of(rng.integers(0, len(is_fake), len(is_fake))) for _ in range(boot["n"])])
        result["intervals"].update(_percentile_intervals(draws, boot["confidence"]))
    return result


def point_metrics(is_fake: np.ndarray, scores: np.ndarray, threshold: float,
                  ranks: np.ndarray | None = None) -> dict[str, Any]:
    """AUC, AP, EER, log loss and accuracy of labels (1 = FAKE) and scores P(FAKE), from scikit-learn.

    AUC, AP and EER rank by `ranks` when given (the video scores before score.clip, which
    would tie every video beyond it), log loss and accuracy use `scores`. They need both
    classes: with one they are NaN and `notes` says why.
    """
    ranks = scores if ranks is None else ranks
    from sklearn.metrics import auc, average_precision_score, roc_curve

    result: dict[str, Any] = {name: math.nan for name in METRIC_NAMES}
    result["notes"] = []
    if len(is_fake) == 0:
        return result
    result["log_loss"] = log_loss(is_fake, scores)
    result["accuracy"] = float(np.mean((scores >= threshold).astype(int) == is_fake))
    if len(np.unique(is_fake)) < 2:
        only = LABELS[int(is_fake[0])]
        result["notes"].append(f"AUC, AP and EER undefined: every labelled video is {only}; "
                               "they need both REAL and FAKE videos")
        return result
    fpr, tpr, _ = roc_curve(is_fake, ranks)  # one curve for AUC and EER: the bootstrap calls this 1000s of times
    result.update(auc=float(auc(fpr, tpr)), ap=float(average_precision_score(is_fake, ranks)),
                  eer=_eer_of_curve(fpr, tpr))
    return result


def breakdown(labelled: pd.DataFrame, threshold: float, boot: dict[str, Any]) -> list[dict[str, Any]]:
    """Video metrics per value of each metadata column present (part always; method, source if given).

    A group of FAKE videos only (one manipulation method) is measured against every REAL video
    of the evaluated set, as per-method results are reported in the field; a REAL-only group
    keeps its own videos (accuracy is then the share called REAL).
    """
    rows = []
    reals = labelled[labelled["label"] == "REAL"]
    for column in [c for c in BREAKDOWN_COLUMNS if c in labelled.columns]:
        values = labelled[column].fillna("").astype(str)
        if column != "part" and (values == "").all():
            continue
        for value in sorted(values.unique()):
            group = labelled[values == value]
            only_fakes = bool((group["label"] == "FAKE").all()) and len(reals) > 0
            measured = pd.concat([group, reals]) if only_fakes else group
            rows.append({"column": column, "value": value or "(none)", "n_videos": int(len(group)),
                         "against": "all REAL videos" if only_fakes else "itself",
                         **measure(_video_samples(measured), threshold, boot)})
    return rows


def compare(baseline: pd.DataFrame, candidate: pd.DataFrame, threshold: float, n_bootstrap: int = 1000,
            seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Candidate minus baseline on the same labelled videos, with paired bootstrap intervals.

    Both prediction tables score the same videos (matched by name). Each bootstrap draw takes
    the same videos for both models, so what the videos share (an easy or a hard video is
    easy or hard for either model) cancels: the interval of a difference is much narrower
    than two separate intervals suggest, and it is what decides between two recipes on one
    small development set. `better_share` is the share of draws in which the candidate is
    better (higher AUC, AP and accuracy; lower EER and log loss).

    Raises:
        ValueError: the two tables do not label the same videos alike.
    """
    baseline, candidate = _with_rank_score(baseline), _with_rank_score(candidate)
    columns = ["video", "label", "score", "rank_score"]
    paired = (baseline[baseline["label"].isin(LABELS)][columns]
              .merge(candidate[candidate["label"].isin(LABELS)][columns], on="video", suffixes=("_a", "_b")))
    n_labelled = [int(table["label"].isin(LABELS).sum()) for table in (baseline, candidate)]
    if len(paired) != max(n_labelled) or (paired["label_a"] != paired["label_b"]).any():
        raise ValueError(f"compare: the two tables must label the same videos alike ({n_labelled[0]} and "
                         f"{n_labelled[1]} labelled, {len(paired)} in common)")
    is_fake = label_index(paired["label_a"])
    scores = [tuple(paired[f"{column}_{side}"].to_numpy(dtype=np.float64) for column in ("score", "rank_score"))
              for side in ("a", "b")]

    def difference(picks: np.ndarray) -> dict[str, float]:
        a, b = (point_metrics(is_fake[picks], score[picks], threshold, ranks=rank[picks]) for score, rank in scores)
        return {name: b[name] - a[name] for name in METRIC_NAMES}

    everything = np.arange(len(paired))
    result: dict[str, Any] = {"n_videos": int(len(paired)), "difference": difference(everything),
                              "intervals": {name: [math.nan, math.nan] for name in METRIC_NAMES},
                              "better_share": {name: math.nan for name in METRIC_NAMES},
                              "bootstrap": {"n": int(n_bootstrap), "seed": int(seed), "confidence": float(confidence),
                                            "unit": "video, paired"}}
    if n_bootstrap > 0 and len(paired):
        rng = np.random.default_rng(seed)
        draws = _draw_values([difference(rng.integers(0, len(paired), len(paired))) for _ in range(n_bootstrap)])
        result["intervals"].update(_percentile_intervals(draws, confidence))
        for name, values in draws.items():
            if len(values):
                sign = -1 if name in LOWER_IS_BETTER else 1
                result["better_share"][name] = float(np.mean(sign * values > 0))
    return result


def metrics_table(metrics: dict[str, Any], digits: int = 3) -> pd.DataFrame:
    """One row per level (video, frame) and breakdown group; cells "0.912 [0.853, 0.961]"."""
    rows = [("video", "all", metrics["n_labelled"], metrics)]
    if "frame" in metrics:
        rows.append(("frame", "all", metrics["frame"].get("n_faces", 0), metrics["frame"]))
    rows += [(f"{group['column']}", f"{group['value']}" + (" +REAL" if group["against"] != "itself" else ""),
              group["n_videos"], group) for group in metrics.get("breakdown", [])]
    table = pd.DataFrame([{"level": level, "group": name, "n": n,
                           **{metric: _with_interval(result, metric, digits) for metric in METRIC_NAMES}}
                          for level, name, n, result in rows])
    return table.set_index(["level", "group"])


def comparison_table(comparison: dict[str, Any], digits: int = 3) -> pd.DataFrame:
    """One row per metric of a `compare` result: the signed difference with its interval, and the
    share of bootstrap draws in which the candidate is better."""
    def signed(value: float) -> str:
        return "undefined" if value != value else f"{value:+.{digits}f}"

    rows = [{"metric": name,
             "difference": f"{signed(comparison['difference'][name])} "
                           f"[{', '.join(signed(v) for v in comparison['intervals'][name])}]",
             "better in": "undefined" if comparison["better_share"][name] != comparison["better_share"][name]
             else f"{comparison['better_share'][name]:.0%} of draws"}
            for name in METRIC_NAMES]
    return pd.DataFrame(rows).set_index("metric")


def metrics_tables(metrics_by_folder: dict[str, dict[str, Any]], digits: int = 3) -> pd.DataFrame:
    """metrics_table of several test folders (cross-dataset runs) under one more index level, folder."""
    tables = {folder: metrics_table(metrics, digits) for folder, metrics in metrics_by_folder.items()}
    return pd.concat(tables, names=["folder"]) if tables else pd.DataFrame()


def confusion(predictions: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Confusion matrix of the labelled videos: rows true REAL/FAKE, columns predicted REAL/FAKE."""
    from sklearn.metrics import confusion_matrix

    labelled = predictions[predictions["label"].isin(LABELS)]
    if labelled.empty:  # scikit-learn refuses empty inputs
        return {"labels": list(LABELS), "matrix": [[0, 0], [0, 0]]}
    predicted = np.where(labelled["score"].to_numpy(dtype=np.float64) >= threshold, "FAKE", "REAL")
    matrix = confusion_matrix(labelled["label"].astype(str), predicted, labels=list(LABELS))
    return {"labels": list(LABELS), "matrix": matrix.astype(int).tolist()}


# --- private helpers -------------------------------------------------------------------


def _draw_values(draws: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per metric, its finite values over the bootstrap draws (a draw of one class has no AUC)."""
    values = {name: np.array([draw[name] for draw in draws], dtype=np.float64) for name in METRIC_NAMES}
    return {name: column[np.isfinite(column)] for name, column in values.items()}


def _percentile_intervals(values: dict[str, np.ndarray], confidence: float) -> dict[str, list[float]]:
    """The central `confidence` interval of each metric that has finite draws."""
    tail = 100 * (1 - confidence) / 2
    return {name: np.percentile(column, [tail, 100 - tail]).tolist() for name, column in values.items() if len(column)}


def _label_totals(predictions: pd.DataFrame) -> dict[str, int]:
    """Videos per true label, with the unlabelled ones counted apart (metrics.json's label_counts)."""
    counts = {label: int((predictions["label"] == label).sum()) for label in LABELS}
    return dict(counts, unlabelled=int((~predictions["label"].isin(LABELS)).sum()))


def _eer_of_curve(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Where the piecewise-linear ROC crosses fpr = 1 - tpr (false positive = false negative rate)."""
    gap = fpr + tpr - 1.0  # < 0 before the crossing, >= 0 from it on (non-decreasing)
    after = int(np.argmax(gap >= 0))
    if after == 0 or gap[after] == 0:
        return float(fpr[after])
    before = after - 1
    share = -gap[before] / (gap[after] - gap[before])
    return float(fpr[before] + share * (fpr[after] - fpr[before]))


def _with_rank_score(predictions: pd.DataFrame) -> pd.DataFrame:
    """Predictions with a rank_score column: their own, or (a table written without one) the score."""
    return predictions if "rank_score" in predictions.columns else predictions.assign(rank_score=predictions["score"])


def _video_samples(labelled: pd.DataFrame) -> Samples:
    """(is_fake per video, [its one video score], [its one rank score]) of labelled predictions."""
    labelled = _with_rank_score(labelled)

    def each(column: str) -> list[np.ndarray]:
        return [np.array([value], dtype=np.float64) for value in labelled[column].to_numpy(dtype=np.float64)]

    return label_index(labelled["label"]), each("score"), each("rank_score")


def _frame_samples(labelled: pd.DataFrame, faces: pd.DataFrame) -> Samples:
    """(is_fake per video, [its face scores], the same as ranks) of the labelled videos with a face."""
    by_video = {video: group["score"].to_numpy(dtype=np.float64)
                for video, group in faces.groupby("video")} if len(faces) else {}
    kept = labelled[labelled["video"].isin(by_video)]
    scores = [by_video[video] for video in kept["video"]]
    return label_index(kept["label"]), scores, scores


def _flatten(is_fake: np.ndarray, scores: list[np.ndarray],
             picks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-video samples (optionally the videos `picks`, with repeats) as flat (labels, scores)."""
    picks = np.arange(len(is_fake)) if picks is None else np.asarray(picks)
    if len(picks) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=np.float64)
    lengths = np.array([len(s) for s in scores], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    picked_lengths = lengths[picks]
    # index of every score of every picked video, without a Python loop per draw
    offsets = np.repeat(starts[picks] - np.concatenate([[0], np.cumsum(picked_lengths)[:-1]]), picked_lengths)
    index = offsets + np.arange(picked_lengths.sum())
    return np.repeat(np.asarray(is_fake), lengths)[index].astype(int), np.concatenate(scores)[index]


def _with_interval(result: dict[str, Any], metric: str, digits: int) -> str:
    value = result.get(metric, math.nan)
    if value is None or not math.isfinite(value):
        return "undefined"
    low, high = result.get("intervals", {}).get(metric, [math.nan, math.nan])
    if low is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
