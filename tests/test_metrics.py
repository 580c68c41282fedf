"""dfhelpers.metrics: metrics that agree with scikit-learn, seeded bootstrap intervals over videos, the breakdown."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from dfhelpers import evaluation, metrics, plots
from dfhelpers.metrics import METRIC_NAMES, compare, comparison_table, evaluate, metrics_table, point_metrics


def test_log_loss_auc_and_accuracy_agree_with_scikit_learn(predictions):
    metrics = evaluate(predictions, threshold=0.5)
    is_fake = np.array([1, 0, 1, 0, 1])
    scores = np.array([0.9, 0.2, 0.6, 0.7, 0.5])
    assert metrics["log_loss"] == pytest.approx(log_loss(is_fake, scores))
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.6, 0.3, 0.5])))
    assert metrics["auc"] == pytest.approx(roc_auc_score(is_fake, scores))
    assert metrics["accuracy"] == pytest.approx(4 / 5)
    assert metrics["n_videos"] == 6 and metrics["n_labelled"] == 5 and metrics["n_no_face"] == 1


# every function that judges at a threshold, with its arguments but the threshold
NEEDS_A_THRESHOLD = {
    "metrics.evaluate": lambda predictions: metrics.evaluate(predictions),
    "metrics.compare": lambda predictions: metrics.compare(predictions, predictions, n_bootstrap=0),
    "metrics.confusion": lambda predictions: metrics.confusion(predictions),
    "evaluation.confidently_wrong": lambda predictions: evaluation.confidently_wrong(predictions, n=2),
    "evaluation.confidently_right": lambda predictions: evaluation.confidently_right(predictions, n=2),
    "plots.video_score_histogram": lambda predictions: plots.video_score_histogram(predictions),
    "plots.frame_score_timelines": lambda predictions: plots.frame_score_timelines(
        predictions.iloc[:0], pd.DataFrame(columns=["video", "frame", "track", "score"]), {}),
}


@pytest.mark.parametrize("call", NEEDS_A_THRESHOLD.values(), ids=NEEDS_A_THRESHOLD.keys())
def test_a_call_without_the_threshold_fails_rather_than_ignore_the_config(call, predictions):
    with pytest.raises(TypeError, match="threshold"):
        call(predictions)


def test_confusion_matrix_rows_are_true_labels(predictions):
    metrics = evaluate(predictions, threshold=0.5)
    assert metrics["confusion"] == {"labels": ["REAL", "FAKE"], "matrix": [[1, 1], [0, 3]]}
    assert metrics["label_counts"] == {"REAL": 2, "FAKE": 3, "unlabelled": 1}


def test_single_class_labels_give_nan_auc_with_a_note(predictions):
    only_fakes = predictions[predictions["label"] == "FAKE"]
    metrics = evaluate(only_fakes, threshold=0.5)
    assert math.isnan(metrics["auc"]) and "FAKE" in metrics["notes"][0]
    assert metrics["log_loss"] == pytest.approx(log_loss([1, 1, 1], [0.9, 0.6, 0.5], labels=[0, 1]))


def test_unlabelled_videos_are_scored_without_metrics(predictions):
    metrics = evaluate(predictions.assign(label=None), threshold=0.5)
    assert metrics["n_videos"] == 6 and math.isnan(metrics["accuracy"]) and metrics["notes"]


def synthetic_scores(n_videos=300, seed=3):
    rng = np.random.default_rng(seed)
    is_fake = (rng.random(n_videos) < 0.6).astype(int)
    return is_fake, np.clip(rng.normal(0.35 + 0.3 * is_fake, 0.2), 0.0, 1.0).round(2)  # ties, as real scores have


def test_eer_and_ap_agree_with_scikit_learn_on_synthetic_scores():
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

    is_fake, scores = synthetic_scores()
    fpr, tpr, _ = roc_curve(is_fake, scores)
    reference_eer = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0, xtol=1e-14)
    precision, recall, _ = precision_recall_curve(is_fake, scores)
    step_ap = -np.sum(np.diff(recall) * precision[:-1])
    metrics = point_metrics(is_fake, scores, threshold=0.5)
    assert abs(metrics["eer"] - reference_eer) < 1e-9
    assert abs(metrics["ap"] - average_precision_score(is_fake, scores)) < 1e-9 and abs(metrics["ap"] - step_ap) < 1e-9
    assert abs(metrics["auc"] - roc_auc_score(is_fake, scores)) < 1e-9


def test_eer_of_perfectly_separated_and_of_inverted_scores():
    is_fake = np.array([0, 0, 1, 1])
    assert point_metrics(is_fake, np.array([0.1, 0.2, 0.8, 0.9]), threshold=0.5)["eer"] == 0.0
    assert point_metrics(is_fake, np.array([0.9, 0.8, 0.2, 0.1]), threshold=0.5)["eer"] == 1.0


def test_a_one_class_folder_gives_undefined_auc_ap_eer_with_the_reason():
    only_real = pd.DataFrame({"video": ["a", "b", "c"], "status": "ok", "score": [0.2, 0.4, 0.7], "label": "REAL"})
    metrics = evaluate(only_real, threshold=0.5, n_bootstrap=50)
    assert all(math.isnan(metrics[name]) for name in ("auc", "ap", "eer"))
    assert "every labelled video is REAL" in metrics["notes"][0]
    assert metrics["accuracy"] == pytest.approx(2 / 3) and all(math.isnan(v) for v in metrics["intervals"]["auc"])
    row = metrics_table(metrics).loc[("video", "all")]
    assert row["auc"] == "undefined" and row["accuracy"].startswith("0.667 [")


def labelled_run(n_videos=60, seed=5):
    is_fake, scores = synthetic_scores(n_videos, seed)
    videos = [f"v{i}.mp4" for i in range(n_videos)]
    methods = np.where(is_fake == 1, np.where(np.arange(n_videos) % 2, "Deepfakes", "FaceSwap"), "youtube")
    predictions = pd.DataFrame({"video": videos, "status": "ok", "score": scores, "part": "dev", "method": methods,
                                "label": np.where(is_fake == 1, "FAKE", "REAL")})
    rng = np.random.default_rng(seed)
    faces = pd.DataFrame({"video": np.repeat(videos, 8), "score": np.clip(np.repeat(scores, 8) + rng.normal(0, 0.1, 8 * n_videos), 0, 1)})
    return predictions, faces


def test_bootstrap_intervals_are_seeded_and_bracket_the_point_estimate():
    predictions, faces = labelled_run()
    first = evaluate(predictions, 0.5, faces, n_bootstrap=200, seed=7)
    second = evaluate(predictions, 0.5, faces, n_bootstrap=200, seed=7)
    other = evaluate(predictions, 0.5, faces, n_bootstrap=200, seed=8)
    assert first["intervals"] == second["intervals"] and first["frame"]["intervals"] == second["frame"]["intervals"]
    assert first["intervals"] != other["intervals"]
    for name in METRIC_NAMES:
        low, high = first["intervals"][name]
        assert low <= first[name] <= high and low < high


def test_frame_level_bootstrap_resamples_videos_not_frames():
    predictions, faces = labelled_run()
    # identical face scores within each video: resampling frames would shrink the interval, videos do not
    flat = faces.assign(score=faces["video"].map(dict(zip(predictions["video"], predictions["score"]))))
    metrics = evaluate(predictions, 0.5, flat, n_bootstrap=200, seed=0)
    assert metrics["frame"]["n_faces"] == 8 * len(predictions)
    assert metrics["frame"]["intervals"]["auc"] == pytest.approx(metrics["intervals"]["auc"])


def test_breakdown_measures_each_method_against_all_real_videos():
    predictions, faces = labelled_run()
    groups = {(row["column"], row["value"]): row for row in evaluate(predictions, 0.5)["breakdown"]}
    assert set(groups) == {("part", "dev"), ("method", "Deepfakes"), ("method", "FaceSwap"), ("method", "youtube")}
    deepfakes = predictions[(predictions["method"] == "Deepfakes") | (predictions["label"] == "REAL")]
    is_fake = (deepfakes["label"] == "FAKE").astype(int)
    assert groups[("method", "Deepfakes")]["auc"] == pytest.approx(roc_auc_score(is_fake, deepfakes["score"]))
    assert groups[("method", "Deepfakes")]["against"] == "all REAL videos"
    assert math.isnan(groups[("method", "youtube")]["auc"]) and groups[("method", "youtube")]["against"] == "itself"


def paired_scores(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two models on the same videos: the candidate is the baseline plus a little more signal.

    Each video's own difficulty (shared by both models) is larger than the gap between them, so
    their separate intervals overlap while the paired interval of the difference does not hold 0.
    """
    rng = np.random.default_rng(seed)
    is_fake = np.arange(n) % 2
    difficulty = rng.normal(0, 1.0, n)
    logit = lambda signal: signal * (2 * is_fake - 1) + difficulty + rng.normal(0, 0.15, n)  # noqa: E731
    table = lambda logits: pd.DataFrame({  # noqa: E731
        "video": [f"v{i}.mp4" for i in range(n)], "status": "ok", "score": 1 / (1 + np.exp(-logits)),
        "label": np.where(is_fake == 1, "FAKE", "REAL")})
    return table(logit(0.6)), table(logit(1.0))


