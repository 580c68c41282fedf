"""dfhelpers.train: fit, resume after an interruption, skip when complete, card, evaluation."""

import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

import crops
from dfhelpers import config, files, inputs, logloss, model, train
from dfhelpers.config import TrainConfig
from dfhelpers.errors import ConfigError, SplitError

CROP_SIZE = 24


class _Interrupt(Exception):
    """Stands for a kernel restart or Ctrl-C in the middle of fit."""


class _InterruptAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Interrupt(f"interrupted after epoch {epoch + 1}")


class _EpochsStarted(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def _config(work_dir: Path, split: dict | None = None, **train_options: object) -> config.Config:
    options = {"model_name": "tiny", "backbone": "small_cnn", "weights": None, "fakes": "given",
               "image_size": CROP_SIZE, "cnn_filters": [4, 8], "head": "pool", "batch_size": 8, "epochs": 2,
               # what these tests were tuned on: original.yaml's constant step, checkpoint, shifts and flips
               "learning_rate": 1.0e-4, "lr_schedule": "constant", "monitor": "val_loss",
               "rotation": 0.0, "shift": 0.2, "vertical_flip": True, **train_options}
    raw = {"work_dir": str(work_dir), "data_dirs": [], "faces": {"crop_size": CROP_SIZE, "margin": 8},
           "split": split or {}, "train": options}
    return config.from_dict(raw, base_dir=work_dir)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    crops.write_square_run(tmp_path, CROP_SIZE)
    return tmp_path


def test_fit_writes_the_model_history_and_card(run_dir):
    cfg = _config(run_dir)
    card = train.fit(cfg, progress=False)
    history = train.read_history(cfg)
    assert history["epoch"].tolist() == [1, 2]
    assert {"loss", "val_loss", "acc", "val_acc", "auc", "val_auc"} <= set(history.columns)
    assert json.loads(cfg.model_card.read_text()) == card
    assert card["best_epoch"] in (1, 2) and card["n_train_crops"] == 16
    assert model.load(cfg.model_path).output_shape == (None, 1)
    assert not cfg.checkpoint_dir.exists()


def test_without_val_groups_every_other_group_trains_and_the_last_epoch_is_kept(run_dir):
    cfg = _config(run_dir, split={"val_fraction": 0}, calibration="none", epochs=3)
    split = pd.read_csv(cfg.split_csv)
    n_val = int((split["split"] == "val").sum())
    files.write_csv(split.replace({"split": {"val": "train"}}), cfg.split_csv)  # notebook 03 with val_fraction 0
    card = train.fit(cfg, progress=False)
    history = train.read_history(cfg)
    assert history["epoch"].tolist() == [1, 2, 3] and not any(c.startswith("val_") for c in history.columns)
    assert (card["best_epoch"], card["n_val_crops"], card["n_train_crops"]) == (3, 0, 16 + n_val)
    assert card["calibration"]["method"] == "none" and model.temperature(model.load(cfg.model_path)) == 1.0


def test_interrupted_fit_resumes_at_the_next_epoch(run_dir):
    cfg = _config(run_dir, epochs=3)
    with pytest.raises(_Interrupt):
        train.fit(cfg, progress=False, callbacks=[_InterruptAfterEpoch(epoch=0)])
    assert train.read_history(cfg)["epoch"].tolist() == [1]
    assert not cfg.model_card.exists()
    started = _EpochsStarted()
    train.fit(cfg, progress=False, callbacks=[started])
    assert started.epochs == [1, 2]
    assert train.read_history(cfg)["epoch"].tolist() == [1, 2, 3]


def test_complete_model_is_not_retrained(run_dir):
    cfg = _config(run_dir, epochs=1)
    first = train.fit(cfg, progress=False)
    started = _EpochsStarted()
    second = train.fit(cfg, progress=False, callbacks=[started])
    assert started.epochs == [] and second == first
    assert train.is_trained(cfg)


def test_a_changed_split_makes_the_model_stale(run_dir):
    cfg = _config(run_dir, epochs=1)
    train.fit(cfg, progress=False)
    split = pd.read_csv(cfg.split_csv)
    split.iloc[:-1].to_csv(cfg.split_csv, index=False)
    assert not train.is_trained(cfg)


def test_a_finished_model_is_not_replaced_by_a_model_of_another_kind(run_dir):
    first = _config(run_dir, epochs=1)
    train.fit(first, progress=False)
    saved = first.model_path.read_bytes()
    with pytest.raises(ConfigError, match=r"cnn_filters.*train.model_name"):
        train.fit(_config(run_dir, epochs=1, cnn_filters=[4, 4]), progress=False)
    assert first.model_path.read_bytes() == saved and train.is_trained(first)
    other = _config(run_dir, epochs=1, cnn_filters=[4, 4], model_name="narrow")
    train.fit(other, progress=False)
    assert train.is_trained(other) and train.is_trained(first)


def test_other_fitting_settings_retrain_the_model_under_its_name(run_dir):
    train.fit(_config(run_dir, epochs=1), progress=False)
    longer = _config(run_dir, epochs=2)
    train.fit(longer, progress=False)
    assert train.is_trained(longer) and train.read_history(longer)["epoch"].tolist() == [1, 2]


def test_a_changed_calibration_alone_refits_the_calibration_not_the_model(run_dir):
    first = train.fit(_config(run_dir, epochs=1), progress=False)
    before = train.evaluate(_config(run_dir, epochs=1))
    platt = _config(run_dir, epochs=1, calibration="platt", min_temperature=50.0)  # T >= 50: another model file
    started = _EpochsStarted()
    card = train.fit(platt, progress=False, callbacks=[started])
    assert started.epochs == [] and card["trained_at"] == first["trained_at"]
    assert card["calibration"]["method"] == "platt" and card["calibration"]["temperature"] >= 50
    assert train.is_trained(platt)
    assert card["onnx"]["keras_sha256"] == files.sha256(platt.model_path)  # the sidecar follows
    after = train.evaluate(platt)  # measured again: the scores changed, the training did not
    assert after["model_sha256"] != before["model_sha256"] and after["model_trained_at"] == before["model_trained_at"]


def test_evaluate_writes_frame_level_test_metrics(run_dir):
    cfg = _config(run_dir, epochs=1)
    train.fit(cfg, progress=False)
    metrics = train.evaluate(cfg)
    assert json.loads(cfg.train_metrics_json.read_text()) == metrics
    assert metrics["n_test_crops"] == 16 and metrics["backbone"] == "small_cnn"


def test_training_on_separable_crops_separates_the_test_identities(tmp_path):
    crops.write_square_run(tmp_path, CROP_SIZE, n_per_video=12)
    cfg = _config(tmp_path, epochs=6, learning_rate=1.0e-2, batch_size=16)
    train.fit(cfg, progress=False)
    metrics = train.evaluate(cfg)
    assert metrics["test_auc"] >= 0.95  # accuracy needs settled BatchNorm statistics: more steps than a test affords


@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_the_card_records_a_calibration_that_does_not_raise_val_log_loss(run_dir, method):
    card = train.fit(_config(run_dir, epochs=2, calibration=method), progress=False)
    calibration = card["calibration"]
    assert calibration["method"] == method and calibration["temperature"] >= 1.0
    assert calibration["val_log_loss_after"] <= calibration["val_log_loss_before"] + 1e-6
    loaded = model.load(_config(run_dir).model_path)
    assert model.temperature(loaded) == pytest.approx(calibration["temperature"], rel=1e-3)
    assert model.offset(loaded) == pytest.approx(calibration["offset"], abs=1e-3)
    assert card["onnx"]["path"] is not None  # the ONNX export carries the offset too (checked against Keras)


def test_fit_temperature_softens_over_confident_logits_and_never_sharpens():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    honest = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 1.5, 400)  # calibrated at T = 1 for this noise
    assert train.fit_temperature(labels, 8 * honest) > 3  # eight times too sure: T near 8 undoes it
    assert train.fit_temperature(labels, honest / 8, min_temperature=1.0) == pytest.approx(1.0, abs=1e-3)


