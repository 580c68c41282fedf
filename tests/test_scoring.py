import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from dfhelpers import config, scoring
from dfhelpers.config import ScoreConfig


def original_video_score(face_scores):
    """The original notebook's rule, transcribed literally (the reference to reproduce)."""
    preds = list(face_scores)
    if len(preds) > 11:
        preds = sorted(preds)[5:-5]
        score = np.mean(preds)
    else:
        score = 0.5
    if score == 0:
        score = 0.01
    if score == 1:
        score = 0.99
    return score


def faces_of(scores, track=0):
    return pd.DataFrame({"track": track, "score": np.asarray(scores, dtype=float)})


@pytest.fixture
def run_cfg(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("work_dir: run\ndata_dirs: []\n")
    return config.load(path)


# --- aggregation ---------------------------------------------------------------------


ORIGINAL = ScoreConfig(clip_exact_only=True)  # the original's clipping: only exact 0 and 1 move


def test_trimmed_mean_reproduces_the_original_rule_on_random_videos():
    rng = np.random.default_rng(0)
    for n_faces in range(0, 40):
        face_scores = rng.random(n_faces)
        assert scoring.aggregate(face_scores, ORIGINAL) == original_video_score(face_scores)


def test_trimmed_mean_gives_the_prior_to_eleven_faces_or_fewer():
    assert scoring.aggregate(np.full(11, 0.9), ScoreConfig()) == 0.5
    assert scoring.aggregate(np.array([]), ScoreConfig()) == 0.5
    twelve = np.array([0.0] * 5 + [0.2, 0.4] + [1.0] * 5)
    assert scoring.aggregate(twelve, ScoreConfig()) == pytest.approx(0.3)


def test_original_clipping_moves_only_exact_zero_and_one():
    assert scoring.aggregate(np.zeros(20), ORIGINAL) == 0.01 == original_video_score(np.zeros(20))
    assert scoring.aggregate(np.ones(20), ORIGINAL) == 0.99 == original_video_score(np.ones(20))
    nearly_one = np.full(20, 0.999)
    assert scoring.aggregate(nearly_one, ORIGINAL) == original_video_score(nearly_one)


def test_default_clipping_bounds_the_log_loss_of_a_confidently_wrong_video():
    assert scoring.aggregate(np.full(20, 0.99999), ScoreConfig()) == 0.99
    assert scoring.aggregate(np.full(20, 0.00001), ScoreConfig()) == 0.01
    wrong = pd.DataFrame({"video": ["a.mp4"], "status": "ok", "label": "REAL",
                          "score": [scoring.aggregate(np.full(20, 1 - 1e-7), ScoreConfig())]})
    assert scoring.evaluate(wrong)["log_loss"] == pytest.approx(-math.log(0.01))


def test_mean_and_median_rules():
    face_scores = np.array([0.1] * 10 + [0.9] * 3)
    assert scoring.aggregate(face_scores, ScoreConfig(aggregation="mean")) == pytest.approx(3.7 / 13)
    assert scoring.aggregate(face_scores, ScoreConfig(aggregation="median")) == pytest.approx(0.1)


def test_confident_rule_averages_the_confidently_fake_faces_when_many():
    face_scores = np.array([0.95] * 8 + [0.1] * 8)
    assert scoring.aggregate(face_scores, ScoreConfig(aggregation="confident")) == pytest.approx(0.95)
    few_fakes = np.array([0.95] * 2 + [0.3] * 14)
    assert scoring.aggregate(few_fakes, ScoreConfig(aggregation="confident")) == pytest.approx(few_fakes.mean())


def test_most_suspicious_track_decides_a_video_with_two_people():
    faces = pd.concat([faces_of([0.1] * 20, track=0), faces_of([0.8] * 20, track=1)])
    scored = scoring.video_score(faces, ScoreConfig())
    assert scored["score"] == pytest.approx(0.8) and scored["track"] == 1 and scored["faces_used"] == 20
    pooled = scoring.video_score(faces, ScoreConfig(per_track="all"))
    assert pooled["score"] == pytest.approx(0.45) and pooled["track"] == -1


def test_short_tracks_are_pooled_when_no_track_is_long_enough():
    faces = pd.concat([faces_of([0.2] * 8, track=track) for track in range(3)])
    scored = scoring.video_score(faces, ScoreConfig())
    assert scored["score"] == pytest.approx(0.2) and scored["status"] == "ok" and scored["faces_used"] == 24


def test_video_without_faces_gets_the_prior_and_says_why():
    scored = scoring.video_score(faces_of([]), ScoreConfig(prior=0.6))
    assert scored["score"] == 0.6 and scored["status"].startswith("no_face:")
    few = scoring.video_score(faces_of([0.9] * 3), ScoreConfig())
    assert few["score"] == 0.5 and few["status"].startswith("few_faces:")


# --- metrics ---------------------------------------------------------------------------


def test_log_loss_auc_and_accuracy_agree_with_scikit_learn(predictions):
    metrics = scoring.evaluate(predictions, threshold=0.5)
    is_fake = np.array([1, 0, 1, 0, 1])
    scores = np.array([0.9, 0.2, 0.6, 0.7, 0.5])
    assert metrics["log_loss"] == pytest.approx(log_loss(is_fake, scores))
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.6, 0.3, 0.5])))
    assert metrics["auc"] == pytest.approx(roc_auc_score(is_fake, scores))
    assert metrics["accuracy"] == pytest.approx(4 / 5)
    assert metrics["n_videos"] == 6 and metrics["n_labelled"] == 5 and metrics["n_no_face"] == 1


