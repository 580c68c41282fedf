"""The inference engine on tiny real videos (MTCNN) and a tiny model: model choice, scorer, failures."""

import keras
import numpy as np
import pytest

from dfhelpers import config, engine
from dfhelpers.errors import ModelLoadError
import hostile
from videos import close_up_video, save_tiny_model, write_video


def test_detection_runs_while_the_model_loads_and_scores_match_a_loaded_scorer(tmp_path):
    close_up_video(tmp_path / "face.mp4")
    model_path = save_tiny_model(tmp_path / "tiny.keras")
    faces_cfg, score_cfg = config.FacesConfig(), config.ScoreConfig()
    background = engine.VideoScorer(model_path, faces_cfg, score_cfg).start_loading()
    extracted = background.extract(tmp_path / "face.mp4")  # needs only the face detector
    scored = background.finish(extracted)
    expected = engine.VideoScorer(model_path, faces_cfg, score_cfg).load().score(tmp_path / "face.mp4")
    assert len(scored.faces) == len(expected.faces) > 0
    np.testing.assert_allclose(scored.faces["score"], expected.faces["score"], rtol=1e-5)


def test_another_model_scores_the_same_crops_into_its_cache_so_measuring_it_detects_nothing(tmp_path):
    paths = [close_up_video(tmp_path / "face.mp4"), close_up_video(tmp_path / "again.mp4", n_frames=10)]
    faces_cfg, score_cfg = config.FacesConfig(), config.ScoreConfig()
    scorer = engine.VideoScorer(save_tiny_model(tmp_path / "tiny.keras"), faces_cfg, score_cfg)
    baseline_path = save_tiny_model(tmp_path / "sharper.keras", sharpness=3.0)
    baseline = engine.VideoScorer(baseline_path, faces_cfg, score_cfg)
    baseline_cache = engine.ScoreCache.for_scorer(tmp_path / "against", baseline)
    also = [(baseline, baseline_cache)]
    mine = list(engine.score_paths(paths, scorer, progress=False, also=also))
    for path, scored in zip(paths, mine):
        stored = baseline_cache.load(path)
        alone = engine.VideoScorer(baseline_path, faces_cfg, score_cfg).load().score(path)
        assert stored is not None and len(stored.faces) == len(alone.faces) == len(scored.faces) > 0
        np.testing.assert_allclose(stored.faces["score"], alone.faces["score"], rtol=1e-5)
        assert not np.allclose(stored.faces["score"], scored.faces["score"])  # the other model's scores
    never_loaded = engine.VideoScorer(tmp_path / "missing.keras", faces_cfg, score_cfg)  # would fail if asked
    assert [s.status for s in engine.score_paths(paths, never_loaded, baseline_cache, progress=False)] == [
        s.status for s in mine]


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


def _save_srm_classifier(path):
    """A small_cnn + SRM classifier with random weights: face scores that differ from crop to crop."""
    from dfhelpers import model

    keras.utils.set_random_seed(0)
    classifier = model.build(config.TrainConfig(backbone="small_cnn", weights=None, front_end="srm", image_size=160,
                                                cnn_filters=(4, 8)), crop_size=160)
    classifier.save(path)
    return path


def test_mirror_averages_each_face_with_its_left_right_mirror_and_keeps_a_cache_of_its_own(tmp_path):
    keras_path = _save_srm_classifier(tmp_path / "classifier.keras")
    plain = engine.VideoScorer(keras_path, config.FacesConfig(), config.ScoreConfig()).load()
    mirrored = engine.VideoScorer(keras_path, config.FacesConfig(), config.ScoreConfig(mirror=True)).load()
    crops = np.random.default_rng(0).integers(0, 256, (5, 160, 160, 3), dtype=np.uint8)
    own, of_mirror = plain.predict(crops), plain.predict(np.ascontiguousarray(crops[:, :, ::-1]))
    assert np.abs(own - of_mirror).max() > 1e-3  # the classifier tells a crop from its mirror
    np.testing.assert_allclose(mirrored.predict(crops), (own + of_mirror) / 2, rtol=1e-5)
    symmetric = np.concatenate([crops[:, :, :80], crops[:, :, :80][:, :, ::-1]], axis=2)
    np.testing.assert_allclose(mirrored.predict(symmetric), plain.predict(symmetric), rtol=1e-5)
    # face scores of one model file are cached apart with and without the mirror: never one read as the other
    assert engine.ScoreCache.for_scorer(tmp_path, plain).cache_dir != engine.ScoreCache.for_scorer(
        tmp_path, mirrored).cache_dir


def test_which_model_file_scores_is_the_up_to_date_sidecar_else_keras_with_a_note(tmp_path):
    from dfhelpers import model

    keras_path = _save_srm_classifier(tmp_path / "classifier.keras")
    without = engine.choose_model(keras_path)
    assert (without.runtime, without.path) == ("keras", keras_path) and "dfdetect export" in without.note
    onnx_path = model.export_onnx(keras_path)
    assert engine.choose_model(keras_path) == engine.ModelChoice("onnx", onnx_path, keras_path, "")
    assert engine.choose_model(onnx_path) == engine.ModelChoice("onnx", onnx_path, keras_path, "")
    _save_srm_classifier(keras_path)  # retrained under the same name: the sidecar is now stale
    stale = engine.choose_model(keras_path)
    assert (stale.runtime, stale.path) == ("keras", keras_path) and "no up-to-date classifier.onnx" in stale.note
    assert engine.choose_model(onnx_path) == engine.ModelChoice("onnx", onnx_path, None, "")


def test_keras_and_onnx_give_the_same_face_scores_on_a_video(tmp_path):
    from dfhelpers import model

    close_up_video(tmp_path / "face.mp4")
    keras_path = _save_srm_classifier(tmp_path / "classifier.keras")
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

    keras_path = _save_srm_classifier(tmp_path / "classifier.keras")
    onnx_path = model.export_onnx(keras_path)
    paired = engine.VideoScorer(keras_path, config.FacesConfig(), config.ScoreConfig()).load()
    assert paired.choice.runtime == "onnx" and paired.model.name == "small_cnn_classifier"
    alone = tmp_path / "alone"
    alone.mkdir()
    onnx_alone = onnx_path.rename(alone / "classifier.onnx")
    scorer = engine.VideoScorer(onnx_alone, config.FacesConfig(), config.ScoreConfig()).load()
    with pytest.raises(ModelLoadError, match="explanations need the Keras model"):
        scorer.model


def test_an_onnx_model_with_a_fixed_batch_size_or_another_crop_size_is_refused_naming_the_file(tmp_path):
    import onnx

    from dfhelpers import model

    onnx_path = model.export_onnx(_save_srm_classifier(tmp_path / "classifier.keras"))
    proto = onnx.load(str(onnx_path))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(proto, str(tmp_path / "batch_of_one.onnx"))
    scorer = engine.VideoScorer(tmp_path / "batch_of_one.onnx", config.FacesConfig(), config.ScoreConfig())
    with pytest.raises(ModelLoadError, match="batch_of_one.onnx: the model takes batches of exactly 1 crops"):
        scorer.load()
    other_size = engine.VideoScorer(onnx_path, config.FacesConfig(crop_size=128), config.ScoreConfig())
    with pytest.raises(ModelLoadError, match="classifier.onnx: the model takes .* but faces.crop_size is 128"):
        other_size.load()
