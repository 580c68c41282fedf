"""The face stage: every video's crops and manifest rows, committed per video, resumable, local or distributed."""

from __future__ import annotations

import collections
import concurrent.futures
import concurrent.futures.process
import contextlib
import dataclasses
import functools
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import cv2
import pandas as pd
from tqdm.auto import tqdm

from dfhelpers import extract, facedetect, files, jpeg, selfblend, workers
from dfhelpers.config import Config, FacesConfig
from dfhelpers.errors import ConfigError, MetadataError, StageOutputMissing

ROWS_FILE = "rows.csv"  # inside faces/<video stem>/: that video's manifest rows, committed with its crops
SETTINGS_FILE = "crop_settings.json"  # inside faces/: the settings the crops were made with
# MTCNN's five points per crop in crop pixels (0..crop_size, after the margin and the resize):
# eyes (left, right as seen in the image), nose tip, mouth corners (left, right)
LANDMARK_NAMES, LANDMARK_COLUMNS = selfblend.LANDMARK_NAMES, selfblend.LANDMARK_COLUMNS
CROP_COLUMNS = ["video", "frame", "face", "track", "x1", "y1", "x2", "y2", "prob", "path", *LANDMARK_COLUMNS]
STATUS_COLUMNS = ["video", "status", "frames_read", "n_faces", "seconds"]
# faces.csv holds both kinds of row: kind "crop" (one per face crop) and kind "video" (one per video)
MANIFEST_COLUMNS = ["kind", *CROP_COLUMNS, "status", "frames_read", "n_faces", "seconds"]
INT_COLUMNS = ["frame", "face", "track", "frames_read", "n_faces"]
# settings that change which crops are written; the others (workers, threads, batch size,
# scheduler, mtcnn_runtime: both runtimes find the same boxes to 1e-3 px) only change the speed,
# so a resumed run may change them freely
OUTPUT_SETTINGS = ("sampling", "frames_per_video", "every_k", "detect_size", "thresholds", "min_face_size",
                   "min_face_prob", "margin", "crop_size", "max_faces_per_frame", "track_max_shift", "jpeg_quality",
                   "redetect_misses", "detect_every")
# what a run folder made before a setting existed was made with (its crop_settings.json lacks the key)
SETTINGS_BEFORE_THEY_EXISTED = {"redetect_misses": False, "detect_every": 1}


def run_stage(cfg: Config, videos: pd.DataFrame, executor: Optional[concurrent.futures.Executor] = None) -> pd.DataFrame:
    """Crop the faces of every video into cfg.faces_dir and write cfg.faces_csv.

    Videos already committed are skipped; a video interrupted half way is redone. Work runs
    through `executor` if given (the caller owns it), else a Dask cluster when
    cfg.faces.scheduler is set (workers must see cfg.work_dir), else a local process pool
    of cfg.faces.workers processes (in this process when workers <= 1). One bad video never
    stops the stage: it gets a status. Returns the status table with labels.

    Raises:
        ConfigError: faces_dir holds crops made with different output settings.
        MetadataError: two videos share a file stem (their crop folders would collide).
    """
    _check_unique_stems(videos, cfg)
    _claim_settings(cfg)
    _remove_partial_folders(cfg.faces_dir)
    pending = videos[[not _is_committed(cfg.faces_dir, name) for name in videos["video"]]]
    failures = _run_videos(pending, cfg, executor, n_done=len(videos) - len(pending))
    manifest = _merge_manifest(cfg.faces_dir, videos["video"].tolist(), failures)
    files.write_csv(manifest, cfg.faces_csv)
    labels = videos[["video"]].assign(label=videos["label"] if "label" in videos else "")
    return _status_rows(manifest).merge(labels, on="video", how="left")[["video", "label", *STATUS_COLUMNS[1:]]]


def load_crops(cfg: Config) -> pd.DataFrame:
    """One row per crop: video, frame, face, track, x1, y1, x2, y2, prob, path (relative to cfg.work_dir),
    and the five landmarks in crop pixels (LANDMARK_COLUMNS; empty in manifests made before they were stored).
    """
    manifest = _read_manifest(cfg)
    crops = manifest[manifest["kind"] == "crop"].reindex(columns=CROP_COLUMNS)
    return crops.astype({"frame": int, "face": int, "track": int}).reset_index(drop=True)


def load_status(cfg: Config) -> pd.DataFrame:
    """One row per video: video, status, frames_read, n_faces, seconds.

    status is "ok", "no_face", "partial: <reason>" (the file broke mid-stream; faces of the
    frames before the break are kept), "unreadable: <reason>", or "error: <reason>" (an
    unexpected failure; not committed, so the next run retries that video).
    """
    return _status_rows(_read_manifest(cfg))


