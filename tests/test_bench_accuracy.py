"""benchmarks/bench_accuracy.py: a model measured on a labelled folder, and two models compared on the same videos."""

import importlib.util
import json
from pathlib import Path

import pytest

from videos import close_up_video, save_tiny_model

BENCH_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_accuracy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", BENCH_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Six labelled close-up videos of different lengths, and a config that judges them (4 faces suffice)."""
    folder = tmp_path_factory.mktemp("bench") / "labelled"
    folder.mkdir()
    entries = {}
    for index in range(3):
        close_up_video(folder / f"real{index}.mp4", n_frames=8 + 2 * index)
        close_up_video(folder / f"fake{index}.mp4", n_frames=9 + 2 * index)
        entries[f"real{index}.mp4"] = {"label": "REAL"}
        entries[f"fake{index}.mp4"] = {"label": "FAKE", "original": f"real{index}.mp4"}
    (folder / "metadata.json").write_text(json.dumps(entries))
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
