"""The log loss of P(FAKE), from probabilities or from logits: one definition for training and metrics."""

from __future__ import annotations

import numpy as np

# scikit-learn's floor for float64 scores: a score of exactly 0 or 1 costs -log(eps) = 36 nats, not infinity
EPS = float(np.finfo(np.float64).eps)


def log_loss(is_fake: np.ndarray, fake_probability: np.ndarray) -> float:
    """Mean binary cross-entropy (natural log) of labels (1 = FAKE) and P(FAKE).

    Probabilities are clipped to [EPS, 1 - EPS], as scikit-learn's log_loss clips float64 scores.
    """
    probability = np.clip(np.asarray(fake_probability, dtype=np.float64), EPS, 1 - EPS)
    is_fake = np.asarray(is_fake, dtype=np.float64)
    return float(-np.mean(is_fake * np.log(probability) + (1 - is_fake) * np.log(1 - probability)))


def log_loss_of_logits(is_fake: np.ndarray, logit: np.ndarray, temperature: float = 1.0,
                       offset: float = 0.0) -> float:
    """log_loss of sigmoid(logit / temperature + offset), computed from the logit.

    The same value as log_loss wherever the probability lies within [EPS, 1 - EPS]; beyond, it is
    exact rather than clipped, so the loss stays smooth in the temperature (train.fit_temperature).
    """
    scaled = np.asarray(logit, dtype=np.float64) / temperature + offset
    return float(np.mean(np.logaddexp(0.0, scaled) - np.asarray(is_fake, dtype=np.float64) * scaled))
