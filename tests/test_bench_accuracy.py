"""benchmarks/bench_accuracy.py: a model measured on a labelled folder (its videos, a run's stored crops of them, or
the videos of one split's identity groups), and two models compared on the same videos."""

import json

import pandas as pd
import pytest

from conftest import load_benchmark
from dfhelpers import config, faces, metadata
from videos import close_up_video, face_video, middle_of_packet, save_tiny_model


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_accuracy")


def _real_and_fake_pairs(folder, n_pairs):
    """n REAL close-up videos and a FAKE of each, of different lengths; their metadata.json entries."""
    folder.mkdir()
    entries = {}
    for index in range(n_pairs):
        close_up_video(folder / f"real{index}.mp4", n_frames=8 + 2 * index)
        close_up_video(folder / f"fake{index}.mp4", n_frames=9 + 2 * index)
        entries[f"real{index}.mp4"] = {"label": "REAL"}
        entries[f"fake{index}.mp4"] = {"label": "FAKE", "original": f"real{index}.mp4"}
    return entries


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Six labelled close-up videos of different lengths, and a config that judges them (4 faces suffice)."""
    folder = tmp_path_factory.mktemp("bench") / "labelled"
    (folder / "metadata.json").write_text(json.dumps(_real_and_fake_pairs(folder, 3)))
    run_yaml = folder.parent / "run.yaml"
    run_yaml.write_text("work_dir: run\ndata_dirs: []\nscore:\n  min_faces: 4\n  trim: 1\n")
    return folder, run_yaml


def test_against_the_same_model_every_difference_is_zero_and_never_better(bench, labelled, tmp_path, capsys):
    folder, run_yaml = labelled
    model = save_tiny_model(tmp_path / "tiny.keras")
    out = tmp_path / "accuracy.json"
    assert bench.main([str(model), str(folder), "--config", str(run_yaml), "--bootstrap", "50",
                       "--against", str(model), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["n_videos"] == 6 and record["against"]["n_videos"] == 6
    assert record["against"]["model"] == str(model)
    assert record["against"]["difference"]["auc"] == 0 and record["against"]["difference"]["log_loss"] == 0
    assert record["against"]["intervals"]["log_loss"] == [0, 0] and record["against"]["better_share"]["auc"] == 0
    assert "minus" in capsys.readouterr().out


def test_against_another_model_gives_the_difference_of_the_two_measurements(bench, labelled, tmp_path):
    folder, run_yaml = labelled
    baseline = save_tiny_model(tmp_path / "tiny.keras")
    candidate = save_tiny_model(tmp_path / "sharper.keras", sharpness=3.0)  # the same ranking, other probabilities
    paths = {name: tmp_path / f"{name}.json" for name in ("alone", "paired")}
    common = [str(folder), "--config", str(run_yaml), "--bootstrap", "50"]
    assert bench.main([str(baseline), *common, "--out", str(paths["alone"])]) == 0
    assert bench.main([str(candidate), *common, "--against", str(baseline), "--out", str(paths["paired"])]) == 0
    alone, paired = (json.loads(paths[name].read_text()) for name in ("alone", "paired"))
    difference = paired["against"]["difference"]
    assert difference["auc"] == pytest.approx(0, abs=1e-3)  # a monotone change keeps the order of the videos
    assert difference["log_loss"] == pytest.approx(paired["video"]["log_loss"] - alone["video"]["log_loss"], abs=2e-4)
    assert difference["log_loss"] != 0


@pytest.fixture(scope="module")
def cropped(tmp_path_factory):
    """Two REAL and two FAKE close-up videos, a FAKE one that breaks mid-stream, and a run folder whose face
    stage cropped them all (its config, run.yaml, is the one the benchmark measures with)."""
    folder = tmp_path_factory.mktemp("cropped") / "labelled"
    entries = _real_and_fake_pairs(folder, 2)
    cut = face_video(folder / "cut.mp4", n_frames=30, faststart=True)
    cut.write_bytes(cut.read_bytes()[: middle_of_packet(cut, 15)])
    entries["cut.mp4"] = {"label": "FAKE", "original": "real0.mp4"}
    (folder / "metadata.json").write_text(json.dumps(entries))
    run_yaml = folder.parent / "run.yaml"
    run_yaml.write_text("work_dir: run\ndata_dirs: []\nfaces:\n  workers: 1\nscore:\n  min_faces: 4\n  trim: 1\n")
    cfg = config.load(run_yaml)
    faces.run_stage(cfg, metadata.list_videos(folder))
    return folder, run_yaml, cfg


def _measure(bench, model, folder, run_yaml, out, *options):
    assert bench.main([str(model), str(folder), "--config", str(run_yaml), "--bootstrap", "50", *map(str, options),
                       "--out", str(out)]) == 0
    return json.loads(out.read_text())


def _save_colour_and_place_model(path, crop_size=160):
    """Crops -> P(FAKE) from the mean colour of their top-left quarter, red against blue: unlike save_tiny_model's
    mean of every pixel and channel, it changes when a crop's channels are swapped or its pixels move."""
    import keras

    crops = keras.Input((crop_size, crop_size, 3))
    half = crop_size // 2
    corner = keras.layers.Cropping2D(((0, half), (0, half)))(keras.layers.Rescaling(1 / 255)(crops))
    red_against_blue = keras.initializers.Constant([[6.0], [-1.0], [-4.0]])
    fake_probability = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=red_against_blue)(
        keras.layers.GlobalAveragePooling2D()(corner))
    keras.Model(crops, fake_probability).save(path)
    return path