def summarize(statuses: pd.DataFrame) -> pd.DataFrame:
    """Videos per status kind (the part before ':') and label, with totals and faces found."""
    kinds = statuses.assign(kind=statuses["status"].str.split(":").str[0])
    counts = pd.crosstab(kinds["kind"], kinds["label"].fillna("?"), margins=True, margins_name="total")
    faces_found = kinds.groupby("kind")["n_faces"].sum()
    return counts.assign(faces=faces_found.reindex(counts.index).fillna(kinds["n_faces"].sum()).astype(int))


def local_executor(faces_cfg: FacesConfig) -> concurrent.futures.ProcessPoolExecutor:
    """A process pool whose workers each load MTCNN once, use faces.detector_threads threads, and exit
    when this process dies (a killed kernel leaves no 1 GB orphans; see dfhelpers.workers)."""
    return workers.process_pool(faces_cfg.workers, _init_worker, (faces_cfg,))


def crop_folder_name(video_name: str) -> str:
    """The folder under faces/ that holds an item's crops: its name without suffix, '/' as '__'.

    A video's file stem; a face image listed by its path in labels.csv (fake/0001.png) keeps
    its folders in the name, so images of different folders never share a crop folder.
    """
    return Path(video_name).with_suffix("").as_posix().replace("/", "__")


@contextlib.contextmanager
def torch_num_threads(n_threads: int) -> Iterator[None]:
    """Use n_threads torch threads inside the block, then restore the caller's setting.

    More threads than free cores is far slower than fewer: on a busy 2-core machine MTCNN
    with 2 threads ran 10x slower than with 1. Without torch in the process (the onnxruntime
    detector takes its threads from its config) this does nothing and imports nothing.
    """
    if "torch" not in sys.modules:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --- private helpers -------------------------------------------------------------------

_DETECTORS: dict[FacesConfig, facedetect.FaceDetector] = {}  # per process: MTCNN loaded once per settings


def _init_worker(faces_cfg: FacesConfig) -> None:
    """Pool initializer: load MTCNN (which takes detector_threads threads); one OpenCV thread per worker."""
    cv2.setNumThreads(1)
    _detector_for(faces_cfg)


def _detector_for(faces_cfg: FacesConfig) -> facedetect.FaceDetector:
    if faces_cfg not in _DETECTORS:
        _DETECTORS[faces_cfg] = facedetect.FaceDetector(faces_cfg)
    return _DETECTORS[faces_cfg]


def _process_video(name: str, path: str, faces_cfg: FacesConfig, faces_dir: str, work_dir: str) -> dict[str, Any]:
    """Runs on a worker: extract one video, write its crops and rows, commit them with one rename."""
    if faces_cfg not in _DETECTORS and multiprocessing.parent_process() is not None:
        _init_worker(faces_cfg)  # a worker process without our initializer (Dask, a caller's pool)
    started = time.perf_counter()
    result = extract.extract_video(path, faces_cfg, _detector_for(faces_cfg))
    final_dir = Path(faces_dir) / crop_folder_name(name)
    staging_dir = Path(faces_dir) / f".{final_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    staging_dir.mkdir(parents=True)
    crop_paths = []
    for frame_index, face_index, crop in zip(result.frame_indices, result.face_indices, result.crops):
        file_name = f"{frame_index:05d}_{face_index}.jpg"
        (staging_dir / file_name).write_bytes(jpeg.encode_jpeg(crop, faces_cfg.jpeg_quality))
        crop_paths.append((final_dir / file_name).relative_to(work_dir).as_posix())
    seconds = round(time.perf_counter() - started, 3)
    rows = _video_rows(dataclasses.replace(result, video=name), crop_paths, seconds)
    rows.to_csv(staging_dir / ROWS_FILE, index=False)
    _commit(staging_dir, final_dir)
    return {"video": name, "status": result.status, "n_faces": result.n_faces}


def _commit(staging_dir: Path, final_dir: Path) -> None:
    """Rename the finished folder into place; if another run committed it first, keep theirs."""
    try:
        os.rename(staging_dir, final_dir)
    except OSError:
        if not (final_dir / ROWS_FILE).is_file():
            shutil.rmtree(final_dir, ignore_errors=True)  # a stale folder without rows: not committed
            os.rename(staging_dir, final_dir)
        else:
            shutil.rmtree(staging_dir, ignore_errors=True)