def test_confusion_matrix_rows_are_true_labels(predictions):
    metrics = scoring.evaluate(predictions, threshold=0.5)
    assert metrics["confusion"] == {"labels": ["REAL", "FAKE"], "matrix": [[1, 1], [0, 3]]}
    assert metrics["label_counts"] == {"REAL": 2, "FAKE": 3, "unlabelled": 1}


def test_single_class_labels_give_nan_auc_with_a_note(predictions):
    only_fakes = predictions[predictions["label"] == "FAKE"]
    metrics = scoring.evaluate(only_fakes)
    assert math.isnan(metrics["auc"]) and "FAKE" in metrics["notes"][0]
    assert metrics["log_loss"] == pytest.approx(log_loss([1, 1, 1], [0.9, 0.6, 0.5], labels=[0, 1]))


def test_unlabelled_videos_are_scored_without_metrics(predictions):
    metrics = scoring.evaluate(predictions.assign(label=None))
    assert metrics["n_videos"] == 6 and math.isnan(metrics["accuracy"]) and metrics["notes"]


@pytest.fixture
def verdicts():
    """Three wrong and three right judged videos, in no order, and three that neither list may show."""
    return pd.DataFrame({
        "video": ["slightly_wrong", "barely_right", "badly_wrong", "surely_right", "worst", "right",
                  "no_face", "unreadable", "unlabelled"],
        "status": ["ok"] * 6 + ["no_face: none", "unreadable: moov atom not found", "ok"],
        "score": [0.45, 0.55, 0.8, 0.02, 0.05, 0.9, 0.5, 0.5, 0.99],
        "label": ["FAKE", "FAKE", "REAL", "REAL", "FAKE", "FAKE", "FAKE", "REAL", None],
    })


def test_confidently_wrong_orders_by_distance_from_the_true_label(verdicts):
    wrong = scoring.confidently_wrong(verdicts, n=5)
    assert wrong["video"].tolist() == ["worst", "badly_wrong", "slightly_wrong"]
    assert wrong["error"].tolist() == pytest.approx([0.95, 0.8, 0.55])
    assert scoring.confidently_wrong(verdicts, n=2)["video"].tolist() == ["worst", "badly_wrong"]


def test_confidently_right_orders_by_closeness_to_the_true_label(verdicts):
    right = scoring.confidently_right(verdicts, n=5)
    assert right["video"].tolist() == ["surely_right", "right", "barely_right"]
    assert right["error"].tolist() == pytest.approx([0.02, 0.1, 0.45])
    assert scoring.confidently_right(verdicts, n=1)["video"].tolist() == ["surely_right"]


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
    metrics = scoring.point_metrics(is_fake, scores, threshold=0.5)
    assert abs(metrics["eer"] - reference_eer) < 1e-9
    assert abs(metrics["ap"] - average_precision_score(is_fake, scores)) < 1e-9 and abs(metrics["ap"] - step_ap) < 1e-9
    assert abs(metrics["auc"] - roc_auc_score(is_fake, scores)) < 1e-9


def test_eer_of_perfectly_separated_and_of_inverted_scores():
    is_fake = np.array([0, 0, 1, 1])
    assert scoring.point_metrics(is_fake, np.array([0.1, 0.2, 0.8, 0.9]), threshold=0.5)["eer"] == 0.0
    assert scoring.point_metrics(is_fake, np.array([0.9, 0.8, 0.2, 0.1]), threshold=0.5)["eer"] == 1.0


