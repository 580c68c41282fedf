"""Writing the sample to disk: DFDC folders with metadata.json and persons.csv, resumable and atomic."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterator, Optional

import cv2
import pandas as pd
from tqdm.auto import tqdm

from dfhelpers import workers
from dfhelpers.config import Config, SampleConfig
from dfhelpers.files import write_csv, write_json
from dfhelpers.sample.encoding import EncoderSettings, mp4_writer
from dfhelpers.sample.planning import TEST_FOLDER, frame_spec, plan
from dfhelpers.sample.rendering import render_shot
from dfhelpers.sample.sources import FaceLibrary, sources_dir

FORMAT_VERSION = 6  # bump when a change alters the generated videos: partial folders of older runs are not reused


def ensure(cfg: Config) -> bool:
    """Generate the sample into cfg.data_dirs, cfg.test_dir and the persons CSV when missing.

    One DFDC part per data dir (each with its metadata.json), the held-out identities in
    test_dir, and `video,person,identity` rows for every video in cfg.metadata.persons_csv
    (person is the split group: the five people of one group photo are one group). Folders
    that exist are left alone; missing ones are built in a hidden sibling and renamed into
    place when complete, so an interrupted run leaves nothing under the final names and the
    next run resumes it.

    Returns:
        True if anything was generated; False when disabled or already complete.

    Raises:
        SampleSourceError: a fetched archive is missing or corrupt (names the fetch command).
    """
    if not cfg.sample.enabled:
        return False
    folders = {f"part_{index}": Path(path) for index, path in enumerate(cfg.data_dirs)}
    if cfg.test_dir is not None:
        folders[TEST_FOLDER] = Path(cfg.test_dir)
    persons_csv = Path(cfg.metadata.persons_csv) if cfg.metadata.persons_csv else None
    return _generate(folders, persons_csv, cfg.sample)


def generate(out_dir: str | Path, sample_cfg: SampleConfig, n_parts: int = 2) -> bool:
    """Write a standalone sample: out_dir/dfdc_train_part_<i>/, test_videos/, persons.csv.

    Returns True if anything was generated (False: out_dir already held a complete sample).
    """
    out_dir = Path(out_dir)
    folders = {f"part_{index}": out_dir / f"dfdc_train_part_{index}" for index in range(n_parts)}
    folders[TEST_FOLDER] = out_dir / "test_videos"
    return _generate(folders, out_dir / "persons.csv", sample_cfg)


def encoder_settings(row) -> EncoderSettings:
    """The encoder settings a plan row drew."""
    return EncoderSettings(crf=int(row.crf), x264_preset=str(row.x264_preset), gop=int(row.gop),
                           first_crf=int(row.first_crf))


def _generate(folders: dict[str, Path], persons_csv: Optional[Path], sample_cfg: SampleConfig) -> bool:
    missing = {key: path for key, path in folders.items() if not path.exists()}
    needs_persons = persons_csv is not None and not persons_csv.exists()
    if not missing and not needs_persons:
        return False
    n_parts = sum(key != TEST_FOLDER for key in folders)
    videos = plan(sample_cfg, n_parts=n_parts, with_test=TEST_FOLDER in folders)
    videos = videos[videos["folder"].isin(list(folders))]
    donors = {name for names in videos["donors"] for name in names.split(",") if name}
    FaceLibrary().check(set(videos["person"]) | donors)  # fail before any work, not halfway through
    staging = {key: _staging_dir(path, sample_cfg, n_parts) for key, path in missing.items()}
    _write_videos(videos[videos["folder"].isin(list(staging))], staging, sample_cfg)
    for key, path in missing.items():
        write_json(_metadata(videos[videos["folder"] == key], key), staging[key] / "metadata.json")
        os.replace(staging[key], path)
        _remove_stale_staging(path)
    if needs_persons:
        persons = videos[["video", "group", "person"]].rename(columns={"group": "person", "person": "identity"})
        write_csv(persons, persons_csv)
    return True


def _write_videos(videos: pd.DataFrame, staging: dict[str, Path], sample_cfg: SampleConfig) -> None:
    """Render and encode every shot whose videos are not all in staging yet (a resumed run skips the rest)."""
    jobs = []
    for _, shot in videos.groupby((videos["label"] == "REAL").cumsum(), sort=False):
        paths = [staging[row.folder] / row.video for row in shot.itertuples()]
        if not all(path.exists() for path in paths):
            jobs.append((shot, paths))
    n_done = len(videos) - sum(len(paths) for _, paths in jobs)
    with tqdm(total=len(videos), initial=n_done, desc="sample videos", unit="video", leave=False) as progress:
        for n_written in _run_jobs(jobs, sample_cfg):
            progress.update(n_written)


def _run_jobs(jobs: list[tuple[pd.DataFrame, list[Path]]], sample_cfg: SampleConfig) -> Iterator[int]:
    """Each shot is independent and seeded, so the result does not depend on who renders it."""
    if sample_cfg.workers <= 1 or len(jobs) <= 1:
        library = FaceLibrary()
        for shot, paths in jobs:
            yield _write_shot(shot, paths, sample_cfg, library)
        return
    # workers.process_pool: spawned workers that exit when this process (e.g. a killed kernel) dies
    with workers.process_pool(min(sample_cfg.workers, len(jobs)), _init_worker, (str(sources_dir()),)) as pool:
        futures = [pool.submit(_write_shot, shot, paths, sample_cfg) for shot, paths in jobs]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def _write_shot(shot: pd.DataFrame, paths: list[Path], sample_cfg: SampleConfig,
                library: Optional[FaceLibrary] = None) -> int:
    fps = frame_spec(sample_cfg).fps
    library = library or _WORKER_LIBRARY[0]
    with contextlib.ExitStack() as stack:
        writers = [None if path.exists() else stack.enter_context(mp4_writer(path, fps, encoder_settings(row)))
                   for path, row in zip(paths, shot.itertuples())]
        for rendered in render_shot(shot, sample_cfg, library):
            for write, frame in zip(writers, [rendered.real, *rendered.fakes]):
                if write is not None:
                    write(frame)
    return len(paths)


_WORKER_LIBRARY: list[FaceLibrary] = []  # one per worker process, so each picture is decoded once there


def _init_worker(cache_dir: str) -> None:
    cv2.setNumThreads(1)  # the workers already use every core
    _WORKER_LIBRARY.append(FaceLibrary(cache_dir))


def _metadata(videos: pd.DataFrame, folder: str) -> dict:
    split = "test" if folder == TEST_FOLDER else "train"
    return {row.video: {"label": row.label, "split": split, "original": row.original or None}
            for row in videos.itertuples()}


def _staging_dir(final: Path, sample_cfg: SampleConfig, n_parts: int) -> Path:
    """Hidden sibling named after everything that shapes the videos, so a resumed run reuses only its own work."""
    settings = repr((FORMAT_VERSION, n_parts, dataclasses.asdict(dataclasses.replace(sample_cfg, enabled=True, workers=1))))
    fingerprint = hashlib.sha256(settings.encode()).hexdigest()[:10]
    staging = final.parent / f".{final.name}.partial-{fingerprint}"
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def _remove_stale_staging(final: Path) -> None:
    for leftover in final.parent.glob(f".{final.name}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)
