import importlib.util
import json
from pathlib import Path

import pytest

REPORT_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"

MACHINE = {"cpu": "AMD EPYC", "cores": 2, "load_average_start": 1.52, "python": "3.11.7", "load_average_end": 1.55}

ACCURACY = {
    "command": "python benchmarks/bench_accuracy.py runs/ffpp/models/ffpp.keras DEVSET "
               "--groups-from runs/ffpp/manifests/split.csv --out benchmarks/results/accuracy_ffpp_heldout.json",
    "benchmark": "accuracy", "model": "runs/ffpp/models/ffpp.keras",
    "model_card": {"backbone": "small_cnn_srm", "fakes": "mixed", "epochs": 24, "image_size": 128, "best_epoch": 19,
                   "temperature": 2.31, "trained_at": "2024-05-02T10:11:12", "n_train_crops": 2944, "seconds": 1812.4},
    "folder": "DEVSET", "groups_from": "runs/ffpp/manifests/split.csv", "split": "test", "seconds": 211.3,
    "commit": "d34d199", "n_videos": 48, "label_counts": {"REAL": 16, "FAKE": 32, "unlabelled": 0},
    "video": {"auc": 0.7512, "log_loss": 0.5534, "accuracy": 0.6875, "ap": 0.8421, "eer": 0.3125},
    "intervals": {"auc": [0.5731, 0.8906], "log_loss": [0.4402, 0.6811], "accuracy": [0.5625, 0.8125],
                  "ap": [0.7012, 0.9388], "eer": [0.1875, 0.4375]},
    "per_method": {"Deepfakes": {"auc": 0.9375, "auc_interval": [0.8203, 1.0], "n_videos": 11},
                   "FaceSwap": {"auc": 0.5234, "auc_interval": [0.3125, 0.7344], "n_videos": 10}},
    "frame_auc": 0.6942, "n_not_judged": 1, "bootstrap": {"n": 2000, "seed": 0, "confidence": 0.95, "unit": "video"},
    "machine": MACHINE,
}