def test_against_set_compares_one_scoring_choice_of_the_same_model_paired(bench, labelled, tmp_path):
    folder, run_yaml = labelled
    model = _save_colour_and_place_model(tmp_path / "corner.keras")
    mirrored_yaml = tmp_path / "mirrored.yaml"
    mirrored_yaml.write_text(run_yaml.read_text().replace("score:\n", "score:\n  mirror: true\n"))
    plain = _measure(bench, model, folder, run_yaml, tmp_path / "plain.json")
    mirrored = _measure(bench, model, folder, mirrored_yaml, tmp_path / "mirrored.json")
    paired = _measure(bench, model, folder, mirrored_yaml, tmp_path / "paired.json", "--against-set", "score.mirror=false")
    against = paired["against"]
    assert against["model"] == str(model) and against["settings"] == ["score.mirror=false"]
    assert paired["video"] == mirrored["video"]
    difference = mirrored["video"]["log_loss"] - plain["video"]["log_loss"]
    assert difference != 0 and against["difference"]["log_loss"] == pytest.approx(difference, abs=2e-4)
    with pytest.raises(SystemExit, match="score.NAME=VALUE"):
        bench.main([str(model), str(folder), "--config", str(mirrored_yaml), "--against-set", "mirror=false"])


def test_crops_from_a_run_gives_the_figures_of_scoring_its_videos_again(bench, cropped, tmp_path):
    folder, run_yaml, cfg = cropped
    model = _save_colour_and_place_model(tmp_path / "corner.keras")
    stored = _measure(bench, model, folder, run_yaml, tmp_path / "stored.json", "--crops-from", cfg.work_dir)
    again = _measure(bench, model, folder, run_yaml, tmp_path / "again.json")
    for key in ("n_videos", "label_counts", "n_not_judged", "bootstrap"):
        assert stored[key] == again[key], key
    assert stored["n_videos"] == 5 and stored["frame_auc"] == pytest.approx(again["frame_auc"], abs=1e-4)
    assert stored["video"] == pytest.approx(again["video"], abs=1e-4)
    for name, interval in again["intervals"].items():
        assert stored["intervals"][name] == pytest.approx(interval, abs=1e-4), name


def test_a_video_that_breaks_mid_stream_counts_as_judged_as_dfdetect_evaluate_counts_it(bench, cropped, tmp_path):
    folder, run_yaml, cfg = cropped
    statuses = faces.load_status(cfg).set_index("video")["status"]
    assert statuses["cut.mp4"].startswith("partial: ")  # scored on the faces of the frames before the break
    record = _measure(bench, save_tiny_model(tmp_path / "tiny.keras"), folder, run_yaml, tmp_path / "out.json",
                      "--crops-from", cfg.work_dir)
    assert record["n_videos"] == 5 and record["n_not_judged"] == 0


def _write_split(path, split_of_pair, label=None):
    """split.csv with two crops of each video, real{i} and fake{i} in one identity group, in split_of_pair[i]."""
    rows = [{"path": f"faces/{kind}{index}/{frame}_0.jpg", "video": f"{kind}{index}.mp4", "frame": frame, "track": 0,
             "group": f"real{index}.mp4", "label": label or kind.upper(), "split": split,
             "original": "" if kind == "real" else f"real{index}.mp4"}
            for index, split in enumerate(split_of_pair) for kind in ("real", "fake") for frame in (0, 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("split, chosen", [("test", ["fake2.mp4", "real2.mp4"]), ("val", ["fake1.mp4", "real1.mp4"])])
def test_groups_from_measures_only_the_videos_of_the_chosen_split(bench, labelled, tmp_path, split, chosen):
    folder, run_yaml = labelled
    split_csv = _write_split(tmp_path / "manifests" / "split.csv", ["train", "val", "test"])
    record = _measure(bench, save_tiny_model(tmp_path / "tiny.keras"), folder, run_yaml, tmp_path / "out.json",
                      "--groups-from", split_csv, "--split", split, "--cache", tmp_path / "cache")
    assert record["n_videos"] == 2 and record["label_counts"] == {"REAL": 1, "FAKE": 1, "unlabelled": 0}
    assert record["groups_from"] == str(split_csv) and record["split"] == split
    # the engine's cache holds an entry per video it scored, named after the video file
    assert sorted(entry.name.rsplit(".", 2)[0] for entry in (tmp_path / "cache").rglob("*.json")) == chosen


def test_groups_from_a_split_csv_the_training_would_refuse_is_a_one_line_error_naming_it(bench, labelled, tmp_path):
    folder, run_yaml = labelled
    split_csv = _write_split(tmp_path / "manifests" / "split.csv", ["train", "val", "test"], label="MAYBE")
    with pytest.raises(SystemExit, match=r"split\.csv: unknown label\(s\) \['MAYBE'\]") as raised:
        bench.main([str(tmp_path / "unused.keras"), str(folder), "--groups-from", str(split_csv)])
    assert "\n" not in str(raised.value.code)


def test_the_model_card_summary_names_the_classifier_a_model_started_from(bench, tmp_path):
    card = {"backbone": "efficientnet_lite0", "best_epoch": 0, "fingerprint": {"train": {"epochs": 0}},
            "calibration": {"method": "temperature", "temperature": 6.3}, "init": {"path": "p.keras", "sha256": "ab" * 32}}
    (tmp_path / "adopted.json").write_text(json.dumps(card))
    (tmp_path / "own.json").write_text(json.dumps({**card, "init": None}))
    assert bench._card(tmp_path / "adopted.keras")["init_sha256"] == "ab" * 6
    assert bench._card(tmp_path / "own.keras")["init_sha256"] is None