def test_compare_is_candidate_minus_baseline_with_a_narrower_paired_interval():
    baseline, candidate = paired_scores()
    comparison = compare(baseline, candidate, 0.5, n_bootstrap=300, seed=0)
    separate = [evaluate(table, 0.5, n_bootstrap=300, seed=0) for table in (baseline, candidate)]
    assert comparison["n_videos"] == 120
    assert comparison["difference"]["auc"] == pytest.approx(separate[1]["auc"] - separate[0]["auc"])
    assert comparison["difference"]["log_loss"] == pytest.approx(separate[1]["log_loss"] - separate[0]["log_loss"])
    low, high = comparison["intervals"]["auc"]
    assert 0 < low < comparison["difference"]["auc"] < high
    assert separate[1]["intervals"]["auc"][0] < separate[0]["intervals"]["auc"][1]  # separately: overlapping
    assert comparison["better_share"]["auc"] > 0.975 and comparison["better_share"]["log_loss"] > 0.975
    assert compare(baseline, candidate, 0.5, n_bootstrap=300, seed=0)["intervals"] == comparison["intervals"]
    row = comparison_table(comparison).loc["auc"]
    assert row["difference"] == f"+{comparison['difference']['auc']:.3f} [+{low:.3f}, +{high:.3f}]"
    assert row["better in"].endswith("% of draws")


