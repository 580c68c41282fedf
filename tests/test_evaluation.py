"""dfhelpers.evaluation: test folders scored and measured on tiny real videos (MTCNN) and a tiny model
(a row and a status per video, no rescoring, report files, one report per folder); the report files
and the videos to show from small tables."""

import json

import numpy as np
import pandas as pd
import pytest

from dfhelpers import config, evaluation, metadata, runfolder, scoring
from dfhelpers.config import ScoreConfig
from dfhelpers.errors import ConfigError
from dfhelpers.metrics import evaluate
from videos import close_up_video, save_tiny_model


@pytest.fixture
def scored_run(tmp_path):
    test_dir = tmp_path / "test_videos"
    test_dir.mkdir()
    close_up_video(test_dir / "face.mp4")
    close_up_video(test_dir / "blank.mp4", n_frames=6, with_face=False)
    (test_dir / "broken.mp4").write_bytes(b"this is not a video")
    (test_dir / "metadata.json").write_text(json.dumps({
        "face.mp4": {"label": "FAKE", "original": "blank.mp4"}, "blank.mp4": {"label": "REAL"},
        "broken.mp4": {"label": "REAL"}}))
    (tmp_path / "run.yaml").write_text("work_dir: run\ndata_dirs: []\ntest_dir: test_videos\nscore: {bootstrap: 0}\n")
    cfg = config.load(tmp_path / "run.yaml")
    save_tiny_model(cfg.model_path)
    [result] = evaluation.evaluate_folders(cfg, progress=False).values()
    return cfg, metadata.list_videos(cfg.test_dir), (result["predictions"], result["faces"])


def test_scoring_gives_every_video_a_row_and_broken_ones_a_status(scored_run):
    cfg, videos, (predictions, faces) = scored_run
    by_video = predictions.set_index("video")
    assert by_video.loc["face.mp4", "status"] == "ok" and by_video.loc["face.mp4", "n_faces"] == 16
    assert by_video.loc["blank.mp4", "status"].startswith("no_face") and by_video.loc["blank.mp4", "score"] == 0.5
    assert by_video.loc["broken.mp4", "status"].startswith("unreadable: ")
    assert set(faces["video"]) == {"face.mp4"} and faces["score"].between(0, 1).all()
    assert by_video.loc["face.mp4", "score"] == pytest.approx(
        np.clip(np.mean(np.sort(faces["score"].to_numpy())[5:-5]), 0.01, 0.99))
    assert by_video.loc["blank.mp4", "verdict"] == "not judged (no_face)"
    assert by_video.loc["broken.mp4", "verdict"] == "not judged (unreadable)"
    assert by_video.loc["face.mp4", "verdict"] in ("REAL", "FAKE")


def test_a_rerun_with_the_same_model_does_not_rescore(scored_run):
    cfg, videos, (predictions, faces) = scored_run
    entries = sorted((cfg.reports_dir / runfolder.SCORE_CACHE_DIR).rglob("*.json"))
    stamps = [entry.stat().st_mtime_ns for entry in entries]
    [again_result] = evaluation.evaluate_folders(cfg, progress=False).values()
    again, again_faces = again_result["predictions"], again_result["faces"]
    assert len(entries) == 3 and [entry.stat().st_mtime_ns for entry in entries] == stamps
    pd.testing.assert_frame_equal(again, predictions)
    pd.testing.assert_series_equal(again_faces["score"], faces["score"])


def test_reports_and_timeline_crops_from_a_scored_run(scored_run):
    cfg, videos, (predictions, faces) = scored_run
    assert pd.read_csv(cfg.submission_csv)["filename"].tolist() == videos["video"].tolist()
    assert set(json.loads(cfg.metrics_json.read_text())) >= {"auc", "log_loss", "accuracy", "n_videos", "n_no_face"}
    crops = evaluation.timeline_crops(faces, predictions[predictions["video"] == "face.mp4"], cfg.work_dir)
    assert len(crops["face.mp4"]) == 6 and crops["face.mp4"][0][1].shape[:2] == (160, 160)


def test_each_test_folder_of_a_config_is_scored_and_reported_on_its_own(tmp_path):
    for folder, label in (("sample_test", "REAL"), ("user_videos", "FAKE")):
        (tmp_path / folder).mkdir()
        close_up_video(tmp_path / folder / "clip.mp4", n_frames=12)  # the same name in both: kept apart
        entry = {"label": label} if label == "REAL" else {"label": "FAKE", "original": "x.mp4", "source": "user"}
        (tmp_path / folder / "metadata.json").write_text(json.dumps({"clip.mp4": entry}))
    (tmp_path / "run.yaml").write_text("work_dir: run\ndata_dirs: []\ntest_dir: [sample_test, user_videos]\n"
                                       "score: {min_faces: 4, trim: 1, bootstrap: 20}\n")
    cfg = config.load(tmp_path / "run.yaml")
    save_tiny_model(cfg.model_path)
    results = evaluation.evaluate_folders(cfg, progress=False)
    assert cfg.test_dir == tmp_path / "sample_test" and list(results) == ["sample_test", "user_videos"]
    assert results["sample_test"]["predictions"]["label"].tolist() == ["REAL"]
    assert results["user_videos"]["predictions"]["source"].tolist() == ["user"]
    assert json.loads(cfg.metrics_json.read_text())["label_counts"]["REAL"] == 1
    second = json.loads((cfg.reports_dir / "user_videos" / "metrics.json").read_text())
    assert second["label_counts"]["FAKE"] == 1 and "every labelled video is FAKE" in second["notes"][0]