def test_platt_takes_on_vals_fake_share_and_never_does_worse_than_the_temperature():
    rng = np.random.default_rng(0)
    labels = (rng.random(4000) < 0.8).astype(int)  # 80% FAKE, as a face set's val
    logit = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 1.5, 4000)  # honest for half FAKE
    value, offset = train.fit_platt(labels, logit)
    assert offset == pytest.approx(np.log(4), abs=0.25)  # the prior's log odds, 0.8 / 0.2
    assert value == pytest.approx(1.0, abs=0.15)
    temperature_only = train.fit_temperature(labels, logit)
    assert (logloss.log_loss_of_logits(labels, logit, value, offset)
            < logloss.log_loss_of_logits(labels, logit, temperature_only) - 0.05)
    assert train.fit_platt(labels, logit / 8, min_temperature=1.0)[0] == pytest.approx(1.0, abs=1e-3)  # no sharpening


def test_a_model_wrong_on_val_is_calibrated_to_a_coin():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    wrong = -8 * (np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 1.5, 400))  # sure, and the wrong way round
    value = train.fit_temperature(labels, wrong)
    assert value > 1000
    scores = 1 / (1 + np.exp(-wrong / value))
    assert np.abs(scores - 0.5).max() < 0.01
    coin = float(np.log(2))
    assert coin < logloss.log_loss_of_logits(labels, wrong, value) < coin + 1e-4  # a coin's log loss, not worse


