"""The installed `dfdetect` command, run as a user would (subprocess), on tiny videos and a tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from dfhelpers import cli, scoring
from videos import close_up_video, save_tiny_model, tight_face, write_image

DFDETECT = Path(sys.executable).with_name("dfdetect")


def run_dfdetect(*args):
    return subprocess.run([str(DFDETECT), *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def folder_with_a_broken_file(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    close_up_video(videos / "face.mp4")
    close_up_video(videos / "face_again.mov", n_frames=8)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated garbage")
    (videos / "notes.txt").write_text("not a video: directories are scanned by extension")
    return videos


@pytest.fixture
def tiny_model(tmp_path):
    return save_tiny_model(tmp_path / "tiny.keras")


def test_a_broken_file_gets_its_own_row_and_exit_code_1_while_the_rest_are_scored(folder_with_a_broken_file,
                                                                                    tiny_model):
    result = run_dfdetect("predict", folder_with_a_broken_file, "--model", tiny_model)
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert result.returncode == 1, result.stderr
    assert sorted(rows) == ["broken.mp4", "face.mp4", "face_again.mov"]
    assert "unreadable: " in rows["broken.mp4"] and "not judged (unreadable)" in rows["broken.mp4"]
    assert rows["face.mp4"].split()[2] in ("REAL", "FAKE") and rows["face.mp4"].split()[4] == "ok"
    assert 0.0 < float(rows["face.mp4"].split()[1]) < 1.0
    # too few faces for the default trimmed mean: the prior as its score, but no verdict
    assert rows["face_again.mov"].split()[1:4] == ["0.500", "not", "judged"]
    assert "not judged (few_faces)" in rows["face_again.mov"] and "few_faces:" in rows["face_again.mov"]


def test_json_lines_for_videos_that_all_score_and_exit_code_0(folder_with_a_broken_file, tiny_model, tmp_path):
    (tmp_path / "run.yaml").write_text("work_dir: run\ndata_dirs: []\nscore:\n  min_faces: 4\n  trim: 1\n")
    result = run_dfdetect("predict", folder_with_a_broken_file / "face_again.mov", "--model", tiny_model,
                          "--json", "--config", tmp_path / "run.yaml", "--quiet")
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["video"] == "face_again.mov" and row["status"] == "ok" and row["n_faces"] == 8
    assert row["verdict"] in ("REAL", "FAKE") and 0.0 < row["score"] < 1.0


def test_a_face_image_is_judged_on_its_one_face_with_the_defaults(tiny_model, tmp_path):
    image = write_image(tmp_path / "face.jpg", tight_face())
    result = run_dfdetect("predict", image, "--model", tiny_model, "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["status"] == "ok" and row["n_faces"] == 1 and row["verdict"] in ("REAL", "FAKE")


def test_a_missing_model_is_a_one_line_error_with_exit_code_2(folder_with_a_broken_file, tmp_path):
    result = run_dfdetect("predict", folder_with_a_broken_file, "--model", tmp_path / "absent.keras")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "absent.keras" in result.stderr


def test_usage_errors_are_one_line_with_exit_code_2():
    result = run_dfdetect("predict", "some.mp4")
    assert result.returncode == 2 and "--model" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_missing_inputs_and_empty_folders_are_reported_not_scored(tmp_path):
    (tmp_path / "empty").mkdir()
    paths, bad = cli.expand_inputs([str(tmp_path / "empty"), str(tmp_path / "absent.mp4")])
    assert paths == [] and [reason.split(":")[0] for _, reason in bad] == ["no_videos", "missing"]


def test_frames_prints_one_json_line_per_face_with_box_track_and_score(folder_with_a_broken_file, tiny_model,
                                                                       tmp_path):
    explain_dir = tmp_path / "explained"
    result = run_dfdetect("predict", folder_with_a_broken_file / "face.mp4", "--model", tiny_model, "--frames",
                          "--explain", explain_dir, "--quiet")
    assert result.returncode == 0, result.stderr
    faces = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(faces) == 16 and [face["frame"] for face in faces] == sorted(face["frame"] for face in faces)
    assert all(face["video"] == "face.mp4" and face["track"] == 0 and 0.0 < face["score"] < 1.0 for face in faces)
    x1, y1, x2, y2 = faces[0]["box"]
    assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
    # the explanation strip: a picture of six crops over two rows, not an empty canvas
    import matplotlib.image

    picture = matplotlib.image.imread(explain_dir / "face.png")
    assert picture.shape[1] > 6 * 100 and picture[..., :3].std() > 0.05


def test_evaluate_prints_metrics_with_intervals_per_method_and_writes_reports(tmp_path, tiny_model):
    folder = tmp_path / "labelled"
    folder.mkdir()
    for index in range(4):
        close_up_video(folder / f"real{index}.mp4", n_frames=12 + index)
        close_up_video(folder / f"fake{index}.mp4", n_frames=13 + index)
    close_up_video(folder / "blank.mp4", n_frames=4, with_face=False)
    entries = {f"real{i}.mp4": {"label": "REAL", "method": "youtube"} for i in range(4)}
    entries.update({f"fake{i}.mp4": {"label": "FAKE", "original": f"real{i}.mp4",
                                     "method": "Deepfakes" if i % 2 else "FaceSwap"} for i in range(4)})
    entries["blank.mp4"] = {"label": "FAKE", "original": "real0.mp4", "method": "FaceSwap"}
    (folder / "metadata.json").write_text(json.dumps(entries))
    (tmp_path / "run.yaml").write_text("work_dir: run\ndata_dirs: []\nscore:\n  min_faces: 4\n  trim: 1\n"
                                       "  bootstrap: 100\n")
    args = ("evaluate", folder, "--model", tiny_model, "--out", tmp_path / "out", "--config", tmp_path / "run.yaml",
            "--quiet")
    first, second = run_dfdetect(*args), run_dfdetect(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # seeded bootstrap, and the second run came from the score cache
    lines = first.stdout.splitlines()
    assert "9 videos (4 REAL, 5 FAKE); 1 not judged" in lines[0] and "100 bootstrap resamples" in lines[1]
    table = "\n".join(lines)
    for group in ("video  all", "frame  all", "part   labelled", "method Deepfakes +REAL", "FaceSwap +REAL", "youtube"):
        assert group in table
    assert "[" in table.split("video  all")[1].splitlines()[0]  # an interval beside the point estimate
    assert "note: method youtube: AUC, AP and EER undefined: every labelled video is REAL" in table
    saved = json.loads((tmp_path / "out" / "labelled" / "metrics.json").read_text())
    assert saved["n_prior"] == 1 and len(saved["intervals"]["auc"]) == 2 and saved["frame"]["n_faces"] > 0
    predictions = (tmp_path / "out" / "labelled" / "predictions.csv").read_text()
    assert "not judged (no_face)" in predictions and "method" in predictions.splitlines()[0]


def test_evaluate_reports_two_folders_of_one_name_apart(tmp_path, tiny_model):
    for parent, label in (("a", "REAL"), ("b", "FAKE")):
        folder = tmp_path / parent / "test_videos"
        folder.mkdir(parents=True)
        close_up_video(folder / "clip.mp4", n_frames=12)
        entry = {"label": label} if label == "REAL" else {"label": "FAKE", "original": "x.mp4"}
        (folder / "metadata.json").write_text(json.dumps({"clip.mp4": entry}))
    (tmp_path / "run.yaml").write_text("work_dir: run\ndata_dirs: []\nscore: {min_faces: 4, trim: 1, bootstrap: 20}\n")
    result = run_dfdetect("evaluate", tmp_path / "a" / "test_videos", tmp_path / "b" / "test_videos", "--model",
                          tiny_model, "--out", tmp_path / "out", "--config", tmp_path / "run.yaml", "--quiet")
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("==")] == [
        "== test_videos", "== test_videos-2"]
    first, second = (json.loads((tmp_path / "out" / name / "metrics.json").read_text())
                     for name in ("test_videos", "test_videos-2"))
    assert first["label_counts"]["REAL"] == 1 and second["label_counts"]["FAKE"] == 1
    for name, parent, label in (("test_videos", "a", "REAL"), ("test_videos-2", "b", "FAKE")):
        reports = tmp_path / "out" / name
        predictions = pd.read_csv(reports / "predictions.csv")
        assert predictions.columns.tolist() == [*scoring.PREDICTION_COLUMNS, "part"]
        (row,) = predictions.itertuples()  # this folder's one video, from this folder, with this folder's label
        assert (row.video, row.path, row.part, row.label) == (
            "clip.mp4", str(tmp_path / parent / "test_videos" / "clip.mp4"), "test_videos", label)
        assert row.status == "ok" and row.verdict in ("REAL", "FAKE") and row.n_faces == row.faces_used == 12
        frame_scores = pd.read_csv(reports / "frame_scores.csv")
        assert frame_scores.columns.tolist() == scoring.FACE_COLUMNS and len(frame_scores) == row.n_faces
        assert set(frame_scores["video"]) == {"clip.mp4"} and frame_scores["score"].between(0, 1).all()
        # the video's score is the run.yaml rule (a trimmed mean, trim 1) of the face scores beside it
        assert row.score == pytest.approx(np.sort(frame_scores["score"])[1:-1].mean(), abs=1e-6)
        submission = pd.read_csv(reports / "submission.csv")
        assert submission.to_dict("records") == [{"filename": "clip.mp4", "label": pytest.approx(row.score)}]
        roc = matplotlib.image.imread(reports / "figures" / "roc.png")
        assert roc.shape[0] > 200 and roc.shape[1] > 200 and roc[..., :3].std() > 0.05  # a drawn figure


def test_evaluate_against_a_baseline_prints_and_writes_paired_differences(tmp_path, tiny_model):
    folder = tmp_path / "labelled"
    folder.mkdir()
    entries = {}
    for index in range(3):
        close_up_video(folder / f"real{index}.mp4", n_frames=8 + 2 * index)
        close_up_video(folder / f"fake{index}.mp4", n_frames=9 + 2 * index)
        entries.update({f"real{index}.mp4": {"label": "REAL"},
                        f"fake{index}.mp4": {"label": "FAKE", "original": f"real{index}.mp4"}})
    (folder / "metadata.json").write_text(json.dumps(entries))
    (tmp_path / "run.yaml").write_text("work_dir: run\ndata_dirs: []\nscore: {min_faces: 4, trim: 1, bootstrap: 50}\n")
    sharper = save_tiny_model(tmp_path / "sharper.keras", sharpness=3.0)
    result = run_dfdetect("evaluate", folder, "--model", sharper, "--against", tiny_model, "--out", tmp_path / "out",
                          "--config", tmp_path / "run.yaml", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "== labelled: sharper.keras minus tiny.keras on the same 6 videos" in result.stdout
    comparison = json.loads((tmp_path / "out" / "labelled" / "comparison.json").read_text())
    mine, theirs = (json.loads((tmp_path / "out" / part / "labelled" / "metrics.json").read_text())
                    for part in (".", "against"))
    assert comparison["n_videos"] == 6 and comparison["against"] == str(tiny_model)
    assert comparison["difference"]["log_loss"] == pytest.approx(mine["log_loss"] - theirs["log_loss"])
    assert comparison["difference"]["log_loss"] != 0 and len(comparison["intervals"]["auc"]) == 2

    missing = run_dfdetect("evaluate", folder, "--model", sharper, "--against", tmp_path / "gone.keras",
                           "--out", tmp_path / "out2", "--quiet")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "gone.keras: model file not found" in missing.stderr


@pytest.mark.parametrize("arguments", [["--help"], ["predict", "some.mp4"]], ids=["help", "usage_error"])
def test_help_and_usage_errors_import_neither_torch_nor_tensorflow(arguments):
    code = ("import sys\nfrom dfhelpers import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(name for name in ('torch', 'tensorflow', 'keras') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr


def test_a_corrupt_model_is_a_one_line_error_with_exit_code_2_and_nothing_on_stdout(folder_with_a_broken_file,
                                                                                     tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a keras archive")
    result = run_dfdetect("predict", folder_with_a_broken_file / "face.mp4", "--model", corrupt, "--quiet")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "corrupt.keras" in result.stderr


def test_export_then_predict_gives_the_same_scores_without_the_hint_to_export(folder_with_a_broken_file, tiny_model):
    video = folder_with_a_broken_file / "face.mp4"
    with_keras = run_dfdetect("predict", video, "--model", tiny_model, "--json", "--quiet")
    hint = [line for line in with_keras.stderr.splitlines() if "dfdetect export" in line]
    assert with_keras.returncode == 0 and hint == [f"dfdetect: tiny.keras has no up-to-date tiny.onnx; "
                                                   f"run `dfdetect export {tiny_model}` for a faster start"]
    exported = run_dfdetect("export", tiny_model)
    assert exported.returncode == 0 and exported.stdout.strip() == str(tiny_model.with_suffix(".onnx"))
    with_onnx = run_dfdetect("predict", video, "--model", tiny_model, "--json", "--quiet")
    assert with_onnx.returncode == 0 and "dfdetect export" not in with_onnx.stderr
    keras_row, onnx_row = json.loads(with_keras.stdout), json.loads(with_onnx.stdout)
    assert onnx_row["n_faces"] == keras_row["n_faces"] > 0
    assert abs(onnx_row["score"] - keras_row["score"]) <= 1e-4


@pytest.mark.parametrize("model_suffix", [".keras", ".onnx"])
def test_predict_with_an_onnx_model_never_imports_tensorflow(folder_with_a_broken_file, tiny_model, model_suffix):
    from dfhelpers import model

    model.export_onnx(tiny_model)
    code = ("import sys\nfrom dfhelpers import cli\ncode = cli.main(sys.argv[1:])\n"
            "print(code, sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))")
    arguments = ["predict", folder_with_a_broken_file / "face.mp4", "--model", tiny_model.with_suffix(model_suffix),
                 "--quiet", "--json"]
    result = subprocess.run([sys.executable, "-c", code, *map(str, arguments)], capture_output=True, text=True,
                            timeout=300)
    assert json.loads(result.stdout.splitlines()[0])["status"] == "ok", result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stderr


@pytest.mark.parametrize("content", [None, b"PK\x03\x04 not really a keras archive"], ids=["missing", "corrupt"])
def test_export_of_a_missing_or_corrupt_model_is_one_line_with_exit_code_2(tmp_path, content):
    keras_path = tmp_path / "m.keras"
    if content is not None:
        keras_path.write_bytes(content)
    result = run_dfdetect("export", keras_path)
    assert result.returncode == 2 and result.stdout == "" and not (tmp_path / "m.onnx").exists()
    assert result.stderr.strip().count("\n") == 0 and f"{keras_path}: " in result.stderr


def test_evaluate_measures_a_folder_labelled_by_a_csv_and_reports_unlabelled_videos(tmp_path, tiny_model):
    folder = tmp_path / "any"
    folder.mkdir()
    for name in ("r0.mp4", "r1.mp4", "f0.mp4", "f1.mp4", "extra.mp4"):
        close_up_video(folder / name, n_frames=12)
    labels = tmp_path / "labels.csv"
    labels.write_text("video,label,method\nr0.mp4,REAL,youtube\nr1.mp4,REAL,youtube\nf0.mp4,FAKE,swap\n"
                      "f1.mp4,FAKE,swap\n")
    (tmp_path / "run.yaml").write_text("work_dir: run\ndata_dirs: []\nscore:\n  min_faces: 4\n  trim: 1\n"
                                       "  bootstrap: 50\n")
    result = run_dfdetect("evaluate", folder, "--model", tiny_model, "--labels", labels, "--out", tmp_path / "out",
                          "--config", tmp_path / "run.yaml", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "5 videos (2 REAL, 2 FAKE)" in result.stdout  # the fifth is unlabelled
    predictions = pd.read_csv(tmp_path / "out" / "any" / "predictions.csv").set_index("video")
    assert predictions.loc["extra.mp4", "label"] != predictions.loc["extra.mp4", "label"]  # scored, unlabelled
    assert predictions.loc["f0.mp4", "method"] == "swap" and len(predictions) == 5
    unlabelled = run_dfdetect("evaluate", folder, "--model", tiny_model, "--out", tmp_path / "out2", "--quiet")
    assert unlabelled.returncode != 0 and "no labels; add a metadata.json or labels.csv, or pass --labels" in (
        unlabelled.stderr + unlabelled.stdout)
