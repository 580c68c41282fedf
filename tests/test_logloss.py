"""dfhelpers.logloss: the one log loss, scikit-learn's, used alike by training and the metrics."""

import numpy as np
import pytest
from sklearn.metrics import log_loss as sklearn_log_loss

from dfhelpers import metrics, train
from dfhelpers.logloss import log_loss, log_loss_of_logits

IS_FAKE = np.array([0, 1, 1, 0, 1, 0])


def test_log_loss_agrees_with_scikit_learn_also_at_scores_of_0_and_1():
    scores = np.array([0.0, 1.0, 0.3, 1.0, 1e-12, 0.6])
    assert log_loss(IS_FAKE, scores) == pytest.approx(sklearn_log_loss(IS_FAKE, scores), rel=1e-12)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_the_logit_form_is_the_log_loss_of_the_sigmoid(temperature):
    logit = np.array([-3.0, 2.0, 0.5, 8.0, -1.0, 0.0])
    probability = 1 / (1 + np.exp(-logit / temperature))  # log(1 - p) near p = 1 loses digits the logit keeps
    assert log_loss_of_logits(IS_FAKE, logit, temperature) == pytest.approx(log_loss(IS_FAKE, probability), rel=1e-9)


def test_the_logit_form_is_exact_where_the_probability_rounds_to_1():
    assert log_loss_of_logits(np.array([0]), np.array([50.0])) == pytest.approx(50.0)


def test_training_and_the_metrics_report_the_same_log_loss_of_the_same_scores():
    scores = np.array([1e-9, 1.0, 0.3, 0.9, 0.7, 1e-3])  # beyond 1e-7 of 0 and 1: where floors would differ
    expected = sklearn_log_loss(IS_FAKE, scores)
    assert train.frame_metrics(IS_FAKE, scores)["test_log_loss"] == pytest.approx(expected, rel=1e-12)
    assert metrics.point_metrics(IS_FAKE, scores, threshold=0.5)["log_loss"] == pytest.approx(expected, rel=1e-12)