def _faces(rng: np.random.Generator, label: str) -> np.ndarray:
    """A smooth face-like disc on a textured background: something for a self-blend to seam."""
    yy, xx = np.mgrid[:CROP_SIZE, :CROP_SIZE] / CROP_SIZE
    face = ((xx - 0.5) ** 2 + (yy - 0.55) ** 2 < 0.1)[..., None]
    background = rng.integers(0, 255, (CROP_SIZE, CROP_SIZE, 3))
    return np.where(face, 180 + rng.integers(0, 20, (CROP_SIZE, CROP_SIZE, 3)), background).astype("uint8")


def test_a_real_only_split_trains_end_to_end_with_self_blended_fakes(tmp_path):
    crops.write_run(tmp_path, 6, _faces, labels=("REAL",), with_landmarks=True)
    cfg = _config(tmp_path, fakes="self_blend", epochs=2)
    card = train.fit(cfg, progress=False)
    assert card["n_train_crops"] == 2 * 12  # each REAL crop once as itself, once self-blended
    metrics = train.evaluate(cfg)
    assert metrics["n_test_crops"] == 24 and metrics["test_auc"] is not None


def test_self_blending_crops_without_landmarks_names_the_fix(run_dir):
    with pytest.raises(SplitError, match="landmarks.*notebook 02"):
        train.fit(_config(run_dir, fakes="self_blend"), progress=False)


def test_class_weights_only_when_the_split_is_unbalanced():
    balanced = pd.Series([0, 1] * 10)
    unbalanced = pd.Series([0] * 5 + [1] * 15)
    assert train.class_weights(balanced, TrainConfig()) is None
    assert train.class_weights(unbalanced, TrainConfig()) == {0: 2.0, 1: pytest.approx(2 / 3)}
    assert train.class_weights(unbalanced, TrainConfig(class_weights="none")) is None


def test_frame_metrics_of_a_perfect_ranking():
    metrics = train.frame_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.6, 0.9]))
    assert metrics["test_auc"] == 1.0 and metrics["test_accuracy"] == 1.0


def test_the_temperature_is_fitted_on_given_val_fakes_when_there_are_any():
    given = pd.DataFrame({"path": ["a", "b"], "label_index": [0, 1]})
    pseudo = pd.DataFrame({"path": ["a", "a"], "label_index": [0, 1], "is_blend": [False, True]})
    assert train.calibration_examples(given, pseudo) is given
    real_only = given.iloc[:1]
    assert train.calibration_examples(real_only, pseudo) is pseudo


def test_fit_writes_an_up_to_date_onnx_sidecar_and_records_it_in_the_card(run_dir):
    from dfhelpers import files, onnxfile

    cfg = _config(run_dir)
    card = train.fit(cfg, progress=False)
    sidecar = cfg.model_path.with_suffix(".onnx")
    assert onnxfile.fresh_session(cfg.model_path) is not None  # exported after calibration: the final bytes
    assert card["onnx"] == {"path": sidecar.name, "sha256": files.sha256(sidecar),
                            "keras_sha256": files.sha256(cfg.model_path)}


def test_a_model_that_cannot_be_exported_still_trains_and_its_card_says_why(run_dir):
    cfg = _config(run_dir, image_size=32)  # antialiased resizing: no ONNX equivalent (see model.export_onnx)
    with pytest.warns(UserWarning, match="no ONNX sidecar"):
        card = train.fit(cfg, progress=False)
    assert card["onnx"]["path"] is None and "onnxruntime" in card["onnx"]["error"]
    assert not cfg.model_path.with_suffix(".onnx").exists() and train.is_trained(cfg)