def test_compare_of_a_model_with_itself_is_zero_and_never_better():
    baseline, _ = paired_scores()
    comparison = compare(baseline, baseline.sample(frac=1, random_state=0), 0.5, n_bootstrap=100, seed=0)
    assert comparison["difference"]["auc"] == 0 and comparison["intervals"]["auc"] == [0, 0]
    assert comparison["better_share"]["auc"] == 0


def test_compare_refuses_tables_of_other_videos_or_labels():
    baseline, candidate = paired_scores(n=20)
    with pytest.raises(ValueError, match="same videos alike"):
        compare(baseline, candidate.iloc[:-1], 0.5)
    with pytest.raises(ValueError, match="same videos alike"):
        compare(baseline, candidate.assign(label=candidate["label"].iloc[::-1].to_numpy()), 0.5)


def test_ranking_metrics_order_videos_by_the_score_before_the_clip_and_log_loss_uses_the_clipped_one():
    labels = ["REAL", "FAKE", "REAL", "FAKE"]
    unclipped = np.array([0.991, 0.999, 0.2, 0.995])  # both FAKE videos above the REAL ones, three beyond 0.99
    clipped = pd.DataFrame({"video": list("abcd"), "label": labels, "status": "ok", "score": np.minimum(unclipped, 0.99)})
    ranked = clipped.assign(rank_score=unclipped)
    tied = evaluate(clipped, 0.5)
    result = evaluate(ranked, 0.5)
    assert tied["auc"] == pytest.approx(roc_auc_score([0, 1, 0, 1], clipped["score"]))
    assert tied["auc"] < 1  # the REAL video at 0.991 ties with both FAKE ones at 0.99
    assert result["auc"] == 1.0 and result["eer"] == 0.0 and result["ap"] == 1.0
    assert result["log_loss"] == tied["log_loss"] == pytest.approx(log_loss([0, 1, 0, 1], clipped["score"]))
    paired = compare(clipped, ranked, 0.5, n_bootstrap=0)
    assert paired["difference"]["auc"] == pytest.approx(1 - tied["auc"]) and paired["difference"]["log_loss"] == 0
