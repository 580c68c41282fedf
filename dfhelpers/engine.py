"""The inference engine: a video file -> sampled frames -> faces -> model -> face scores, cached per model."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Optional, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dfhelpers import files, onnxfile
from dfhelpers.config import FacesConfig, ScoreConfig
from dfhelpers.errors import DfdetectError, ModelLoadError
from dfhelpers.scoring import FACE_COLUMNS, predictions_from_faces

CACHE_VERSION = 2  # bump when the cached per-video record changes shape (2: face boxes)


@dataclasses.dataclass(frozen=True)
class ScoredVideo:
    """One video's face scores and how the face stage went (what the cache keeps)."""

    video: str  # file name
    path: str
    status: str  # the face stage's: "ok", "no_face", "partial: ...", "unreadable: ...", "error: ..."
    frames_read: int
    faces: pd.DataFrame  # FACE_COLUMNS: one row per face, `score` = P(FAKE), `crop` path or ""
    crops: np.ndarray  # (k, crop_size, crop_size, 3) uint8 as the model saw them; empty when cached
    seconds: float


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """Which file scores the crops, on which runtime (see choose_model)."""

    runtime: str  # "onnx" (onnxruntime: no TensorFlow in the process) or "keras"
    path: Path  # the file that is run
    keras_path: Optional[Path]  # the Keras model behind it, for explanations (Grad-CAM); None if unknown
    note: str  # why Keras was chosen when a faster start was possible; "" otherwise
    # the onnxruntime session opened while choosing (None: open `path` when scoring)
    session: Any = dataclasses.field(default=None, compare=False, repr=False)


def choose_model(model_path: str | Path, n_threads: int = 1) -> ModelChoice:
    """The rule for which model file scores, given what the user passed.

    - `X.onnx`: onnxruntime on it (its .keras, if it is the one exported, serves explanations).
    - `X.keras` with an up-to-date sidecar `X.onnx` (it records the sha256 of these .keras bytes):
      onnxruntime on the sidecar.
    - `X.keras` otherwise (no sidecar, or one from other bytes): Keras, with a note saying how
      to get the faster start.

    A session opened to read what an ONNX file records (n_threads intra-op threads) is kept in
    the choice, so the file is not opened twice.
    """
    model_path = Path(model_path)
    if model_path.suffix.lower() == ".onnx":
        keras_path = model_path.with_suffix(".keras")
        session = onnxfile.fresh_session(keras_path, n_threads, onnx_path=model_path)
        return ModelChoice("onnx", model_path, keras_path if session is not None else None, "", session)
    session = onnxfile.fresh_session(model_path, n_threads)
    if session is not None:
        return ModelChoice("onnx", onnxfile.sidecar_path(model_path), model_path, "", session)
    note = (f"{model_path.name} has no up-to-date {onnxfile.sidecar_path(model_path).name}; "
            f"run `dfdetect export {model_path}` for a faster start")
    return ModelChoice("keras", model_path, model_path, note)