def test_balanced_epochs_walk_through_every_example_of_the_larger_class(tmp_path):
    crops.write_square_run(tmp_path, CROP_SIZE)
    cfg = _config(tmp_path, epoch_sampling="balanced", batch_size=4)
    split = pd.read_csv(cfg.split_csv).assign(label_index=lambda s: (s["label"] == "FAKE").astype(int))
    # three FAKE crops for every REAL one: an epoch shows each REAL crop once and as many FAKE crops
    train_rows = pd.concat([split[split["split"] == "train"]] + [split[(split["split"] == "train")
                                                                      & (split["label"] == "FAKE")]] * 2)
    n_per_epoch = inputs.examples_per_epoch(train_rows, cfg.train)
    assert n_per_epoch == 2 * (train_rows["label_index"] == 0).sum() == 16
    batches = inputs.make_dataset(train_rows.reset_index(drop=True), cfg, training=True)
    labels = np.concatenate([y.numpy() for _, y in batches.take(3 * n_per_epoch // 4)])
    assert labels.mean() == 0.5 and (labels[0::2] != labels[1::2]).all()  # REAL and FAKE in turn


def test_balanced_mixed_epochs_show_given_fakes_and_blends_in_equal_shares(tmp_path):
    crops.write_run(tmp_path, 4, _faces, with_landmarks=True)
    cfg = _config(tmp_path, epoch_sampling="balanced", fakes="mixed", batch_size=4)
    split = pd.read_csv(cfg.split_csv).assign(label_index=lambda s: (s["label"] == "FAKE").astype(int))
    train_rows = split[split["split"] == "train"]
    # five given FAKE crops for every REAL one, and one blend of each REAL one
    train_rows = pd.concat([train_rows] + [train_rows[train_rows["label"] == "FAKE"]] * 4, ignore_index=True)
    examples = inputs.examples(train_rows, cfg, "train")
    rows = list(inputs._balanced_rows(examples, cfg).take(4 * 8).as_numpy_iterator())
    labels = np.array([row["label"] for row in rows])
    blends = np.array([row["is_blend"] for row in rows])
    assert (labels[0::2] == 0).all() and (labels[1::2] == 1).all()  # REAL and FAKE in turn
    assert blends[1::4].sum() == 0 and blends[3::4].all()  # the FAKE turns alternate: given, blend


def test_balanced_fit_runs_the_epoch_length_of_the_smaller_class(run_dir):
    cfg = _config(run_dir, epoch_sampling="balanced", batch_size=4)
    card = train.fit(cfg, progress=False)
    assert card["epochs_run"] == 2 and card["class_weight"] is None
    assert train.read_history(cfg)["epoch"].tolist() == [1, 2]


def test_init_starts_from_a_trained_classifier_and_the_card_names_it(tmp_path):
    crops.write_square_run(tmp_path, CROP_SIZE)
    parent_cfg = _config(tmp_path, model_name="parent", epochs=1)
    train.fit(parent_cfg, progress=False)
    child_cfg = _config(tmp_path, model_name="child", epochs=1, init=str(parent_cfg.model_path))
    started = model.build(child_cfg.train, CROP_SIZE)
    model.initialize_from(started, child_cfg.train.init)
    parent = model.load(parent_cfg.model_path)
    assert all(np.array_equal(a, b) for a, b in zip(started.get_weights(), parent.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(model.build(child_cfg.train, CROP_SIZE).get_weights(),
                                                        parent.get_weights()))
    card = train.fit(child_cfg, progress=False)
    assert card["init"] == {"path": str(parent_cfg.model_path), "sha256": files.sha256(parent_cfg.model_path)}


def test_init_of_another_framing_warns_and_names_the_framing_it_learned(tmp_path):
    crops.write_square_run(tmp_path, CROP_SIZE)
    parent_cfg = _config(tmp_path, model_name="parent", epochs=1, framing="padded_face")
    train.fit(parent_cfg, progress=False)
    same = _config(tmp_path, model_name="same", framing="padded_face", init=str(parent_cfg.model_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.initialize_from(model.build(same.train, CROP_SIZE, margin=8), same.train.init)
    other = _config(tmp_path, model_name="other", init=str(parent_cfg.model_path))  # framing: margin
    with pytest.warns(UserWarning, match="learned framing padded_face, this model is built with margin; "
                                         "set train.framing: padded_face"):
        model.initialize_from(model.build(other.train, CROP_SIZE, margin=8), other.train.init)


def test_zero_epochs_calibrates_the_parent_on_every_crop_outside_test_and_trains_nothing(tmp_path):
    crops.write_square_run(tmp_path, CROP_SIZE)
    parent_cfg = _config(tmp_path, model_name="parent", epochs=1, calibration="none")
    train.fit(parent_cfg, progress=False)
    child_cfg = _config(tmp_path, model_name="child", epochs=0, init=str(parent_cfg.model_path),
                        calibration="platt", min_temperature=3.0)  # T >= 3: the child's scores must change
    started = _EpochsStarted()
    card = train.fit(child_cfg, progress=False, callbacks=[started])
    split = pd.read_csv(child_cfg.split_csv)
    assert started.epochs == [] and (card["epochs_run"], card["best_epoch"], card["n_train_crops"]) == (0, 0, 0)
    assert card["init"]["sha256"] == files.sha256(parent_cfg.model_path)
    assert card["calibration"]["n_val_examples"] == int((split["split"] != "test").sum())  # train and val
    assert card["calibration"]["method"] == "platt" and card["calibration"]["temperature"] >= 3.0
    parent, child = model.load(parent_cfg.model_path), model.load(child_cfg.model_path)
    assert model.temperature(child) == pytest.approx(card["calibration"]["temperature"], rel=1e-3)
    trained = [(a, b) for a, b in zip(parent.get_weights(), child.get_weights()) if a.size > 1]  # not T or b
    assert trained and all(np.array_equal(a, b) for a, b in trained)
    assert train.read_history(child_cfg).empty and train.is_trained(child_cfg)
    assert train.evaluate(child_cfg)["n_test_crops"] == int((split["split"] == "test").sum())
    assert train.fit(child_cfg, progress=False)["trained_at"] == card["trained_at"]  # complete: not redone


def test_zero_epochs_without_a_model_to_start_from_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs is 0, train.init is null;.*set train.init"):
        _config(tmp_path, epochs=0)
    adopted = _config(tmp_path, split={"val_fraction": 0}, epochs=0, warmup_epochs=1, lr_schedule="cosine",
                      init=str(tmp_path / "parent.keras"))  # no val and a warm-up: nothing trains, both fine
    assert adopted.train.epochs == 0


def test_init_from_a_classifier_of_another_architecture_names_the_keys(tmp_path):
    crops.write_square_run(tmp_path, CROP_SIZE)
    parent_cfg = _config(tmp_path, model_name="parent", epochs=1)
    train.fit(parent_cfg, progress=False)
    child_cfg = _config(tmp_path, model_name="child", cnn_filters=[4, 8, 16], init=str(parent_cfg.model_path))
    with pytest.raises(ConfigError, match="train.init .*set train.backbone, head and image_size"):
        train.fit(child_cfg, progress=False)


class _InterruptAtStep(keras.callbacks.Callback):
    """Stands for a kernel restart in the middle of an epoch: after `step` steps of epoch `epoch`."""

    def __init__(self, epoch: int, step: int):
        super().__init__()
        self.epoch, self.step, self.current = epoch, step, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch + 1 == self.step:
            self.weights = [w.copy() for w in self.model.get_weights()]
            raise _Interrupt(f"interrupted at step {self.step} of epoch {self.epoch + 1}")


def test_an_epoch_interrupted_midway_restarts_from_its_last_step_backup(run_dir):
    cfg = _config(run_dir, epochs=2, batch_size=2, backup_steps=2)  # 8 steps an epoch, a backup every 2
    interrupt = _InterruptAtStep(epoch=1, step=4)
    with pytest.raises(_Interrupt):
        train.fit(cfg, progress=False, callbacks=[interrupt])
    resumed = model.build(cfg.train, CROP_SIZE)
    resumed.load_weights(cfg.checkpoint_dir / "latest.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(resumed.get_weights(), interrupt.weights))
    started = _EpochsStarted()
    train.fit(cfg, progress=False, callbacks=[started])
    assert started.epochs == [1] and train.read_history(cfg)["epoch"].tolist() == [1, 2]