@pytest.fixture
def report():
    spec = importlib.util.spec_from_file_location("report", REPORT_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def results_dir(tmp_path):
    """One JSON of each kind; the training-input one without a `benchmark` key, as bench_train's is."""
    folder = tmp_path / "results"
    folder.mkdir()
    records = {
        "faces_devset.json": {"command": "python benchmarks/bench_faces.py DEVSET", "benchmark": "bench_faces",
                              "videos": 10, "ours_stage_s_per_video": 0.928, "ours_stage_vs_every_frame_floor": 0.31,
                              "machine": MACHINE},
        "inference_devset.json": {"command": "python benchmarks/bench_inference.py DEVSET",
                                  "benchmark": "bench_inference", "ours_folder_s_per_video": 1.177,
                                  "ours_folder_vs_every_frame_floor": 0.41, "machine": MACHINE},
        "startup_devset.json": {"command": "python benchmarks/bench_startup.py ONE.mp4", "benchmark": "bench_startup",
                                "startup_s": 1.19, "one_video_peak_rss_mb": 311, "phases_s": {"video_warm": 1.459},
                                "machine": MACHINE},
        "train_input_sample.json": {"pipeline_img_s": 764.8, "train_step_img_s": 119.0, "ratio": 3.29},
        "accuracy_ffpp_heldout.json": ACCURACY,
    }
    for name, record in records.items():
        (folder / name).write_text(json.dumps(record, indent=1) + "\n")
    return folder


def test_docs_results_md_is_up_to_date_with_the_json_files(report):
    problem = report.check(report.RESULTS_DIR, report.OUTPUT)
    assert problem is None, problem  # it names docs/results.md and says to run python benchmarks/report.py


def test_accuracy_section_shows_auc_and_log_loss_with_their_intervals(report, results_dir):
    page = report.render(results_dir)
    assert "0.751 [0.573, 0.891]" in page
    assert "0.553 [0.440, 0.681]" in page


def test_accuracy_section_shows_auc_per_method_and_the_model_card(report, results_dir):
    page = report.render(results_dir)
    assert "| `accuracy_ffpp_heldout.json` | Deepfakes | 0.938 [0.820, 1.0] | 11 |" in page
    assert "small_cnn_srm" in page and "2.31" in page and "`d34d199`" in page


def test_a_paired_comparison_shows_the_signed_differences_and_the_share_of_draws(report, results_dir):
    assert "Paired comparisons" not in report.render(results_dir)  # no file has one: no table
    against = {"model": "runs/ffpp/models/six_epochs.keras", "n_videos": 48,
               "difference": {"auc": 0.0301, "log_loss": -0.0342},
               "intervals": {"auc": [-0.0441, 0.1132], "log_loss": [-0.0701, -0.0021]},
               "better_share": {"auc": 0.78, "log_loss": 0.981}}
    (results_dir / "accuracy_ffpp_heldout.json").write_text(json.dumps(dict(ACCURACY, against=against)))
    row = next(line for line in report.render(results_dir).splitlines() if "six_epochs.keras" in line)
    assert row == ("| `accuracy_ffpp_heldout.json` | `six_epochs.keras` | 48 | +0.030 [-0.044, +0.113] "
                   "| -0.034 [-0.070, -0.002] | 78% of draws | 98% of draws |")


def test_each_kind_gets_its_section_and_its_headline_figure(report, results_dir):
    page = report.render(results_dir)
    for heading in ("## Face stage", "## Scoring", "## Start-up", "## Training input", "## Accuracy"):
        assert heading in page
    assert "0.928 s (0.31×)" in page and "1.18 s (0.41×)" in page and "311 MB" in page and "| 765 |" in page


def test_a_key_the_json_lacks_is_shown_as_a_dash(report, results_dir):
    page = report.render(results_dir)
    train_row = next(line for line in page.splitlines() if line.startswith("| `train_input_sample.json` | 765"))
    assert train_row == "| `train_input_sample.json` | 765 | — | 119.0 | 3.29 |"


def test_a_kind_without_files_says_so(report, results_dir):
    (results_dir / "accuracy_ffpp_heldout.json").unlink()
    assert "No `accuracy_*.json` in the results folder yet." in report.render(results_dir)


def test_check_passes_after_write(report, results_dir, tmp_path):
    output = report.write(results_dir, tmp_path / "docs" / "results.md")
    assert report.main(["--check", "--results", str(results_dir), "--out", str(output)]) == 0


def test_check_on_a_stale_file_fails_with_a_one_line_message(report, results_dir, tmp_path, capsys):
    output = report.write(results_dir, tmp_path / "docs" / "results.md")
    output.write_text(output.read_text().replace("0.751", "0.851"))
    assert report.main(["--check", "--results", str(results_dir), "--out", str(output)]) == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and str(output) in message and "python benchmarks/report.py" in message


def test_a_figure_that_was_not_measured_is_written_as_null(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("_common", REPORT_PATH.parent / "_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    monkeypatch.setattr("sys.argv", ["bench_faces.py", "VIDEOS", "--baseline-frames", "0"])
    out = tmp_path / "result.json"
    common.write_result({"original_s": common.mean([]), "ratios": [1.5, common.mean([])], "seconds": 2.0}, out)
    record = json.loads(out.read_text())
    assert record["original_s"] is None and record["ratios"] == [1.5, None] and record["seconds"] == 2.0
    assert record["command"].endswith("bench_faces.py VIDEOS --baseline-frames 0") and record["commit"]


def _curve_point(families: int, in_domain_auc: float, cross_auc: float) -> dict:
    def figures(auc: float) -> dict:
        return {"video": {"auc": auc, "log_loss": 0.5}, "intervals": {"auc": [round(auc - 0.05, 2), round(auc + 0.05, 2)],
                                                                      "log_loss": [0.45, 0.55]}}

    return {"families": str(families), "n_train_families": families, "n_train_crops": 6 * families,
            "train_seconds": 10.0 * families, "epoch_seconds_median": 5.0 * families, "train_peak_rss_mb": 2100,
            "in_domain": figures(in_domain_auc), "cross": figures(cross_auc)}


def test_a_learning_curve_is_a_table_per_point_and_a_chart_ordered_by_families(report, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    curve = {"benchmark": "learning_curve", "command": "python benchmarks/bench_learning_curve.py --config F",
             "points": [_curve_point(4000, 0.81, 0.62), _curve_point(1000, 0.74, 0.58)], "machine": MACHINE}
    (folder / "learning_curve_faces.json").write_text(json.dumps(curve))
    page = report.render(folder)
    section = page.split("## How much data")[1]
    rows = [line for line in section.splitlines() if line.startswith("| 1000") or line.startswith("| 4000")]
    assert rows[0].startswith("| 1000 | 6000 | 10000 | 5000 | 2100 | 0.74 [0.69, 0.79] | 0.5 [0.45, 0.55] | 0.58 [0.53,")
    assert rows[1].startswith("| 4000 |")
    assert 'x-axis "train families" [1000, 4000]' in section
    assert "line [0.74, 0.81]" in section and "line [0.58, 0.62]" in section


def test_an_ingest_record_is_a_row_of_stage_times_rate_and_memory(report, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    record = {"benchmark": "bench_ingest", "items": 4002, "items_in_folder": 90656, "faces_found": 3960,
              "stage_s": {"01_list": 1.2, "02_faces": 61.5, "03_split": 0.8}, "items_per_s": 63.2,
              "whole_folder_s_at_this_rate": 1434.4, "peak_rss_mb": 1210, "workers": 2, "machine": MACHINE}
    (folder / "ingest_faces.json").write_text(json.dumps(record))
    section = report.render(folder).split("## Face-image sets through notebooks 01-03")[1]
    assert "| `ingest_faces.json` | 4002 (90656) | 3960 | 2 | 1.2 | 61.5 | 0.8 | 63.2 | 1434 | 1210 MB |" in section
