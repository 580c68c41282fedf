"""benchmarks/bench_learning_curve.py: the recipe trained on more and more families, each model measured."""

import json
from pathlib import Path

import pandas as pd
import pytest

import videos
from conftest import load_benchmark
from dfhelpers import config, faces, metadata, runfolder, splitting


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_learning_curve")


@pytest.fixture(scope="module")
def face_run(tmp_path_factory):
    """A Kaggle-layout face set of 10 families (a REAL and two fakes each) through notebooks 01-03."""
    root = tmp_path_factory.mktemp("curve")
    rows = [(f"{kind}{family}{k}.mp4", label, f"real{family}0.mp4" if label == "FAKE" else "")
            for family in range(10) for kind, label, k in (("real", "REAL", 0), ("fake", "FAKE", 1), ("fake", "FAKE", 2))]
    folder = videos.write_kaggle_faces(root / "faces", videos.tight_face(), rows)
    run_yaml = root / "run.yaml"
    run_yaml.write_text(f"work_dir: run\ndata_dirs: [{folder}]\nfaces: {{workers: 1}}\n"
                        "split: {balance: none, val_fraction: 0.2, test_fraction: 0.2}\n"
                        "train: {backbone: small_cnn, weights: null, head: pool, cnn_filters: [4], image_size: 32,\n"
                        "        epochs: 1, batch_size: 4, epoch_sampling: balanced, calibration: none}\n"
                        "score: {aggregation: mean, trim: 0, min_faces: 1, bootstrap: 20}\n")
    cfg = config.load(run_yaml)
    items = metadata.read_videos(cfg.data_dirs)
    faces.run_stage(cfg, items)
    split = splitting.build_split(items, faces.load_crops(cfg), cfg.split)
    splitting.write_split(split, cfg.split_csv)
    return run_yaml, cfg, folder


def test_a_point_keeps_n_train_families_with_all_their_fakes_and_every_val_and_test_row(bench, face_run):
    _, cfg, _ = face_run
    split = runfolder.read_split(cfg.split_csv).drop(columns="label_index")
    kept = bench.keep_train_families(split, "2", seed=0)
    train_rows = kept[kept["split"] == "train"]
    assert train_rows["group"].nunique() == 2
    every_row_of_those_groups = split[(split["split"] == "train") & split["group"].isin(set(train_rows["group"]))]
    assert len(train_rows) == len(every_row_of_those_groups) and set(train_rows["label"]) == {"REAL", "FAKE"}
    assert kept[kept["split"] != "train"].reset_index(drop=True).equals(
        split[split["split"] != "train"].reset_index(drop=True))
    assert bench.keep_train_families(split, "all", seed=0).equals(split)


def test_the_curve_trains_each_point_and_measures_it_in_domain_and_across_datasets(bench, face_run, tmp_path):
    run_yaml, cfg, folder = face_run
    out = tmp_path / "curve.json"
    assert bench.main(["--config", str(run_yaml), "--families", "2", "all", "--cross", str(folder),
                       "--cross-crops", str(cfg.work_dir), "--bootstrap", "20", "--runs", str(tmp_path / "points"),
                       "--out", str(out)]) == 0
    points = json.loads(out.read_text())["points"]
    assert [p["families"] for p in points] == ["2", "all"]
    assert [p["n_train_families"] for p in points] == [2, runfolder.read_split(cfg.split_csv).query(
        "split == 'train'")["group"].nunique()]
    test_items = pd.read_csv(cfg.split_csv).query("split == 'test'")["video"].nunique()
    for point in points:
        assert Path(point["model"]).is_file() and point["in_domain"]["n_videos"] == test_items
        assert point["cross"]["n_videos"] == 30 and len(point["in_domain"]["intervals"]["auc"]) == 2
        assert point["train_peak_rss_mb"] > 100 and point["epochs"] == 1 and point["epoch_seconds_median"] > 0
    # run again: each model is reused, and its training time is what its history recorded, not the seconds of reuse
    again = tmp_path / "again.json"
    assert bench.main(["--config", str(run_yaml), "--families", "2", "--bootstrap", "20",
                       "--runs", str(tmp_path / "points"), "--out", str(again)]) == 0
    reused, = json.loads(again.read_text())["points"]
    history = pd.read_csv(Path(points[0]["model"]).with_suffix(".history.csv"))
    assert reused["train_peak_rss_mb"] is None and reused["in_domain"] == points[0]["in_domain"]
    assert reused["train_seconds"] == round(float(history["seconds"].sum()), 1) > 0