def _video_rows(result: extract.VideoFaces, crop_paths: list[str], seconds: float) -> pd.DataFrame:
    """The manifest rows of one video: its status row, then one row per crop."""
    status_row = pd.DataFrame([{"kind": "video", "video": result.video, "status": result.status,
                                "frames_read": result.frames_read, "n_faces": result.n_faces, "seconds": seconds}])
    crops = result.table().assign(kind="crop", path=crop_paths)
    return pd.concat([status_row, crops], ignore_index=True).reindex(columns=MANIFEST_COLUMNS)


@dataclasses.dataclass
class _Runner:
    """Where per-video tasks run: an executor, how many tasks to keep queued, how to replace it."""

    pool: concurrent.futures.Executor
    window: int  # tasks in flight: keeps workers busy without queueing 100,000 DFDC videos at once
    restart: Optional[Callable[[], concurrent.futures.Executor]] = None  # a fresh local pool after a crash


def _run_videos(pending: pd.DataFrame, cfg: Config, executor: Optional[concurrent.futures.Executor],
                n_done: int) -> dict[str, str]:
    """Run every pending video; returns video -> "error: ..." for the ones that failed unexpectedly."""
    failures: dict[str, str] = {}
    crashed: list[Any] = []  # rows in flight when a worker process died: one of them killed it
    queue = collections.deque(pending.itertuples())
    with contextlib.ExitStack() as stack:
        runner = _open_runner(cfg, executor, stack)
        progress = stack.enter_context(tqdm(total=n_done + len(queue), initial=n_done, unit="video", desc="faces"))
        running: dict[concurrent.futures.Future, tuple[Any, concurrent.futures.Executor]] = {}
        n_faces = 0
        while queue or running:
            while queue and len(running) < runner.window:
                row = queue.popleft()
                running[_submit(runner, row, cfg, stack)] = (row, runner.pool)
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                row, pool = running.pop(future)
                n_faces += _collect(future, row, failures, crashed)
                if crashed and crashed[-1] is row and pool is runner.pool and runner.restart is not None:
                    runner.pool = stack.enter_context(runner.restart())  # the broken pool accepts no more work
                progress.update(1)
            progress.set_postfix(faces=n_faces, failed=len(failures))
    for row in crashed:
        _retry_alone(row, cfg, failures)
    return failures


def _submit(runner: _Runner, row: Any, cfg: Config, stack: Optional[contextlib.ExitStack] = None
            ) -> concurrent.futures.Future:
    """Submit one video; a local pool that broke since the last check is replaced first."""
    task = (_process_video, row.video, str(row.path), cfg.faces, str(cfg.faces_dir), str(cfg.work_dir))
    try:
        return runner.pool.submit(*task)
    except concurrent.futures.process.BrokenProcessPool:
        if runner.restart is None or stack is None:
            raise
        runner.pool = stack.enter_context(runner.restart())
        return runner.pool.submit(*task)


def _collect(future: concurrent.futures.Future, row: Any, failures: dict[str, str], crashed: list[Any]) -> int:
    """Faces found by a finished task; a failure is recorded (a crashed worker's rows go to `crashed`)."""
    try:
        return int(future.result()["n_faces"])
    except concurrent.futures.process.BrokenProcessPool:
        crashed.append(row)
    except Exception as err:  # noqa: BLE001 - one bad video must not stop the stage
        failures[row.video] = f"error: {type(err).__name__}: {' '.join(str(err).split())}"
    return 0


def _retry_alone(row: Any, cfg: Config, failures: dict[str, str]) -> None:
    """Run a video that was in flight when a worker died, alone in a fresh process.

    A dying worker fails every task of its pool, not only the culprit; alone, an innocent
    video succeeds and the culprit is named.
    """
    with local_executor(dataclasses.replace(cfg.faces, workers=1)) as pool:
        try:
            _submit(_Runner(pool, 1), row, cfg).result()
        except Exception as err:  # noqa: BLE001 - record and go on
            failures[row.video] = f"error: the worker process died on this video ({type(err).__name__})"


def _open_runner(cfg: Config, executor: Optional[concurrent.futures.Executor],
                 stack: contextlib.ExitStack) -> _Runner:
    """The caller's executor, a Dask cluster's, a local process pool, or this process (workers <= 1)."""
    many = 1_000_000  # a caller's or a cluster's executor does its own queueing
    if executor is not None:
        return _Runner(executor, many)
    if cfg.faces.scheduler:
        try:
            from dask.distributed import Client
        except ImportError as err:
            raise ConfigError(f"faces.scheduler is {cfg.faces.scheduler!r} but dask.distributed is not installed; "
                              "pip install 'dask[distributed]' or unset faces.scheduler") from err
        client = stack.enter_context(Client(cfg.faces.scheduler))
        return _Runner(client.get_executor(), many)
    if cfg.faces.workers <= 1:
        stack.enter_context(torch_num_threads(cfg.faces.detector_threads))  # this process is the worker
        return _Runner(_InlineExecutor(), 1)
    restart = functools.partial(local_executor, cfg.faces)
    return _Runner(stack.enter_context(restart()), 2 * cfg.faces.workers, restart)


