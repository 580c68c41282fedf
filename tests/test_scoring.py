import math

import numpy as np
import pandas as pd
import pytest

from dfhelpers import scoring
from dfhelpers.config import ScoreConfig
from dfhelpers.metrics import evaluate


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
    assert evaluate(wrong, ScoreConfig().threshold)["log_loss"] == pytest.approx(-math.log(0.01))


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


def test_videos_scored_with_the_prior_are_counted_and_not_judged():
    assert scoring.verdict(0.5, "no_face: none found", 0.5) == "not judged (no_face)"
    assert scoring.verdict(0.5, "few_faces: 3 faces < min_faces 12; scored with the prior", 0.5) == "not judged (few_faces)"
    assert scoring.verdict(0.5, "ok", 0.5) == "FAKE" and scoring.verdict(0.49, "ok", 0.5) == "REAL"
    statuses = pd.DataFrame({"status": ["ok", "no_face: x", "few_faces: y", "unreadable: z"]})
    assert scoring.status_counts(statuses)["n_prior"] == 3


def test_a_video_keeps_its_score_before_the_clip_to_rank_by():
    sure = scoring.video_score(faces_of([0.999] * 20), ScoreConfig(aggregation="mean"))
    surer = scoring.video_score(faces_of([0.9999] * 20), ScoreConfig(aggregation="mean"))
    assert sure["score"] == surer["score"] == 0.99
    assert sure["rank_score"] == pytest.approx(0.999) and surer["rank_score"] == pytest.approx(0.9999)
    no_face = scoring.video_score(faces_of([]), ScoreConfig())
    assert no_face["score"] == no_face["rank_score"] == 0.5


def _predict(path, faces, score_cfg):
    videos = pd.DataFrame({"video": ["item"], "path": [str(path)], "label": ["FAKE"]})
    return scoring.predictions_from_faces(videos, faces.assign(video="item"), {}, score_cfg).iloc[0]


def test_a_face_image_is_judged_on_its_one_face_and_a_sequence_on_the_faces_it_has(tmp_path):
    image = tmp_path / "face.jpg"
    image.write_bytes(b"not decoded here")
    single = _predict(image, faces_of([0.8]), ScoreConfig())  # the defaults: min_faces 12, trimmed mean, trim 5
    assert single["score"] == pytest.approx(0.8) and single["status"] == "ok" and single["verdict"] == "FAKE"
    sequence = tmp_path / "sequence"
    sequence.mkdir()
    for index in range(3):
        (sequence / f"{index:03d}.png").write_bytes(b"")
    three = _predict(sequence, faces_of([0.1, 0.3, 0.9]), ScoreConfig())
    assert three["score"] == pytest.approx(0.3) and three["status"] == "ok"  # trim 1: the middle face
    missed = _predict(sequence, faces_of([0.1, 0.9]), ScoreConfig())  # no face found in one image
    assert missed["score"] == 0.5 and missed["status"].startswith("few_faces:")


def test_a_video_still_needs_min_faces_and_a_short_track_does_not_decide_it(tmp_path):
    faces = pd.concat([faces_of([0.2] * 30, track=0), faces_of([0.99], track=1)])  # one stray detection
    video = _predict(tmp_path / "clip.mp4", faces, ScoreConfig(aggregation="mean", trim=0))
    assert video["score"] == pytest.approx(0.2) and video["faces_used"] == 30
    few = _predict(tmp_path / "clip.mp4", faces_of([0.9] * 3), ScoreConfig())
    assert few["score"] == 0.5 and few["status"].startswith("few_faces:")
