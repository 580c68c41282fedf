"""Fitting the classifier: best checkpoint, early stopping, resume, model card, test evaluation."""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn import metrics as sk_metrics
from tqdm.keras import TqdmCallback

from dfhelpers import config, config_rules, files, inputs, model, runfolder
from dfhelpers.config import Config
from dfhelpers.errors import ConfigError, SplitError, StageOutputMissing
from dfhelpers.logloss import log_loss, log_loss_of_logits

# Written by keras.callbacks.BackupAndRestore into cfg.checkpoint_dir: the last finished epoch.
BACKUP_STATE = "training_metadata.json"
RUN_STATE = "run.json"  # ours, beside it: which config and data the backup belongs to
# train keys that make a different model, not a retrained one: a finished model is never replaced
# by one that differs in these without a new train.model_name (a backbone override must not delete
# the model it would replace)
REPLACED_ONLY_BY_NAME = ("backbone", "weights", "head", "front_end", "image_size", "cnn_filters", "dense_units",
                         "fakes", "framing")
# fitted after training on the trained model: a change to these alone refits the calibration, not the model
CALIBRATION_KEYS = ("calibration", "min_temperature")
LONG_EPOCH_STEPS = 300  # epochs of this many steps or more get a progress bar of their own
# the calibration's largest temperature: a model with no signal on val ends as a coin (fit_temperature)
MAX_TEMPERATURE = 1e6


