"""Nothing lost, nothing crashes: hostile inputs through the whole pipeline, kills, a Dask cluster."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import psutil
import pytest

import hostile
from crops import write_square_run
from dfhelpers import config, faces, metadata, video
from processes import wait_until_gone
from videos import grace_hopper, write_video

pytestmark = pytest.mark.reliability
PROJECT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS = 320, 240, 15


# --- the corpus ---------------------------------------------------------------------------


def good_videos(folder: Path, n_groups: int, n_frames: int = 16) -> dict:
    """n_groups REAL face videos and one FAKE per REAL (a face region recoloured and blurred)."""
    face = grace_hopper()
    entries = {}
    for group in range(n_groups):
        frames = hostile.face_frames(face, n_frames, WIDTH, HEIGHT, seed=group)
        write_video(folder / f"real{group}.mp4", frames, FPS)
        fakes = [_manipulate(frame) for frame in frames]
        write_video(folder / f"fake{group}.mp4", fakes, FPS)
        entries[f"real{group}.mp4"] = {"label": "REAL", "original": None}
        entries[f"fake{group}.mp4"] = {"label": "FAKE", "original": f"real{group}.mp4"}
    return entries


def bad_videos(folder: Path, source: Path) -> dict:
    """Hostile files (empty, truncated, streamable, ...), each labelled REAL so metadata stays valid."""
    (folder / "zero_bytes.mp4").write_bytes(b"")
    hostile.truncated_copy(source, folder / "truncated.mp4", keep=0.4)  # its index was written last
    face = grace_hopper()
    streamable = write_video(folder.parent / "streamable.mp4", hostile.face_frames(face, 45, WIDTH, HEIGHT),
                                     FPS, index_first=True)
    hostile.truncated_copy(streamable, folder / "cut_short.mp4", keep=0.6)  # opens, breaks after a few frames
    streamable.unlink()
    (folder / "random_bytes.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    write_video(folder / "no_face.mp4", hostile.background_frames(12, WIDTH, HEIGHT), FPS)
    write_video(folder / "one_frame.mp4", hostile.face_frames(face, 1, WIDTH, HEIGHT), FPS)
    write_video(folder / "portrait.mp4", hostile.face_frames(face, 12, 180, 320), FPS)
    write_video(folder / "hevc.mov", hostile.face_frames(face, 12, WIDTH, HEIGHT), FPS, codec="libx265")
    names = ["zero_bytes.mp4", "truncated.mp4", "cut_short.mp4", "random_bytes.mp4", "no_face.mp4",
             "one_frame.mp4", "portrait.mp4", "hevc.mov"]
    return {name: {"label": "REAL", "original": None} for name in names}


def _manipulate(frame: np.ndarray) -> np.ndarray:
    """A visible face-region manipulation: colour shift and blur inside a soft ellipse."""
    mask = np.zeros(frame.shape[:2], np.float32)
    cv2.ellipse(mask, (WIDTH // 2, HEIGHT // 2), (45, 60), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (21, 21), 8)[..., None]
    changed = cv2.GaussianBlur(frame, (7, 7), 3).astype(np.float32) * np.array([1.15, 0.9, 0.85])
    return np.clip(frame * (1 - mask) + changed * mask, 0, 255).astype(np.uint8)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# a tiny model trained as configs/original.yaml trains: from scratch, given fakes, its step and augmentation (fast)
ORIGINAL_SMALL_CNN = {"backbone": "small_cnn", "weights": None, "head": "flatten", "fakes": "given",
                      "learning_rate": 1.0e-4, "lr_schedule": "constant", "monitor": "val_loss",
                      "rotation": 0.75, "shift": 0.2, "vertical_flip": True}


def write_config(root: Path, work_dir: str, **sections: dict) -> Path:
    body = {"work_dir": work_dir, "data_dirs": ["data/part_0"], "test_dir": "data/test",
            "faces": {"workers": 1, "frames_per_video": 8}, **sections}
    path = root / f"{work_dir}.yaml"
    path.write_text(json.dumps(body))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """data/part_0: 3 REAL + 3 FAKE good videos and every hostile file; data/test: good + broken."""
    root = tmp_path_factory.mktemp("hostile")
    part, test = root / "data" / "part_0", root / "data" / "test"
    part.mkdir(parents=True)
    test.mkdir(parents=True)
    entries = good_videos(part, n_groups=3)
    entries.update(bad_videos(part, source=part / "real0.mp4"))
    hostile.write_metadata(part, entries)
    test_entries = good_videos(test, n_groups=1)
    (test / "broken.mp4").write_bytes(b"this is not a video\n")
    test_entries["broken.mp4"] = {"label": "FAKE", "original": "real0.mp4"}
    hostile.write_metadata(test, test_entries)
    return root


# --- the whole pipeline over the hostile corpus ----------------------------------------------


def test_whole_pipeline_survives_hostile_videos_and_never_touches_raw_data(corpus):
    raw_before = tree_digest(corpus / "data")
    cfg_path = write_config(corpus, "run", split={"group_by": "original", "val_groups": ["real1.mp4"],
                                                  "test_groups": ["real2.mp4"]},
                            train={"epochs": 1, "batch_size": 8, "image_size": 64, "cnn_filters": [8, 16],
                                   **ORIGINAL_SMALL_CNN},
                            score={"min_faces": 1, "trim": 0})
    result = subprocess.run([sys.executable, str(PROJECT / "run_all.py"), "--config", str(cfg_path)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert tree_digest(corpus / "data") == raw_before
    cfg = config.load(cfg_path)
    status = faces.load_status(cfg).set_index("video")["status"]
    for name in ("zero_bytes.mp4", "random_bytes.mp4", "truncated.mp4"):
        assert status[name].startswith("unreadable: cannot open"), (name, status[name])
    assert status["cut_short.mp4"].startswith("partial: decoding broke after"), status["cut_short.mp4"]
    assert status["no_face.mp4"] == "no_face"
    assert status["one_frame.mp4"] == "ok"
    assert status["portrait.mp4"] == "ok" and status["hevc.mov"] == "ok"
    assert all(status[f"{kind}{g}.mp4"] == "ok" for kind in ("real", "fake") for g in range(3))
    predictions = pd.read_csv(cfg.predictions_csv).set_index("video")
    assert predictions.loc["broken.mp4", "status"].startswith("unreadable")
    assert pd.read_csv(cfg.submission_csv)["filename"].tolist().count("broken.mp4") == 1
    assert len(pd.read_csv(cfg.submission_csv)) == 3


def test_malformed_metadata_stops_the_run_at_notebook_01_naming_file_and_entry(tmp_path):
    part = tmp_path / "data" / "part_0"
    hostile.write_metadata(part, {"a.mp4": {"split": "train"}})
    (part / "a.mp4").write_bytes(b"")
    cfg_path = write_config(tmp_path, "run")
    result = subprocess.run([sys.executable, str(PROJECT / "run_all.py"), "--config", str(cfg_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "01_data_classification FAILED" in result.stderr
    assert f"MetadataError: {part / 'metadata.json'}: entry 'a.mp4' has no 'label'" in result.stderr


def test_a_folder_where_a_video_should_be_gets_a_status_and_the_others_are_cropped(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "good.mp4", hostile.face_frames(grace_hopper(), 8, WIDTH, HEIGHT), FPS)
    (folder / "folder.mp4").mkdir()  # unlike file permissions, this stops root too
    cfg = config.from_dict({"work_dir": "run", "data_dirs": ["videos"], "faces": {"workers": 1}}, tmp_path)
    statuses = faces.run_stage(cfg, metadata.list_videos(folder).assign(label="REAL")).set_index("video")
    assert statuses.loc["folder.mp4", "status"] == "unreadable: cannot open: Is a directory"
    assert statuses.loc["good.mp4", "status"] == "ok"


def test_a_very_long_video_streams_in_bounded_memory(tmp_path):
    frames = hostile.background_frames(30, WIDTH, HEIGHT)
    path = write_video(tmp_path / "long.mp4", [frames[i % 30] for i in range(1500)], FPS)
    whole_video_mb = 1500 * WIDTH * HEIGHT * 3 / 2**20
    tracemalloc.start()
    n_read = sum(1 for _ in video.read_frames(path, list(range(0, 1500))))
    peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    assert n_read == 1500
    assert peak_mb < whole_video_mb / 20, f"peak {peak_mb:.0f} MB for a {whole_video_mb:.0f} MB video"


def test_a_corrupt_model_is_a_one_line_error_from_the_command(tmp_path, corpus):
    model = tmp_path / "corrupt.keras"
    model.write_bytes(b"PK\x03\x04 not really a zip")
    command = [str(Path(sys.executable).with_name("dfdetect")), "predict", str(corpus / "data" / "test"),
               "--model", str(model)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert str(model) in result.stderr
    assert len([line for line in result.stderr.splitlines() if "Error" in line or str(model) in line]) == 1


# --- kills ----------------------------------------------------------------------------------

CROP_STAGE = """
import sys
from dfhelpers import config, faces, metadata
cfg = config.load(sys.argv[1])
faces.run_stage(cfg, metadata.read_videos(cfg.data_dirs))
"""


def crop_run(cfg_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CROP_STAGE, str(cfg_path)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def comparable_manifest(cfg_path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    cfg = config.load(cfg_path)
    manifest = pd.read_csv(cfg.faces_csv).drop(columns=["seconds"], errors="ignore")
    crops = {name: digest for name, digest in tree_digest(cfg.faces_dir).items() if name.endswith(".jpg")}
    assert crops, f"no crops under {cfg.faces_dir}"
    return manifest, crops  # per-video rows files hold timings, which differ from run to run


@pytest.fixture(scope="module")
def clean_crop_run(corpus) -> Path:
    cfg_path = write_config(corpus, "uninterrupted")
    assert crop_run(cfg_path).wait(timeout=600) == 0
    return cfg_path


def committed_videos(faces_dir: Path) -> int:
    """Videos whose crop folder was committed (the progress marker; staging folders start with '.')."""
    return sum(1 for rows in faces_dir.glob("*/*.csv") if not rows.parent.name.startswith("."))


def wait_for_committed(faces_dir: Path, n: int, process: subprocess.Popen, watch: bool = False) -> dict[int, str]:
    """Wait until n videos are committed; with watch, the process's descendants (pid: command
    line) as last seen before that, read every 10 ms so that a kill can follow at once."""
    children: dict[int, str] = {}
    deadline = time.monotonic() + 600
    while committed_videos(faces_dir) < n and process.poll() is None and time.monotonic() < deadline:
        if watch:
            with contextlib.suppress(psutil.Error):
                children = {child.pid: " ".join(child.cmdline())
                            for child in psutil.Process(process.pid).children(recursive=True)}
        time.sleep(0.01 if watch else 0.05)
    assert process.poll() is None, f"the run ended (exit code {process.returncode}) before {n} video(s) were cropped"
    return children


@pytest.mark.parametrize("seed", [1])
def test_face_stage_killed_mid_stage_resumes_to_the_same_manifest(corpus, clean_crop_run, seed):
    cfg_path = write_config(corpus, f"killed{seed}", faces={"workers": 2, "frames_per_video": 8})
    cfg = config.load(cfg_path)
    n_videos = len(metadata.read_videos(cfg.data_dirs))
    kill_after = int(np.random.default_rng(seed).integers(1, 4))  # videos committed when the kill lands
    process = crop_run(cfg_path)
    wait_for_committed(cfg.faces_dir, kill_after, process)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not cfg.faces_csv.exists() and committed_videos(cfg.faces_dir) < n_videos, "the kill landed too late"
    assert crop_run(cfg_path).wait(timeout=600) == 0
    expected, expected_crops = comparable_manifest(clean_crop_run)
    resumed, resumed_crops = comparable_manifest(cfg_path)
    pd.testing.assert_frame_equal(resumed, expected)
    assert resumed_crops == expected_crops


def test_run_all_killed_mid_stage_leaves_no_process_and_resumes(corpus, clean_crop_run):
    """SIGKILL of the runner alone: its kernel and the kernel's pool workers must follow it."""
    for attempt in range(3):  # the stage is small: on a fast machine the kill may land after its end
        cfg_path = write_config(corpus, f"killed_run_all_{attempt}", faces={"workers": 2, "frames_per_video": 8})
        cfg = config.load(cfg_path)
        command = [sys.executable, str(PROJECT / "run_all.py"), "--config", str(cfg_path)]
        assert subprocess.run([*command, "--only", "1"], capture_output=True, timeout=300).returncode == 0
        kill_runner_after_first_commit(command, cfg)
        if not cfg.faces_csv.exists():
            break
    assert not cfg.faces_csv.exists(), "in three attempts the kill always landed after the stage"
    resumed = subprocess.run([*command, "--only", "2"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, expected_crops = comparable_manifest(clean_crop_run)
    got, got_crops = comparable_manifest(cfg_path)
    pd.testing.assert_frame_equal(got, expected)
    assert got_crops == expected_crops


def kill_runner_after_first_commit(command: list[str], cfg: config.Config) -> None:
    """Start notebook 02 through run_all, SIGKILL the runner once a video is committed, and check
    that the kernel and its pool workers (seen while waiting) are gone soon after."""
    process = subprocess.Popen([*command, "--only", "2"], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left: list[int] = []
    try:
        # the runner's process tree is read while waiting, so that the kill follows the first
        # commit at once: the rest of this small stage takes well under a second
        children = wait_for_committed(cfg.faces_dir, 1, process, watch=True)
        left = list(children)
        workers = [pid for pid, command_line in children.items() if "spawn_main" in command_line]
        assert len(workers) >= 2, "the face stage's pool workers were not running"
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
        left = wait_until_gone(left)
        assert left == [], "kernel or pool workers outlived the killed runner"
    finally:
        for pid in left:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


# --- a Dask cluster ---------------------------------------------------------------------------


def test_dask_cluster_gives_the_same_manifest_as_the_local_pool(corpus, clean_crop_run):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        cfg_path = write_config(corpus, "dask", faces={"workers": 1, "frames_per_video": 8,
                                                       "scheduler": cluster.scheduler_address})
        cfg = config.load(cfg_path)
        faces.run_stage(cfg, metadata.read_videos(cfg.data_dirs))
    expected, expected_crops = comparable_manifest(clean_crop_run)
    got, got_crops = comparable_manifest(cfg_path)
    pd.testing.assert_frame_equal(got, expected)
    assert got_crops == expected_crops


# --- training killed mid-fit ----------------------------------------------------------------

FIT = """
import sys, time, keras
from dfhelpers import config, train

class Slow(keras.callbacks.Callback):  # leaves time to kill between epochs
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(float(sys.argv[2]))

raw = {"work_dir": sys.argv[1], "data_dirs": [], "faces": {"crop_size": 24, "margin": 8},
       "train": {"model_name": "tiny", "image_size": 24, "cnn_filters": [4, 8], "head": "pool",
                 "batch_size": 8, "epochs": 4, "rotation": 0.0, "backbone": "small_cnn", "weights": None,
                 "fakes": "given", "learning_rate": 1.0e-4, "lr_schedule": "constant", "monitor": "val_loss",
                 "shift": 0.2, "vertical_flip": True}}
train.fit(config.from_dict(raw, base_dir=config.Path(sys.argv[1])), progress=False, callbacks=[Slow()])
"""


def test_training_killed_after_an_epoch_resumes_at_the_next_one(tmp_path):
    write_square_run(tmp_path, 24)  # the crop size FIT trains on
    history = tmp_path / "models" / "tiny.history.csv"
    process = subprocess.Popen([sys.executable, "-c", FIT, str(tmp_path), "30"], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if history.is_file() and len(pd.read_csv(history)) >= 1:
            break
        time.sleep(0.1)
    time.sleep(1.0)  # inside the sleeping callback: epoch 1 is finished and backed up
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    first_epoch = pd.read_csv(history)
    assert len(first_epoch) == 1, "the kill was meant to land after epoch 1"
    resumed = subprocess.run([sys.executable, "-c", FIT, str(tmp_path), "0"], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    resumed_history = pd.read_csv(history)
    assert resumed_history["epoch"].tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(resumed_history.head(1), first_epoch)  # epoch 1 was not trained again
    assert (tmp_path / "models" / "tiny.keras").is_file()