def test_a_config_without_a_test_dir_is_a_one_line_error_naming_it(tmp_path):
    (tmp_path / "train_only.yaml").write_text("work_dir: run\ndata_dirs: []\n")
    cfg = config.load(tmp_path / "train_only.yaml")
    with pytest.raises(ConfigError, match=r"train_only\.yaml: no test_dir.*set test_dir") as caught:
        evaluation.evaluate_folders(cfg, progress=False)
    assert "\n" not in str(caught.value)


# --- report files ----------------------------------------------------------------------


@pytest.fixture
def run_cfg(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("work_dir: run\ndata_dirs: []\n")
    return config.load(path)


def test_submission_has_one_row_per_input_video_whatever_its_status():
    videos = pd.DataFrame({"video": ["ok.mp4", "noface.mp4", "broken.mp4"],
                           "path": ["/v/ok.mp4", "/v/noface.mp4", "/v/broken.mp4"],
                           "label": ["FAKE", "REAL", None]})
    faces = pd.DataFrame({"video": "ok.mp4", "track": 0, "score": np.full(16, 0.8)})
    statuses = pd.Series({"ok.mp4": "ok", "noface.mp4": "ok", "broken.mp4": "unreadable: moov atom not found"})
    predictions = scoring.predictions_from_faces(videos, faces, statuses, ScoreConfig())
    sub = evaluation.submission(predictions)
    assert sub["filename"].tolist() == videos["video"].tolist()
    assert sub["label"].tolist() == pytest.approx([0.8, 0.5, 0.5])
    assert predictions["status"].tolist()[1:] == [
        "no_face: no face found in the sampled frames; scored with the prior", "unreadable: moov atom not found"]


def test_reports_are_written_with_json_null_for_an_undefined_auc(run_cfg, predictions):
    only_fakes = predictions[predictions["label"] == "FAKE"]
    metrics = evaluate(only_fakes, run_cfg.score.threshold)
    faces = pd.DataFrame(columns=scoring.FACE_COLUMNS)
    written = evaluation.write_evaluation(only_fakes, faces, metrics, run_cfg.reports_dir)
    saved = json.loads(written["metrics"].read_text())
    assert saved["auc"] is None and saved["n_videos"] == 3
    assert saved["label_counts"]["FAKE"] == 3 and saved["n_no_face"] == 1


def test_report_files_hold_the_scored_videos_their_faces_and_the_submission(run_cfg, predictions):
    faces = pd.DataFrame({"video": ["a.mp4", "a.mp4", "c.mp4"], "frame": [0, 5, 0], "face": [0, 0, 1],
                          "track": [0, 0, 1], "x1": [10.5, 11.0, 40.0], "y1": [20.0, 21.0, 5.0],
                          "x2": [60.5, 61.0, 90.0], "y2": [80.0, 81.0, 70.0], "prob": [0.99, 0.98, 0.97],
                          "score": [0.85, 0.95, 0.6], "crop": ["test_faces/a/00000_0.jpg", "test_faces/a/00005_0.jpg",
                                                               "test_faces/c/00000_1.jpg"]})
    written = evaluation.write_evaluation(predictions, faces, evaluate(predictions, run_cfg.score.threshold, faces),
                                          run_cfg.reports_dir)
    assert written == {"predictions": run_cfg.predictions_csv, "metrics": run_cfg.metrics_json,
                       "frame_scores": run_cfg.reports_dir / runfolder.FRAME_SCORES_CSV,
                       "submission": run_cfg.submission_csv}
    # a row per video, every one of them (no face, unlabelled), in order, with its status and score
    pd.testing.assert_frame_equal(pd.read_csv(written["predictions"]), predictions)
    pd.testing.assert_frame_equal(pd.read_csv(written["frame_scores"]), faces)
    submission = pd.read_csv(written["submission"])
    assert submission["filename"].tolist() == predictions["video"].tolist()
    assert submission["label"].tolist() == pytest.approx(predictions["score"].tolist())
    saved = json.loads(written["metrics"].read_text())
    assert saved["n_videos"] == 6 and saved["n_labelled"] == 5 and saved["label_counts"]["REAL"] == 2
    assert saved["frame"]["n_faces"] == 3


# --- videos to show --------------------------------------------------------------------


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
    wrong = evaluation.confidently_wrong(verdicts, n=5, threshold=0.5)
    assert wrong["video"].tolist() == ["worst", "badly_wrong", "slightly_wrong"]
    assert wrong["error"].tolist() == pytest.approx([0.95, 0.8, 0.55])
    assert evaluation.confidently_wrong(verdicts, n=2, threshold=0.5)["video"].tolist() == ["worst", "badly_wrong"]


def test_confidently_right_orders_by_closeness_to_the_true_label(verdicts):
    right = evaluation.confidently_right(verdicts, n=5, threshold=0.5)
    assert right["video"].tolist() == ["surely_right", "right", "barely_right"]
    assert right["error"].tolist() == pytest.approx([0.02, 0.1, 0.45])
    assert evaluation.confidently_right(verdicts, n=1, threshold=0.5)["video"].tolist() == ["surely_right"]
