"""The installed `dfdetect` command, run as a user would (subprocess), on tiny videos and a tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dfhelpers import cli
from test_scoring import save_tiny_model, write_video  # the same tiny videos and model

DFDETECT = Path(sys.executable).with_name("dfdetect")


def run_dfdetect(*args):
    return subprocess.run([str(DFDETECT), *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture
def folder_with_a_broken_file(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "face.mp4")
    write_video(videos / "face_again.mov", n_frames=8)
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
    assert "unreadable: " in rows["broken.mp4"]
    assert rows["face.mp4"].split()[4] == "ok" and 0.0 < float(rows["face.mp4"].split()[1]) < 1.0
    # too few faces for the default trimmed mean: the prior, which is a score, not a failure
    assert rows["face_again.mov"].split()[4] == "few_faces:"


def test_json_lines_for_videos_that_all_score_and_exit_code_0(folder_with_a_broken_file, tiny_model, tmp_path):
    (tmp_path / "run.yaml").write_text("work_dir: run\ndata_dirs: []\nscore:\n  min_faces: 4\n  trim: 1\n")
    result = run_dfdetect("predict", folder_with_a_broken_file / "face_again.mov", "--model", tiny_model,
                          "--json", "--config", tmp_path / "run.yaml", "--quiet")
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["video"] == "face_again.mov" and row["status"] == "ok" and row["n_faces"] == 8
    assert row["verdict"] in ("REAL", "FAKE") and 0.0 < row["score"] < 1.0


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
