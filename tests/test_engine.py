"""The inference engine on tiny real videos (MTCNN) and a tiny model: scores, cache, test folders."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from dfhelpers import config, engine, metadata, runfolder, scoring
from dfhelpers.errors import ConfigError, ModelLoadError
import hostile
from videos import close_up_video, save_tiny_model, write_video


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
    [result] = engine.evaluate_folders(cfg, progress=False).values()
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
    [again_result] = engine.evaluate_folders(cfg, progress=False).values()
    again, again_faces = again_result["predictions"], again_result["faces"]
    assert len(entries) == 3 and [entry.stat().st_mtime_ns for entry in entries] == stamps
    pd.testing.assert_frame_equal(again, predictions)
    pd.testing.assert_series_equal(again_faces["score"], faces["score"])


def test_reports_and_timeline_crops_from_a_scored_run(scored_run):
    cfg, videos, (predictions, faces) = scored_run
    assert pd.read_csv(cfg.submission_csv)["filename"].tolist() == videos["video"].tolist()
    assert set(json.loads(cfg.metrics_json.read_text())) >= {"auc", "log_loss", "accuracy", "n_videos", "n_no_face"}
    crops = scoring.timeline_crops(faces, predictions[predictions["video"] == "face.mp4"], cfg.work_dir)
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
    results = engine.evaluate_folders(cfg, progress=False)
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
        engine.evaluate_folders(cfg, progress=False)
    assert "\n" not in str(caught.value)


def test_detection_runs_while_the_model_loads_and_scores_match_a_loaded_scorer(tmp_path):
    close_up_video(tmp_path / "face.mp4")
    model_path = save_tiny_model(tmp_path / "tiny.keras")
    faces_cfg, score_cfg = config.FacesConfig(), config.ScoreConfig()
    background = engine.VideoScorer(model_path, faces_cfg, score_cfg).start_loading()
    extracted = background.extract(tmp_path / "face.mp4")  # needs only the detector
    scored = background.finish(extracted)
    expected = engine.VideoScorer(model_path, faces_cfg, score_cfg).load().score(tmp_path / "face.mp4")
    assert len(scored.faces) == len(expected.faces) > 0
    np.testing.assert_allclose(scored.faces["score"], expected.faces["score"], rtol=1e-5)


def test_a_corrupt_model_fails_when_its_scores_are_needed_not_silently(tmp_path):
    close_up_video(tmp_path / "face.mp4")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a keras archive")
    scorer = engine.VideoScorer(corrupt, config.FacesConfig(), config.ScoreConfig()).start_loading()
    with pytest.raises(ModelLoadError, match="corrupt.keras"):
        list(engine.score_paths([tmp_path / "face.mp4"], scorer, progress=False))


def test_scorer_predictions_equal_keras_predict_for_any_batch_size(tmp_path):
    scorer = engine.VideoScorer(save_tiny_model(tmp_path / "tiny.keras"), config.FacesConfig(),
                                config.ScoreConfig(batch_size=64)).load()
    crops = np.random.default_rng(0).integers(0, 256, (70, 160, 160, 3), dtype=np.uint8)
    for n_crops in (1, 7, 70):  # 70: two batches of 64 and 6
        expected = np.asarray(scorer.model.predict_on_batch(crops[:n_crops].astype(np.float32))).reshape(-1)
        np.testing.assert_allclose(scorer.predict(crops[:n_crops]), expected, rtol=1e-5)


def test_a_corrupt_model_is_an_error_even_when_the_first_video_has_no_face(tmp_path):
    blank = tmp_path / "blank.mp4"
    write_video(blank, hostile.background_frames(4, 64, 48))
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a keras archive")
    scorer = engine.VideoScorer(corrupt, config.FacesConfig(), config.ScoreConfig())
    with pytest.raises(ModelLoadError, match="corrupt.keras"):
        list(engine.score_paths([blank], scorer, progress=False))


def _save_srm_detector(path):
    """A small_cnn + SRM detector with random weights: face scores that differ from crop to crop."""
    from dfhelpers import model

    keras.utils.set_random_seed(0)
    detector = model.build(config.TrainConfig(front_end="srm", image_size=160, cnn_filters=(4, 8)), crop_size=160)
    detector.save(path)
    return path


def test_which_model_file_scores_is_the_up_to_date_sidecar_else_keras_with_a_note(tmp_path):
    from dfhelpers import model

    keras_path = _save_srm_detector(tmp_path / "detector.keras")
    without = engine.choose_model(keras_path)
    assert (without.runtime, without.path) == ("keras", keras_path) and "dfdetect export" in without.note
    onnx_path = model.export_onnx(keras_path)
    assert engine.choose_model(keras_path) == engine.ModelChoice("onnx", onnx_path, keras_path, "")
    assert engine.choose_model(onnx_path) == engine.ModelChoice("onnx", onnx_path, keras_path, "")
    _save_srm_detector(keras_path)  # retrained under the same name: the sidecar is now stale
    stale = engine.choose_model(keras_path)
    assert (stale.runtime, stale.path) == ("keras", keras_path) and "no up-to-date detector.onnx" in stale.note
    assert engine.choose_model(onnx_path) == engine.ModelChoice("onnx", onnx_path, None, "")


def test_keras_and_onnx_give_the_same_face_scores_on_a_video(tmp_path):
    from dfhelpers import model

    close_up_video(tmp_path / "face.mp4")
    keras_path = _save_srm_detector(tmp_path / "detector.keras")
    faces_cfg, score_cfg = config.FacesConfig(), config.ScoreConfig()
    with_keras = engine.VideoScorer(keras_path, faces_cfg, score_cfg).load()
    by_keras = with_keras.score(tmp_path / "face.mp4")
    model.export_onnx(keras_path)
    with_onnx = engine.VideoScorer(keras_path, faces_cfg, score_cfg).load()
    by_onnx = with_onnx.score(tmp_path / "face.mp4")
    assert (with_keras.choice.runtime, with_onnx.choice.runtime) == ("keras", "onnx")
    assert len(by_onnx.faces) == len(by_keras.faces) > 0 and by_keras.faces["score"].std() > 0
    np.testing.assert_allclose(by_onnx.faces["score"], by_keras.faces["score"], atol=1e-4)


def test_explanations_load_keras_behind_an_onnx_scorer_and_name_the_fix_without_it(tmp_path):
    from dfhelpers import model

    keras_path = _save_srm_detector(tmp_path / "detector.keras")
    onnx_path = model.export_onnx(keras_path)
    paired = engine.VideoScorer(keras_path, config.FacesConfig(), config.ScoreConfig()).load()
    assert paired.choice.runtime == "onnx" and paired.model.name == "small_cnn_detector"
    alone = tmp_path / "alone"
    alone.mkdir()
    onnx_alone = onnx_path.rename(alone / "detector.onnx")
    scorer = engine.VideoScorer(onnx_alone, config.FacesConfig(), config.ScoreConfig()).load()
    with pytest.raises(ModelLoadError, match="explanations need the Keras model"):
        scorer.model


def test_an_onnx_model_with_a_fixed_batch_size_or_another_crop_size_is_refused_naming_the_file(tmp_path):
    import onnx

    from dfhelpers import model

    onnx_path = model.export_onnx(_save_srm_detector(tmp_path / "detector.keras"))
    proto = onnx.load(str(onnx_path))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(proto, str(tmp_path / "batch_of_one.onnx"))
    scorer = engine.VideoScorer(tmp_path / "batch_of_one.onnx", config.FacesConfig(), config.ScoreConfig())
    with pytest.raises(ModelLoadError, match="batch_of_one.onnx: the model takes batches of exactly 1 crops"):
        scorer.load()
    other_size = engine.VideoScorer(onnx_path, config.FacesConfig(crop_size=128), config.ScoreConfig())
    with pytest.raises(ModelLoadError, match="detector.onnx: the model takes .* but faces.crop_size is 128"):
        other_size.load()