class VideoScorer:
    """The face detector and the model, loaded on first use, scoring one video at a time.

    Frames are sampled, detected and cropped exactly as the face stage does for training
    (dfhelpers.extract.extract_video), and each crop goes through the same JPEG round trip as
    the training crops; all faces of a video then go through the model in one batched call.
    The model runs on onnxruntime when choose_model finds an ONNX file, else on Keras.
    """

    def __init__(self, model_path: str | Path, faces_cfg: FacesConfig, score_cfg: ScoreConfig):
        self.model_path = Path(model_path)
        self.faces_cfg = faces_cfg
        self.score_cfg = score_cfg
        self.choice: Optional[ModelChoice] = None  # set by start_loading
        self._model: Any = None  # the Keras model or the onnxruntime session that scores
        self._keras_model: Any = None  # for explanations; loaded only when asked for (see `model`)
        self._predict_batch: Optional[Callable[[np.ndarray], Any]] = None  # the model's forward pass
        self._detector: Any = None
        self._model_loading: Optional[concurrent.futures.Future] = None
        self._lock = threading.Lock()  # extraction threads and the caller may ask for the face detector at once

    def load(self) -> "VideoScorer":
        """Load the face detector and the model; returns when both are ready (start_loading, then wait).

        Raises:
            ModelLoadError: the model file is missing or corrupt.
        """
        if self._model is None:
            self._model, self._predict_batch = self.start_loading()._model_loading.result()
        return self

    def start_loading(self, guard: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> "VideoScorer":
        """Load the face detector now and the model (choose_model): an ONNX session at once (~10 ms),
        a Keras model in a background thread; returns once the face detector is ready.

        With Keras, detection can start while TensorFlow imports, the model loads and its predict
        function is traced: on one video that hides most of the model's seconds. `guard` wraps a
        Keras load, e.g. to hold back TensorFlow's native start-up lines. A load failure is raised
        by `load()`.

        Raises:
            ModelLoadError: the model file does not exist (checked before seconds of imports).
        """
        if self._model is not None or self._model_loading is not None:
            return self
        if not self.model_path.is_file():
            raise ModelLoadError(f"{self.model_path}: model file not found; pass a .keras file saved by notebook 04 "
                                 "or its .onnx export")
        self.load_detector()
        # as many intra-op threads as videos are detected at once: the cores the engine keeps busy
        self.choice = choose_model(self.model_path, n_threads=self.score_cfg.threads)
        if self.choice.runtime == "onnx":
            self._model_loading = concurrent.futures.Future()
            try:
                self._model_loading.set_result(self._load_onnx(self.choice))
            except ModelLoadError as err:
                self._model_loading.set_exception(err)
            return self
        loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dfdetect-model")
        self._model_loading = loader.submit(self._load_keras, guard)
        loader.shutdown(wait=False)  # the thread ends when the model is loaded
        return self

    def load_detector(self) -> "VideoScorer":
        """Load the face detector once (it sets its own runtime's threads); thread-safe."""
        with self._lock:
            if self._detector is None:
                from dfhelpers import facedetect  # imported here: its detector runtime takes time to import

                self._detector = facedetect.FaceDetector(self.faces_cfg)
        return self

    @property
    def model(self) -> Any:
        """The Keras model, e.g. for explanations; loaded on first use when the scores come from ONNX.

        Raises:
            ModelLoadError: only an .onnx file was given, without the .keras file it was exported from.
        """
        self.load()
        if self._keras_model is None:
            if self.choice.keras_path is None:
                raise ModelLoadError(f"{self.model_path}: explanations need the Keras model; pass the .keras "
                                     "file this .onnx was exported from")
            from dfhelpers import model  # TensorFlow: seconds to import, only for explanations here

            self._keras_model = model.load(self.choice.keras_path)
        return self._keras_model

    def _load_keras(self, guard: Callable[[], ContextManager[Any]]) -> tuple[Any, Callable[[np.ndarray], Any]]:
        from dfhelpers import model  # TensorFlow: seconds to import, after the face detector (see compat)

        with guard():
            classifier = _check_input_size(model.load(self.model_path), self.model_path, self.faces_cfg.crop_size)
            predict_batch = _traced_forward(classifier, self.faces_cfg.crop_size)
        self._keras_model = classifier
        return classifier, predict_batch

    def _load_onnx(self, choice: ModelChoice) -> tuple[Any, Callable[[np.ndarray], Any]]:
        session = choice.session or onnxfile.open_session(choice.path, n_threads=self.score_cfg.threads)
        onnxfile.check_contract(session, choice.path, self.faces_cfg.crop_size)
        return session, lambda crops: onnxfile.predict(session, crops)

    def score(self, path: str | Path) -> ScoredVideo:
        """Face scores of one video; a broken file gets a status, never an exception."""
        return self.finish(self.extract(path))

    def extract(self, path: str | Path, decode_threads: int = 1) -> ScoredVideo:
        """Decode, detect and crop one video (thread-safe: score_paths runs several at once).

        Returns a ScoredVideo whose `score` column is still empty; `finish` fills it.
        `decode_threads`: FFmpeg threads (2 when this is the only video in flight).
        """
        from dfhelpers import extract, jpeg

        self.load_detector()
        started = time.perf_counter()
        try:
            video_faces = extract.extract_video(path, self.faces_cfg, self._detector, decode_threads)
        except DfdetectError as err:
            return _failed(Path(path), f"unreadable: {' '.join(str(err).split())}")
        except Exception as err:  # noqa: BLE001 - one bad video must not stop the others; reported in its row
            return _failed(Path(path), f"error: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
        crops = np.stack([jpeg.jpeg_roundtrip(crop, self.faces_cfg.jpeg_quality) for crop in video_faces.crops]
                         ) if video_faces.n_faces else video_faces.crops
        table = video_faces.table().assign(score=np.nan, crop="")
        return ScoredVideo(Path(path).name, str(path), video_faces.status, video_faces.frames_read,
                           table[FACE_COLUMNS], crops, time.perf_counter() - started)

    def finish(self, extracted: ScoredVideo) -> ScoredVideo:
        """Run the model once on all the crops of an extracted video (in the calling thread).

        Raises:
            ModelLoadError: the model cannot be loaded (a failure of the model itself is the video's status).
        """
        if extracted.status.startswith("error") or len(extracted.crops) == 0:
            return extracted
        self.load()  # waits for a model loading in the background; a ModelLoadError stops the run
        started = time.perf_counter()
        try:
            fake_probability = self.predict(extracted.crops)
        except Exception as err:  # noqa: BLE001 - reported in the video's row, the others go on
            return _failed(Path(extracted.path), f"error: model: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
        return dataclasses.replace(extracted, faces=extracted.faces.assign(score=fake_probability),
                                   seconds=round(extracted.seconds + time.perf_counter() - started, 3))

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """P(FAKE) per crop, (k,) float64; crops (k, size, size, 3) uint8, in batches of score.batch_size.

        With score.mirror each crop's P(FAKE) is the mean of its own and its left-right mirror's.
        """
        if len(crops) == 0:
            return np.zeros(0, dtype=np.float64)
        self.load()
        fake_probability = self._forward(crops)
        if self.score_cfg.mirror:
            fake_probability = (fake_probability + self._forward(crops[:, :, ::-1])) / 2
        return fake_probability

    def cache_key(self) -> str:
        """What fixes this scorer's face scores: the model file's bytes, the face settings, the mirror."""
        key = f"{file_digest(self.model_path)[:16]}-{settings_digest(self.faces_cfg)[:8]}"
        return key + "-mirror" if self.score_cfg.mirror else key

    def _forward(self, crops: np.ndarray) -> np.ndarray:
        """The model's P(FAKE) per crop, in batches of score.batch_size."""
        batch_size = max(1, self.score_cfg.batch_size)
        outputs = [self._predict_batch(crops[start:start + batch_size].astype(np.float32))
                   for start in range(0, len(crops), batch_size)]
        return np.concatenate([np.asarray(out).reshape(-1) for out in outputs]).astype(np.float64)


class ScoreCache:
    """Face scores per video on disk, keyed by model file hash, face settings and score.mirror: resume, never rescore.

    Aggregation is not part of the key: changing the video rule's settings re-aggregates cached face
    scores. A video file replaced under the same name (size or mtime changed) is rescored.
    """

    def __init__(self, cache_dir: Path, crops_dir: Optional[Path] = None, work_dir: Optional[Path] = None):
        self.cache_dir = Path(cache_dir)
        self.crops_dir = crops_dir
        self.work_dir = work_dir

    @classmethod
    def for_scorer(cls, root: Path, scorer: VideoScorer, **kwargs: Any) -> "ScoreCache":
        """The cache folder under `root` of what fixes a scorer's face scores (VideoScorer.cache_key)."""
        return cls(Path(root) / scorer.cache_key(), **kwargs)

    def load(self, path: str | Path) -> Optional[ScoredVideo]:
        """The cached result for a video file, or None (absent, from another version, or corrupt)."""
        entry = self._entry(path)
        try:
            record = json.loads(entry.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if record.get("version") != CACHE_VERSION:
            return None
        table = pd.DataFrame(record["faces"], columns=FACE_COLUMNS).fillna({"crop": ""})
        return ScoredVideo(record["video"], str(path), record["status"], record["frames_read"],
                           table, np.zeros((0, 0, 0, 3), dtype=np.uint8), record["seconds"])

    def store(self, scored: ScoredVideo) -> ScoredVideo:
        """Write the crops (when crops_dir is set) and then the record, each atomically."""
        if scored.status.startswith("error"):
            return scored  # unexpected failures are retried on the next run
        scored = self._save_crops(scored) if self.crops_dir is not None else scored
        record = {"version": CACHE_VERSION, "video": scored.video, "path": scored.path, "status": scored.status,
                  "frames_read": scored.frames_read, "seconds": scored.seconds,
                  "faces": json.loads(scored.faces.to_json(orient="records"))}
        files.write_json(record, self._entry(scored.path))
        return scored

    def _entry(self, path: str | Path) -> Path:
        path = Path(path).resolve()
        stat = path.stat() if path.exists() else None
        identity = f"{path}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}"
        return self.cache_dir / f"{path.name}.{hashlib.sha1(identity.encode()).hexdigest()[:10]}.json"

    def _save_crops(self, scored: ScoredVideo) -> ScoredVideo:
        from dfhelpers import jpeg
        from dfhelpers.faces import crop_folder_name

        folder = Path(self.crops_dir) / crop_folder_name(scored.video)
        crop_paths = []
        for frame_index, face_index, crop in zip(scored.faces["frame"], scored.faces["face"], scored.crops):
            # for display only (timeline plots): the model saw the in-memory crop
            target = files.write_bytes(jpeg.encode_jpeg(crop, 95), folder / f"{frame_index:05d}_{face_index}.jpg")
            crop_paths.append(target.relative_to(self.work_dir).as_posix() if self.work_dir else str(target))
        return dataclasses.replace(scored, faces=scored.faces.assign(crop=crop_paths))


def score_paths(paths: list[str | Path], scorer: VideoScorer, cache: Optional[ScoreCache] = None,
                progress: bool = True, also: Sequence[tuple[VideoScorer, ScoreCache]] = ()) -> Iterator[ScoredVideo]:
    """Score videos in order (from the cache when it holds them), with a progress bar on stderr.

    `also`: other models (scorer, its cache) fed the same crops of each video this run extracts
    and stored in their caches, so that measuring them afterwards detects nothing again (a
    comparison of two models on one folder; only `scorer`'s results are yielded).

    `score.threads` videos are decoded and detected at once in threads (PyAV, OpenCV and torch
    release the GIL), while the model scores finished ones here; the model loads in the
    background meanwhile (VideoScorer.start_loading). One bad video never stops the run: it
    gets a status. Raises only ModelLoadError, before the first uncached video is yielded
    (also when that video has no face to score).
    """
    bar = tqdm(total=len(paths), unit="video", desc="scoring", disable=not progress, file=sys.stderr)
    in_flight: collections.deque = collections.deque()
    n_threads = max(1, scorer.score_cfg.threads)
    # one video alone gets the cores the others would have used, for its FFmpeg decoder
    decode_threads = n_threads if len(paths) == 1 else 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=n_threads) as pool:
        for path in paths:
            cached = cache.load(path) if cache is not None else None
            # the first uncached video starts the model loading; its detection overlaps it
            in_flight.append(cached if cached is not None
                             else pool.submit(scorer.start_loading().extract, path, decode_threads))
            while len(in_flight) > n_threads:
                yield _finish(in_flight.popleft(), scorer, cache, bar, also)
        while in_flight:
            yield _finish(in_flight.popleft(), scorer, cache, bar, also)
    bar.close()


def score_table(videos: pd.DataFrame, scorer: VideoScorer, cache: Optional[ScoreCache] = None,
                progress: bool = True, also: Sequence[tuple[VideoScorer, ScoreCache]] = ()
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, faces) of a video table (video, path, label, metadata columns), via the cache."""
    # each video's crops are let go as soon as it is scored: a folder of thousands would hold GBs
    scored = [(s.faces, s.status) for s in score_paths(videos["path"].tolist(), scorer, cache, progress=progress,
                                                         also=also)]
    tables = [table.assign(video=name) for (table, _), name in zip(scored, videos["video"]) if len(table)]
    faces = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=FACE_COLUMNS)
    statuses = {name: status for (_, status), name in zip(scored, videos["video"])}
    return predictions_from_faces(videos, faces, statuses, scorer.score_cfg), faces[FACE_COLUMNS]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the model's identity for the cache)."""
    return files.sha256(path)


def settings_digest(faces_cfg: FacesConfig) -> str:
    """SHA-256 of the face settings that change which crops a video gives (not the speed ones)."""
    from dfhelpers.faces import OUTPUT_SETTINGS

    settings = {name: getattr(faces_cfg, name) for name in OUTPUT_SETTINGS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()


# --- private helpers -------------------------------------------------------------------


def _check_input_size(classifier: Any, model_path: Path, crop_size: int) -> Any:
    """The model, if it follows the model contract for crop_size crops; else a ModelLoadError."""
    expected = tuple(classifier.input_shape[1:])
    if expected[:2] != (crop_size, crop_size) and expected[:2] != (None, None):
        raise ModelLoadError(f"{model_path}: the model takes {expected[0]}x{expected[1]} crops but faces.crop_size is "
                             f"{crop_size}; score with the config the model was trained with")
    if tuple(classifier.output_shape[1:]) != (1,):
        raise ModelLoadError(f"{model_path}: the model outputs {classifier.output_shape}, not (N, 1) P(FAKE); "
                             "save a classifier built by dfhelpers.model")
    return classifier


def _traced_forward(classifier: Any, crop_size: int) -> Callable[[np.ndarray], Any]:
    """The model's inference pass for any batch size, traced now, not inside the first videos.

    With TensorFlow, one tf.function whose batch dimension is None: a single trace (1.3 s for
    a MobileNetV2 classifier on 2 cores) where Keras' predict_on_batch traces per batch size until
    it has seen two (2.3 s). Other Keras backends: predict_on_batch, warmed up on two sizes.
    """
    import keras

    zeros = np.zeros((1, crop_size, crop_size, 3), dtype=np.float32)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        signature = [tf.TensorSpec((None, crop_size, crop_size, 3), tf.float32)]
        forward = tf.function(lambda crops: classifier(crops, training=False), input_signature=signature)
        forward(zeros)
        return lambda crops: forward(crops).numpy()
    for n_crops in (1, 2):
        classifier.predict_on_batch(np.repeat(zeros, n_crops, axis=0))
    return classifier.predict_on_batch


def _finish(pending: "ScoredVideo | concurrent.futures.Future", scorer: VideoScorer,
            cache: Optional[ScoreCache], bar: Any, also: Sequence[tuple[VideoScorer, ScoreCache]] = ()) -> ScoredVideo:
    """A cached result as it is; an extraction run through the model(s) and stored in the cache(s)."""
    if isinstance(pending, ScoredVideo):
        scored = pending
    else:
        extracted = pending.result()
        # a broken model is an error even when this video needs no score (no face): nothing
        # uncached is reported before the model is known to load
        scorer.load()
        scored = scorer.finish(extracted)
        scored = cache.store(scored) if cache is not None else scored
        for other, other_cache in also:
            if other_cache.load(extracted.path) is None:
                other.load()
                other_cache.store(other.finish(extracted))
    bar.update(1)
    bar.set_postfix_str(f"{scored.video}: {scored.status.split(':')[0]}")
    return scored


def _failed(path: Path, status: str) -> ScoredVideo:
    return ScoredVideo(path.name, str(path), status, 0, pd.DataFrame(columns=FACE_COLUMNS),
                       np.zeros((0, 0, 0, 3), dtype=np.uint8), 0.0)