def fit(cfg: Config, *, progress: bool = True, callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict[str, Any]:
    """Train the classifier on the train split, selecting on val; resume or skip when possible.

    A complete model whose card matches the current split.csv and train config is not
    retrained; one that differs in its calibration settings alone (CALIBRATION_KEYS) is only
    calibrated again (the time of scoring val). An interrupted run continues after its last
    finished epoch. With train.epochs 0, train.init's classifier is only calibrated on this
    split (_adopt). Writes cfg.model_path (best epoch, atomically), cfg.history_csv, its ONNX
    sidecar (for scoring without TensorFlow) and, last, cfg.model_card.

    Args:
        callbacks: extra Keras callbacks, run after ours (a custom progress display, a test's interrupt).
    Raises:
        ConfigError: a complete model of this name was trained with other train settings; it is
            never replaced silently (a new split for the same settings does retrain it).
    Returns:
        The model card (also written to cfg.model_card).
    """
    split = runfolder.read_split(cfg.split_csv)
    split_sha256 = files.sha256(cfg.split_csv)
    if is_trained(cfg):
        return read_card(cfg)
    _refuse_to_replace(cfg)
    crops, bad = inputs.check_crops(split, cfg.work_dir, cfg.faces.crop_size, cfg.train.on_bad_crop, progress)
    if _differs_in_calibration_alone(cfg, split_sha256):
        return _recalibrate(cfg, crops)
    if cfg.train.epochs == 0:
        return _adopt(cfg, split_sha256, crops, bad)
    train_crops, val_crops = _fit_splits(crops, cfg)
    initial_epoch = _prepare_resume(cfg, split_sha256)
    prior_history = _prior_history(cfg, initial_epoch)
    keras.utils.set_random_seed(cfg.train.seed)  # weights, dropout and the augmentation layers
    n_per_epoch = inputs.examples_per_epoch(train_crops, cfg.train)
    steps_per_epoch = math.ceil(n_per_epoch / cfg.train.batch_size)
    with _strategy().scope():
        classifier = model.build(cfg.train, cfg.faces.crop_size, cfg.faces.margin)
        parent = model.initialize_from(classifier, cfg.train.init) if cfg.train.init else None
        classifier = model.compile_model(classifier, cfg.train, steps_per_epoch)
    is_balanced = cfg.train.epoch_sampling == "balanced"  # the sampling balances the classes: no weights
    class_weight = None if is_balanced else class_weights(train_crops["label_index"], cfg.train)
    started = time.monotonic()
    classifier.fit(
        inputs.make_dataset(train_crops, cfg, training=True),
        validation_data=inputs.make_dataset(val_crops, cfg, training=False) if len(val_crops) else None,
        epochs=cfg.train.epochs,
        steps_per_epoch=steps_per_epoch if is_balanced else None,  # the balanced set is endless
        class_weight=class_weight,
        shuffle=False,  # make_dataset shuffles (seeded, every epoch); Keras cannot shuffle a tf.data set
        callbacks=[*_callbacks(cfg, prior_history, n_per_epoch, progress), *callbacks],
        verbose=0,
    )
    card = _card(cfg, split_sha256, train_crops, val_crops, bad, class_weight, time.monotonic() - started)
    card["init"] = parent  # the classifier this one was fine-tuned from (path, sha256), or None
    _calibrate_and_write(cfg, card, crops)
    shutil.rmtree(cfg.checkpoint_dir, ignore_errors=True)  # the card now marks the model complete
    return card


def evaluate(cfg: Config, *, progress: bool = False) -> dict[str, Any]:
    """Frame-level accuracy, ROC AUC and log loss of the trained model on the test split.

    Written to cfg.train_metrics_json; a re-run with the same model card reads it back.

    Raises:
        StageOutputMissing: no complete model yet (run fit first).
        SplitError: the split has no test crops.
    """
    card = read_card(cfg)
    if cfg.train_metrics_json.is_file():
        saved = json.loads(cfg.train_metrics_json.read_text())
        if saved.get("model_sha256") == files.sha256(cfg.model_path):  # a new training or calibration: measure
            return saved
    split = runfolder.read_split(cfg.split_csv)
    test_crops, bad = inputs.check_crops(
        split[split["split"] == "test"], cfg.work_dir, cfg.faces.crop_size, cfg.train.on_bad_crop
    )
    if test_crops.empty:
        raise SplitError(f"{cfg.split_csv}: no readable test crops; set split.test_fraction > 0 and re-run notebook 03")
    classifier = model.load(cfg.model_path)
    test_crops = inputs.examples(test_crops, cfg, "test")
    batches = inputs.make_dataset(test_crops, cfg, training=False)
    fake_probability = classifier.predict(batches, verbose=1 if progress else 0)[:, 0]
    test_metrics = frame_metrics(test_crops["label_index"].to_numpy(), fake_probability)
    result = {**test_metrics, "n_test_crops": len(test_crops), "backbone": cfg.train.backbone,
              "n_bad_test_crops_skipped": len(bad), "model_name": cfg.train.model_name,
              "model_trained_at": card["trained_at"], "model_sha256": files.sha256(cfg.model_path)}
    files.write_json(result, cfg.train_metrics_json)
    return result


def calibrate(cfg: Config, val_examples: pd.DataFrame) -> dict[str, Any]:
    """Fit the calibration of the saved model on val (lowest log loss) and save the model with it.

    "temperature" fits T (P(FAKE) = sigmoid(logit / T)); "platt" fits T and an offset b
    (sigmoid(logit / T + b)), which also takes on val's share of FAKE. T is at least
    train.min_temperature; with train.calibration "none", or a val split of one class, T stays 1
    and b 0. Returns method, temperature, offset and val log loss before and after (none without val).
    """
    if val_examples.empty:  # split.val_fraction 0: config_rules has required calibration none
        return {"method": "none", "temperature": 1.0, "offset": 0.0, "n_val_examples": 0}
    classifier = model.load(cfg.model_path)
    labels = val_examples["label_index"].to_numpy(dtype=int)
    logit = model.logits(classifier).predict(inputs.make_dataset(val_examples, cfg, training=False), verbose=0)[:, 0]
    before = log_loss_of_logits(labels, logit, 1.0)
    method = cfg.train.calibration if len(np.unique(labels)) == 2 else "none"
    value, offset = 1.0, 0.0
    if method == "temperature":
        value = fit_temperature(labels, logit, cfg.train.min_temperature)
    elif method == "platt":
        value, offset = fit_platt(labels, logit, cfg.train.min_temperature)
    model.set_temperature(classifier, value, offset)
    with files.atomic_path(cfg.model_path) as partial:
        classifier.save(partial)
    return {"method": method, "temperature": round(value, 4), "offset": round(offset, 4),
            "val_log_loss_before": round(before, 4),
            "val_log_loss_after": round(log_loss_of_logits(labels, logit, value, offset), 4),
            "n_val_examples": len(labels)}


def calibration_examples(val_crops: pd.DataFrame, val_examples: pd.DataFrame) -> pd.DataFrame:
    """What the temperature is fitted on: the given val crops when they hold both classes.

    Pseudo-fakes are easier or harder than real ones in ways nobody controls; a temperature
    fitted on them left self-blend models over-confident on real FAKE videos (dev set: video
    log loss 0.85). Without given FAKE crops in val, the val examples are all there is.
    """
    if val_crops["label_index"].nunique() == 2:
        return val_crops
    return val_examples


def fit_temperature(labels: np.ndarray, logit: np.ndarray, min_temperature: float = 1.0) -> float:
    """The T >= min_temperature (at most MAX_TEMPERATURE) minimising the log loss of sigmoid(logit / T).

    A model with no signal on val, or the wrong sign, is best at T -> infinity: every score a
    coin's 0.5. The cap is high enough that such a model's log loss is then within 1e-4 of a
    coin's on any data (the excess is about mean |logit| / 2T), not worse (at the old cap of
    100 the demo model scored 0.696 on FF++ against a coin's 0.693).
    """
    from scipy.optimize import minimize_scalar

    low, high = np.log(max(min_temperature, 1e-3)), np.log(MAX_TEMPERATURE)
    result = minimize_scalar(lambda log_t: log_loss_of_logits(labels, logit, float(np.exp(log_t))),
                             bounds=(low, max(high, low + 1e-6)), method="bounded")
    return float(np.exp(result.x))


def fit_platt(labels: np.ndarray, logit: np.ndarray, min_temperature: float = 1.0) -> tuple[float, float]:
    """The T >= min_temperature (at most MAX_TEMPERATURE) and offset b minimising the log loss of
    sigmoid(logit / T + b): Platt scaling, the temperature plus val's FAKE share.

    Starts from the best temperature alone, so it is never worse on val than "temperature".
    """
    from scipy.optimize import minimize

    low, high = np.log(max(min_temperature, 1e-3)), np.log(MAX_TEMPERATURE)
    start = np.log(fit_temperature(labels, logit, min_temperature))
    result = minimize(lambda p: log_loss_of_logits(labels, logit, float(np.exp(p[0])), float(p[1])),
                      x0=[start, 0.0], method="L-BFGS-B", bounds=[(low, max(high, low + 1e-6)), (None, None)])
    return float(np.exp(result.x[0])), float(result.x[1])


def frame_metrics(labels: np.ndarray, fake_probability: np.ndarray) -> dict[str, float | None]:
    """test_auc, test_accuracy (threshold 0.5) and test_log_loss; AUC is None with one class only."""
    labels = np.asarray(labels).astype(int)
    fake_probability = np.asarray(fake_probability, dtype="float64")
    has_both = len(np.unique(labels)) == 2
    return {
        "test_auc": float(sk_metrics.roc_auc_score(labels, fake_probability)) if has_both else None,
        "test_accuracy": float(sk_metrics.accuracy_score(labels, fake_probability >= 0.5)),
        "test_log_loss": log_loss(labels, fake_probability),
    }


def class_weights(label_index: pd.Series, train: config.TrainConfig) -> dict[int, float] | None:
    """Balanced class weights (n / (2 * n_class)) when train.class_weights is "auto" and classes differ.

    None when the split is balanced within train.unbalanced_ratio, or weights are off.
    """
    counts = label_index.value_counts()
    if train.class_weights == "none" or len(counts) < 2:
        return None
    if counts.max() / counts.min() < train.unbalanced_ratio:
        return None
    return {int(label): len(label_index) / (2 * int(count)) for label, count in counts.items()}


def is_trained(cfg: Config) -> bool:
    """A complete model exists and its card matches the current split.csv and train config."""
    if not (cfg.model_path.is_file() and cfg.model_card.is_file() and cfg.split_csv.is_file()):
        return False
    card = json.loads(cfg.model_card.read_text())
    return card.get("split_sha256") == files.sha256(cfg.split_csv) and card.get("fingerprint") == fingerprint(cfg)


def read_card(cfg: Config) -> dict[str, Any]:
    """The model card of a complete model. Raises StageOutputMissing when there is none."""
    if not (cfg.model_card.is_file() and cfg.model_path.is_file()):
        raise StageOutputMissing(f"{cfg.model_card}: no complete model yet; run train.fit (notebook 04) first")
    return json.loads(cfg.model_card.read_text())


def read_history(cfg: Config) -> pd.DataFrame:
    """The per-epoch history (epoch 1 = first), empty when training has not started."""
    if not cfg.history_csv.is_file():
        return pd.DataFrame(columns=["epoch"])
    return pd.read_csv(cfg.history_csv)


def fingerprint(cfg: Config) -> dict[str, Any]:
    """What a trained model depends on besides split.csv: the train section and the crop size."""
    return {"train": config.to_dict(cfg)["train"], "crop_size": cfg.faces.crop_size}


# --- callbacks --------------------------------------------------------------------------------


class _HistoryLog(keras.callbacks.Callback):
    """Per-epoch metrics to a CSV rewritten atomically each epoch (CSVLogger appends in place)."""

    def __init__(self, path: Path, prior_history: pd.DataFrame):
        super().__init__()
        self.path = path
        self.rows = prior_history.to_dict("records")
        self._epoch_started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        seconds = round(time.monotonic() - self._epoch_started, 2)
        self.rows.append({"epoch": epoch + 1, **(logs or {}), "learning_rate": learning_rate, "seconds": seconds})
        files.write_csv(pd.DataFrame(self.rows), self.path)


class _BestModel(keras.callbacks.Callback):
    """Save the whole model atomically whenever the monitored value improves."""

    def __init__(self, path: Path, monitor: str, best: float | None):
        super().__init__()
        self.path, self.monitor, self.best = path, monitor, best
        self.is_better = np.less if monitor.endswith("loss") else np.greater

    def on_epoch_end(self, epoch, logs=None):
        value = epoch + 1 if self.monitor == "epoch" else (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if self.best is None or self.is_better(value, self.best):
            self.best = float(value)
            with files.atomic_path(self.path) as partial:
                self.model.save(partial)


class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that remembers the best value and the wait from the epochs before a resume."""

    def __init__(self, prior_history: pd.DataFrame, **kwargs):
        super().__init__(**kwargs)
        self.prior_history = prior_history

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        values = self.prior_history.get(self.monitor, pd.Series(dtype=float)).dropna()
        if values.empty:
            return
        best_row = values.idxmin() if self.mode == "min" else values.idxmax()
        self.best = float(values[best_row])
        self.best_epoch = int(self.prior_history.loc[best_row, "epoch"]) - 1
        self.wait = int(self.prior_history["epoch"].max()) - 1 - self.best_epoch


class _Backup(keras.callbacks.BackupAndRestore):
    """Keras' backup, every `save_freq` steps and also at each epoch's end (Keras' own skips the epoch
    end when it saves by steps). Resuming restores the last backup's weights and restarts its epoch."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.save_freq != "epoch":
            self._save_model()


def _callbacks(cfg: Config, prior_history: pd.DataFrame, n_train: int, progress: bool) -> list:
    monitor = _monitor(cfg)
    mode = "min" if monitor.endswith("loss") else "max"
    values = prior_history.get(monitor, pd.Series(dtype=float)).dropna()
    has_best = cfg.model_path.is_file() and not values.empty
    best = (values.min() if mode == "min" else values.max()) if has_best else None
    chosen = [
        _HistoryLog(cfg.history_csv, prior_history),
        _BestModel(cfg.model_path, monitor, best),
        *([_ResumableEarlyStopping(prior_history, monitor=monitor, mode=mode, patience=cfg.train.patience)]
          if monitor != "epoch" else []),
        # Last of the state keepers: an epoch is backed up only once history and best model have it.
        _Backup(str(cfg.checkpoint_dir), save_freq=cfg.train.backup_steps or "epoch", delete_checkpoint=False),
    ]
    if progress:  # one bar over the epochs, at most ~30 updates: an executed notebook stays readable
        every = max(1, math.ceil(cfg.train.epochs / 30))
        # and one over the batches when an epoch is long (a face set's takes minutes), with its time left;
        # both then refresh at tqdm's own interval (run_all.py: TQDM_MININTERVAL), not at every batch
        is_long = math.ceil(n_train / cfg.train.batch_size) >= LONG_EPOCH_STEPS
        refresh = {} if is_long else {"miniters": every, "mininterval": 0}
        chosen.append(TqdmCallback(epochs=cfg.train.epochs, data_size=n_train, batch_size=cfg.train.batch_size,
                                   verbose=int(is_long), **refresh))
    return chosen


# --- private helpers ----------------------------------------------------------------------


def _monitor(cfg: Config) -> str:
    """What picks the kept epoch: train.monitor on val, or without val the epoch number (the last one is kept)."""
    return cfg.train.monitor if _has_val(cfg) else "epoch"


def _has_val(cfg: Config) -> bool:
    return config_rules.holds_val(cfg.split.val_fraction, cfg.split.val_groups, cfg.split.frame_level_val)


def _fit_splits(crops: pd.DataFrame, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and val examples: the split's crops plus the pseudo-fakes train.fakes asks for."""
    train_crops, val_crops = crops[crops["split"] == "train"], crops[crops["split"] == "val"]
    if val_crops.empty and _has_val(cfg):
        raise SplitError(f"{cfg.split_csv}: no val crops to select the best epoch; re-run notebook 03")
    train_examples = inputs.examples(train_crops, cfg, "train")
    if train_examples["label_index"].nunique() < 2:
        needs = "REAL crops" if cfg.train.fakes != "given" else "both REAL and FAKE crops (or train.fakes: self_blend)"
        raise SplitError(f"{cfg.split_csv}: the train split needs {needs}; check notebook 03")
    return train_examples, inputs.examples(val_crops, cfg, "val")


def _refuse_to_replace(cfg: Config) -> None:
    """A finished model of another kind (REPLACED_ONLY_BY_NAME) is kept: the user names the new one.

    Other changes (epochs, learning rate, augmentation) retrain it under its name, as before.
    A key the old card lacks (added by a later version) counts as unchanged.
    """
    if not (cfg.model_card.is_file() and cfg.model_path.is_file()):
        return
    old_train = json.loads(cfg.model_card.read_text()).get("fingerprint", {}).get("train", {})
    new_train = json.loads(json.dumps(fingerprint(cfg)))["train"]
    changed = [f"{key}: {old_train[key]!r} -> {new_train[key]!r}" for key in REPLACED_ONLY_BY_NAME
               if key in old_train and old_train[key] != new_train[key]]
    if changed:
        raise ConfigError(f"{cfg.model_path}: a model of another kind ({'; '.join(changed)}); set train.model_name "
                          f"to a new name (run_all.py -p train.model_name NAME) to keep both, or delete "
                          f"{cfg.model_card.name} to replace it")


def _differs_in_calibration_alone(cfg: Config, split_sha256: str) -> bool:
    """A complete model of this split whose train settings differ from cfg's in CALIBRATION_KEYS alone."""
    if not (cfg.model_card.is_file() and cfg.model_path.is_file()):
        return False
    card = json.loads(cfg.model_card.read_text())

    def without_calibration(recorded: dict[str, Any]) -> dict[str, Any]:
        train_keys = {k: v for k, v in recorded.get("train", {}).items() if k not in CALIBRATION_KEYS}
        return {**recorded, "train": train_keys}

    new = json.loads(json.dumps(fingerprint(cfg)))
    return (card.get("split_sha256") == split_sha256
            and without_calibration(card.get("fingerprint", {})) == without_calibration(new))


def _recalibrate(cfg: Config, crops: pd.DataFrame) -> dict[str, Any]:
    """Fit cfg's calibration on the complete model again; its card then records it and cfg's settings."""
    card = read_card(cfg)
    card["fingerprint"] = fingerprint(cfg)
    return _calibrate_and_write(cfg, card, crops)


def _adopt(cfg: Config, split_sha256: str, crops: pd.DataFrame, bad: pd.DataFrame) -> dict[str, Any]:
    """train.epochs 0: train.init's classifier unchanged but for its calibration, fitted on this split.

    Nothing trains, so every labelled crop outside test (train and val) calibrates: a general model
    made to give honest probabilities on a user's own footage from a few labelled videos, in the
    time of scoring them. The test split stays unseen.
    """
    known = crops[crops["split"] != "test"]
    if known["label_index"].nunique() < 2:
        raise SplitError(f"{cfg.split_csv}: calibrating train.init needs REAL and FAKE crops outside the test split; "
                         "lower split.test_fraction or add labelled videos, then re-run notebook 03")
    started = time.monotonic()
    cfg.model_card.unlink(missing_ok=True)
    cfg.history_csv.unlink(missing_ok=True)  # no epochs: an earlier run's history would describe another model
    classifier = model.build(cfg.train, cfg.faces.crop_size, cfg.faces.margin)
    parent = model.initialize_from(classifier, cfg.train.init)
    with files.atomic_path(cfg.model_path) as partial:
        classifier.save(partial)
    card = _card(cfg, split_sha256, known.iloc[:0], known, bad, None, time.monotonic() - started)
    card["init"] = parent
    return _calibrate_and_write(cfg, card, crops)


def _calibration_set(cfg: Config, crops: pd.DataFrame) -> pd.DataFrame:
    """The crops the calibration is fitted on: val's (calibration_examples), or with train.epochs 0,
    when nothing trains, every given crop outside test."""
    if cfg.train.epochs == 0:
        return crops[crops["split"] != "test"]
    val_crops = crops[crops["split"] == "val"]
    return calibration_examples(val_crops, inputs.examples(val_crops, cfg, "val"))


def _calibrate_and_write(cfg: Config, card: dict[str, Any], crops: pd.DataFrame) -> dict[str, Any]:
    """Calibrate the saved model, export its ONNX sidecar and write the card, which marks it complete."""
    card["calibration"] = calibrate(cfg, _calibration_set(cfg, crops))
    card["onnx"] = _export_sidecar(cfg)  # after calibration: the export must carry the final temperature
    files.write_json(card, cfg.model_card)
    return card


def _prepare_resume(cfg: Config, split_sha256: str) -> int:
    """Finished epochs to resume after; wipes a backup made with another config or split."""
    cfg.model_card.unlink(missing_ok=True)  # the card marks a complete model; this one is about to change
    run_state = {"fingerprint": fingerprint(cfg), "split_sha256": split_sha256}
    state_path = cfg.checkpoint_dir / RUN_STATE
    if state_path.is_file() and json.loads(state_path.read_text()) == json.loads(json.dumps(run_state)):
        backup_path = cfg.checkpoint_dir / BACKUP_STATE
        return int(json.loads(backup_path.read_text())["epoch"]) if backup_path.is_file() else 0
    shutil.rmtree(cfg.checkpoint_dir, ignore_errors=True)
    cfg.history_csv.unlink(missing_ok=True)
    cfg.model_path.unlink(missing_ok=True)  # a model from another config must not pass for this one
    files.write_json(run_state, state_path)
    return 0


def _prior_history(cfg: Config, initial_epoch: int) -> pd.DataFrame:
    """History rows of the epochs the backup holds (a crash can log an epoch it did not back up)."""
    history = read_history(cfg)
    return history[history["epoch"] <= initial_epoch].reset_index(drop=True)


def _card(cfg: Config, split_sha256: str, train_crops: pd.DataFrame, val_crops: pd.DataFrame,
          bad: pd.DataFrame, class_weight: dict[int, float] | None, seconds: float) -> dict[str, Any]:
    history = read_history(cfg)
    monitor = _monitor(cfg)
    best_row = pd.Series({"epoch": 0})  # train.epochs 0: no epoch, the parent as it came
    if not history.empty:
        values = history[monitor]
        best_row = history.loc[values.idxmin() if monitor.endswith("loss") else values.idxmax()]
    return {
        "model_name": cfg.train.model_name,
        "model_path": str(cfg.model_path),
        "backbone": cfg.train.backbone,
        "fingerprint": fingerprint(cfg),
        "split_csv": str(cfg.split_csv),
        "split_sha256": split_sha256,
        "n_train_crops": len(train_crops),
        "n_val_crops": len(val_crops),
        "n_bad_crops_skipped": len(bad),
        "class_weight": class_weight,
        "best_epoch": int(best_row["epoch"]),
        "best_metrics": {k: float(v) for k, v in best_row.items() if k not in ("epoch", "seconds")},
        "epochs_run": int(history["epoch"].max()) if not history.empty else 0,
        "seconds_this_run": round(seconds, 1),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def _export_sidecar(cfg: Config) -> dict[str, Any]:
    """Write cfg.model_path's ONNX sidecar; its name and sha256 for the card, or why there is none.

    A failed export does not fail training: the model still scores with Keras (the engine falls
    back and says so), and the card and a warning say what went wrong.
    """
    try:
        onnx_path = model.export_onnx(cfg.model_path)
    except Exception as err:  # noqa: BLE001 - tf2onnx can fail on a layer; the .keras model is still good
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        warnings.warn(f"{cfg.model_path}: no ONNX sidecar ({reason}); scoring will use Keras", stacklevel=2)
        return {"path": None, "error": reason}
    return {"path": onnx_path.name, "sha256": files.sha256(onnx_path), "keras_sha256": files.sha256(cfg.model_path)}


def _strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over all GPUs when there are several; the default strategy otherwise."""
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()