class _InlineExecutor(concurrent.futures.Executor):
    """Runs each task in this process at submit time (workers <= 1: no process start-up cost)."""

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:  # type: ignore[override]
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - delivered through the future, as a pool would
            future.set_exception(err)
        return future


def _is_committed(faces_dir: Path, video_name: str) -> bool:
    return (faces_dir / crop_folder_name(video_name) / ROWS_FILE).is_file()


def _remove_partial_folders(faces_dir: Path) -> None:
    """Folders of videos interrupted half way (never committed): their video is redone."""
    for staging_dir in faces_dir.glob(".*.partial-*"):
        shutil.rmtree(staging_dir, ignore_errors=True)
    for video_dir in (d for d in faces_dir.iterdir() if d.is_dir()) if faces_dir.is_dir() else []:
        if not (video_dir / ROWS_FILE).is_file():
            shutil.rmtree(video_dir, ignore_errors=True)


def _claim_settings(cfg: Config) -> None:
    """Record the output settings on the first run; refuse to mix crops made with other ones."""
    settings = json.loads(json.dumps({name: getattr(cfg.faces, name) for name in OUTPUT_SETTINGS}))
    settings_path = cfg.faces_dir / SETTINGS_FILE
    if not settings_path.is_file():
        files.write_json(settings, settings_path)
        return
    previous = {**SETTINGS_BEFORE_THEY_EXISTED, **json.loads(settings_path.read_text())}
    changed = [f"{name}: {previous.get(name)!r} -> {value!r}" for name, value in settings.items()
               if previous.get(name) != value]
    if changed:
        raise ConfigError(f"{settings_path}: crops were made with other faces settings ({'; '.join(changed)}); "
                          f"use a new work_dir, or delete {cfg.faces_dir} to redo the crops")


def _check_unique_stems(videos: pd.DataFrame, cfg: Config) -> None:
    stems = videos["video"].map(crop_folder_name)
    duplicated = videos["video"][stems.duplicated(keep=False)].tolist()
    if duplicated:
        raise MetadataError(f"{cfg.videos_csv}: videos {duplicated[:4]} share a file stem, so their crop folders "
                            "would collide; keep only one of them in the metadata")


def _merge_manifest(faces_dir: Path, video_names: list[str], failures: dict[str, str]) -> pd.DataFrame:
    """faces.csv in the order of the video table: committed rows, plus a row per failed video.

    The rows files are joined as text and parsed once: a face-image set has one per image, and
    90,000 small tables parsed and concatenated one by one took minutes and GBs.
    """
    header = ",".join(MANIFEST_COLUMNS)
    bodies = []
    for name in video_names:
        rows_path = faces_dir / crop_folder_name(name) / ROWS_FILE
        if rows_path.is_file():
            first_line, _, body = rows_path.read_text().partition("\n")
            if first_line != header:  # rows an earlier version wrote (other columns): parsed on their own
                body = _manifest_lines(pd.read_csv(rows_path, keep_default_na=False, na_values=[""], dtype={"video": str}))
            bodies.append(body)
        elif name in failures:
            bodies.append(_manifest_lines(pd.DataFrame([{"kind": "video", "video": name, "status": failures[name],
                                                         "frames_read": 0, "n_faces": 0}])))
    manifest = pd.read_csv(io.StringIO("\n".join([header, "".join(bodies)])), keep_default_na=False, na_values=[""],
                           dtype={"video": str})
    return manifest.reindex(columns=MANIFEST_COLUMNS).astype({c: "Int64" for c in INT_COLUMNS})


def _manifest_lines(rows: pd.DataFrame) -> str:
    return rows.reindex(columns=MANIFEST_COLUMNS).to_csv(header=False, index=False)


def _read_manifest(cfg: Config) -> pd.DataFrame:
    if not cfg.faces_csv.is_file():
        raise StageOutputMissing(f"{cfg.faces_csv} not found; run notebooks/02_face_crop.ipynb first")
    return pd.read_csv(cfg.faces_csv, keep_default_na=False, na_values=[""], dtype={"video": str, "status": str})


def _status_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    statuses = manifest[manifest["kind"] == "video"][STATUS_COLUMNS]
    return statuses.astype({"frames_read": int, "n_faces": int}).reset_index(drop=True)