def test_a_one_class_folder_gives_undefined_auc_ap_eer_with_the_reason():
    only_real = pd.DataFrame({"video": ["a", "b", "c"], "status": "ok", "score": [0.2, 0.4, 0.7], "label": "REAL"})
    metrics = scoring.evaluate(only_real, n_bootstrap=50)
    assert all(math.isnan(metrics[name]) for name in ("auc", "ap", "eer"))
    assert "every labelled video is REAL" in metrics["notes"][0]
    assert metrics["accuracy"] == pytest.approx(2 / 3) and all(math.isnan(v) for v in metrics["intervals"]["auc"])
    row = scoring.metrics_table(metrics).loc[("video", "all")]
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
    first = scoring.evaluate(predictions, 0.5, faces, n_bootstrap=200, seed=7)
    second = scoring.evaluate(predictions, 0.5, faces, n_bootstrap=200, seed=7)
    other = scoring.evaluate(predictions, 0.5, faces, n_bootstrap=200, seed=8)
    assert first["intervals"] == second["intervals"] and first["frame"]["intervals"] == second["frame"]["intervals"]
    assert first["intervals"] != other["intervals"]
    for name in scoring.METRIC_NAMES:
        low, high = first["intervals"][name]
        assert low <= first[name] <= high and low < high


def test_frame_level_bootstrap_resamples_videos_not_frames():
    predictions, faces = labelled_run()
    # identical face scores within each video: resampling frames would shrink the interval, videos do not
    flat = faces.assign(score=faces["video"].map(dict(zip(predictions["video"], predictions["score"]))))
    metrics = scoring.evaluate(predictions, 0.5, flat, n_bootstrap=200, seed=0)
    assert metrics["frame"]["n_faces"] == 8 * len(predictions)
    assert metrics["frame"]["intervals"]["auc"] == pytest.approx(metrics["intervals"]["auc"])


def test_breakdown_measures_each_method_against_all_real_videos():
    predictions, faces = labelled_run()
    groups = {(row["column"], row["value"]): row for row in scoring.evaluate(predictions, 0.5)["breakdown"]}
    assert set(groups) == {("part", "dev"), ("method", "Deepfakes"), ("method", "FaceSwap"), ("method", "youtube")}
    deepfakes = predictions[(predictions["method"] == "Deepfakes") | (predictions["label"] == "REAL")]
    is_fake = (deepfakes["label"] == "FAKE").astype(int)
    assert groups[("method", "Deepfakes")]["auc"] == pytest.approx(roc_auc_score(is_fake, deepfakes["score"]))
    assert groups[("method", "Deepfakes")]["against"] == "all REAL videos"
    assert math.isnan(groups[("method", "youtube")]["auc"]) and groups[("method", "youtube")]["against"] == "itself"


def test_videos_scored_with_the_prior_are_counted_and_not_judged():
    assert scoring.verdict(0.5, "no_face: none found", 0.5) == "not judged (no_face)"
    assert scoring.verdict(0.5, "few_faces: 3 faces < min_faces 12; scored with the prior", 0.5) == "not judged (few_faces)"
    assert scoring.verdict(0.5, "ok", 0.5) == "FAKE" and scoring.verdict(0.49, "ok", 0.5) == "REAL"
    statuses = pd.DataFrame({"status": ["ok", "no_face: x", "few_faces: y", "unreadable: z"]})
    assert scoring.status_counts(statuses)["n_prior"] == 3


# --- outputs -----------------------------------------------------------------------------


def test_submission_has_one_row_per_input_video_whatever_its_status():
    videos = pd.DataFrame({"video": ["ok.mp4", "noface.mp4", "broken.mp4"],
                           "path": ["/v/ok.mp4", "/v/noface.mp4", "/v/broken.mp4"],
                           "label": ["FAKE", "REAL", None]})
    faces = pd.DataFrame({"video": "ok.mp4", "track": 0, "score": np.full(16, 0.8)})
    statuses = pd.Series({"ok.mp4": "ok", "noface.mp4": "ok", "broken.mp4": "unreadable: moov atom not found"})
    predictions = scoring.predictions_from_faces(videos, faces, statuses, ScoreConfig())
    sub = scoring.submission(predictions)
    assert sub["filename"].tolist() == videos["video"].tolist()
    assert sub["label"].tolist() == pytest.approx([0.8, 0.5, 0.5])
    assert predictions["status"].tolist()[1:] == [
        "no_face: no face found in the sampled frames; scored with the prior", "unreadable: moov atom not found"]


def test_reports_are_written_with_json_null_for_an_undefined_auc(run_cfg, predictions):
    only_fakes = predictions[predictions["label"] == "FAKE"]
    metrics = scoring.evaluate(only_fakes)
    faces = pd.DataFrame(columns=scoring.FACE_COLUMNS)
    written = scoring.write_evaluation(only_fakes, faces, metrics, run_cfg.reports_dir)
    saved = json.loads(written["metrics"].read_text())
    assert saved["auc"] is None and saved["n_videos"] == 3
    assert pd.read_csv(run_cfg.submission_csv).columns.tolist() == ["filename", "label"]
    assert written["predictions"] == run_cfg.predictions_csv and written["frame_scores"].is_file()
