"""Face scores to video scores (the original trimmed mean and alternatives), metrics, report files."""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dfhelpers import compat, files, metadata
from dfhelpers.config import Config, FacesConfig, ScoreConfig
from dfhelpers.errors import DfdetectError, MetadataError, ModelLoadError

LABELS = ("REAL", "FAKE")
PREDICTION_COLUMNS = ["video", "status", "n_faces", "faces_used", "track", "score", "label", "path"]
FACE_COLUMNS = ["video", "frame", "face", "track", "prob", "score", "crop"]
STATUS_OK = "ok"
PRIOR_STATUSES = ("no_face", "few_faces", "unreadable", "error")  # status kinds scored with the prior
CACHE_VERSION = 1  # bump when the cached per-video record changes shape


# --- aggregation: face scores -> one video score ---------------------------------------


def trimmed_mean(face_scores: np.ndarray, trim: int) -> float:
    """The original rule: sort, drop the `trim` lowest and `trim` highest, average the rest."""
    ordered = np.sort(np.asarray(face_scores, dtype=np.float64))
    kept = ordered[trim:len(ordered) - trim]
    return float(np.mean(kept))


def confident_mean(face_scores: np.ndarray, score_cfg: ScoreConfig) -> float:
    """The DFDC winner's rule: when many faces are confidently fake, average only those.

    Else, when nearly all faces are confidently real, average those; else the plain mean.
    A few confident fake frames are a strong signal because blending artefacts come and go
    with pose and lighting, while a plain mean dilutes them with the clean frames.
    """
    scores = np.asarray(face_scores, dtype=np.float64)
    is_fake = scores > score_cfg.confident_fake
    is_real = scores < score_cfg.confident_real
    if is_fake.mean() > score_cfg.confident_share:
        return float(scores[is_fake].mean())
    if is_real.mean() > score_cfg.confident_real_share:
        return float(scores[is_real].mean())
    return float(scores.mean())


AGGREGATIONS: dict[str, Callable[[np.ndarray, ScoreConfig], float]] = {
    "trimmed_mean": lambda scores, score_cfg: trimmed_mean(scores, score_cfg.trim),
    "mean": lambda scores, score_cfg: float(np.mean(np.asarray(scores, dtype=np.float64))),
    "median": lambda scores, score_cfg: float(np.median(np.asarray(scores, dtype=np.float64))),
    "confident": confident_mean,
}


def aggregate(face_scores: np.ndarray, score_cfg: ScoreConfig) -> float:
    """One video score from its face scores with the configured rule, then clipped.

    Fewer than `min_faces` faces (or too few to trim) give the prior, as the original did.
    """
    n_faces = len(face_scores)
    too_few_to_trim = score_cfg.aggregation == "trimmed_mean" and n_faces <= 2 * score_cfg.trim
    if n_faces == 0 or n_faces < score_cfg.min_faces or too_few_to_trim:
        return clip_score(score_cfg.prior, score_cfg)
    return clip_score(AGGREGATIONS[score_cfg.aggregation](face_scores, score_cfg), score_cfg)


def clip_score(score: float, score_cfg: ScoreConfig) -> float:
    """Bound a video score away from 0 and 1, where one wrong video costs an unbounded log loss.

    With `clip_exact_only` (the original) only exact 0 and 1 move to the bounds.
    """
    low, high = score_cfg.clip
    if score_cfg.clip_exact_only:
        return low if score == 0.0 else high if score == 1.0 else float(score)
    return float(min(max(score, low), high))


def video_score(faces: pd.DataFrame, score_cfg: ScoreConfig) -> dict[str, Any]:
    """Score one video from its faces (columns track, score): score, status, faces_used, track.

    With per_track "max" each track with at least `min_faces` faces is scored on its own
    and the most suspicious one decides (a swap may touch one of several people); when no
    track is long enough (tracking broke up), all faces are pooled as in the original.
    """
    n_faces = len(faces)
    if per_track_decides(faces, score_cfg):
        by_track = {track: aggregate(group["score"].to_numpy(), score_cfg)
                    for track, group in faces.groupby("track") if len(group) >= score_cfg.min_faces}
        track = max(by_track, key=lambda t: by_track[t])
        return {"score": by_track[track], "status": STATUS_OK,
                "faces_used": int((faces["track"] == track).sum()), "track": int(track)}
    status = STATUS_OK if n_faces >= score_cfg.min_faces else (
        f"few_faces: {n_faces} faces < min_faces {score_cfg.min_faces}; scored with the prior")
    if n_faces == 0:
        status = "no_face: no face found in the sampled frames; scored with the prior"
    return {"score": aggregate(faces["score"].to_numpy(), score_cfg), "status": status,
            "faces_used": n_faces, "track": -1}


def per_track_decides(faces: pd.DataFrame, score_cfg: ScoreConfig) -> bool:
    """True when per-track scoring applies: "max" mode and at least one long enough track."""
    if score_cfg.per_track != "max" or faces.empty:
        return False
    return bool((faces["track"].value_counts() >= score_cfg.min_faces).any())


def predictions_from_faces(videos: pd.DataFrame, faces: pd.DataFrame, statuses: pd.Series | dict,
                           score_cfg: ScoreConfig) -> pd.DataFrame:
    """One prediction row per video (columns PREDICTION_COLUMNS) from face scores and extraction statuses.

    `faces` holds video, track, score; `statuses` maps video -> the face stage's status
    ("ok", "no_face", "partial: ...", "unreadable: ...", "error: ..."; missing means ok).
    Unreadable and failed videos and videos without faces get the prior and keep their reason.
    """
    rows = []
    faces_by_video = dict(tuple(faces.groupby("video", sort=False))) if len(faces) else {}
    empty = pd.DataFrame({"track": pd.Series(dtype=int), "score": pd.Series(dtype=float)})
    for video, path, label in zip(videos["video"], videos["path"], _labels_of(videos)):
        video_faces = faces_by_video.get(video, empty)
        scored = video_score(video_faces, score_cfg)
        status = _final_status(str(statuses.get(video, STATUS_OK)), scored["status"])
        if status.split(":")[0] in PRIOR_STATUSES:
            scored["score"] = clip_score(score_cfg.prior, score_cfg)
        rows.append({**scored, "video": video, "status": status, "n_faces": len(video_faces),
                     "label": label, "path": str(path)})
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


def is_failed(status: str) -> bool:
    """True for a video that could not be scored at all (unreadable file, unexpected error)."""
    return str(status).split(":")[0] in ("unreadable", "error")


# --- scoring videos: faces -> model -> face scores, cached per model ----------------------


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


class VideoScorer:
    """The face detector and the model, loaded on first use, scoring one video at a time.

    Frames are sampled, detected and cropped exactly as the face stage does for training
    (dfhelpers.faces.extract_video), and each crop goes through the same JPEG round trip as
    the training crops; all faces of a video then go through the model in one batched call.
    """

    def __init__(self, model_path: str | Path, faces_cfg: FacesConfig, score_cfg: ScoreConfig):
        self.model_path = Path(model_path)
        self.faces_cfg = faces_cfg
        self.score_cfg = score_cfg
        self._model: Any = None
        self._detector: Any = None

    def load(self) -> "VideoScorer":
        """Load MTCNN, then the model (torch before TensorFlow: see compat.avoid_triton_after_tensorflow).

        Raises:
            ModelLoadError: the model file is missing or corrupt.
        """
        if self._model is not None and self._detector is not None:
            return self
        if not self.model_path.is_file():  # fail fast, before seconds of imports
            raise ModelLoadError(f"{self.model_path}: model file not found; pass a .keras file saved by notebook 04")
        compat.avoid_triton_after_tensorflow()
        from dfhelpers import faces  # imported here: torch and TensorFlow take seconds to import

        if self._detector is None:
            import torch

            # MTCNN's R/O-net stages are thousands of tiny ops: with 2 threads on a 2-core machine
            # that is busy, OpenMP spin-waiting made detection 5x slower (measured: 12 s vs 2 s CPU)
            torch.set_num_threads(max(1, self.faces_cfg.torch_threads))
            self._detector = faces.FaceDetector(self.faces_cfg)
        from dfhelpers import model

        if self._model is None:
            self._model = _check_input_size(model.load(self.model_path), self.model_path, self.faces_cfg.crop_size)
            self._warm_up()
        return self

    def _warm_up(self) -> None:
        """Trace the model's predict function for any batch size now, not inside the first videos.

        Keras traces predict_on_batch per input shape until it has seen two batch sizes, then
        keeps one trace for all sizes; each trace of a MobileNet-sized model costs seconds.
        """
        size = self.faces_cfg.crop_size
        for n_crops in (1, 2):
            self._model.predict_on_batch(np.zeros((n_crops, size, size, 3), dtype=np.float32))

    def score(self, path: str | Path) -> ScoredVideo:
        """Face scores of one video; a broken file gets a status, never an exception."""
        return self.finish(self.extract(path))

    def extract(self, path: str | Path) -> ScoredVideo:
        """Decode, detect and crop one video (thread-safe: score_paths runs several at once).

        Returns a ScoredVideo whose `score` column is still empty; `finish` fills it.
        """
        from dfhelpers import faces

        self.load()
        started = time.perf_counter()
        try:
            video_faces = faces.extract_video(path, self.faces_cfg, self._detector)
        except DfdetectError as err:
            return _failed(Path(path), f"unreadable: {' '.join(str(err).split())}")
        except Exception as err:  # noqa: BLE001 - one bad video must not stop the others; reported in its row
            return _failed(Path(path), f"error: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
        crops = np.stack([faces.jpeg_roundtrip(crop, self.faces_cfg.jpeg_quality) for crop in video_faces.crops]
                         ) if video_faces.n_faces else video_faces.crops
        table = video_faces.table().assign(score=np.nan, crop="")
        return ScoredVideo(Path(path).name, str(path), video_faces.status, video_faces.frames_read,
                           table[FACE_COLUMNS], crops, time.perf_counter() - started)

    def finish(self, extracted: ScoredVideo) -> ScoredVideo:
        """Run the model once on all the crops of an extracted video (in the calling thread)."""
        if extracted.status.startswith("error") or len(extracted.crops) == 0:
            return extracted
        started = time.perf_counter()
        try:
            fake_probability = self.predict(extracted.crops)
        except Exception as err:  # noqa: BLE001 - reported in the video's row, the others go on
            return _failed(Path(extracted.path), f"error: model: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
        return dataclasses.replace(extracted, faces=extracted.faces.assign(score=fake_probability),
                                   seconds=round(extracted.seconds + time.perf_counter() - started, 3))

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """P(FAKE) per crop, (k,) float64; crops (k, size, size, 3) uint8, in batches of score.batch_size."""
        if len(crops) == 0:
            return np.zeros(0, dtype=np.float64)
        batch_size = max(1, self.score_cfg.batch_size)
        outputs = [self._model.predict_on_batch(crops[start:start + batch_size].astype(np.float32))
                   for start in range(0, len(crops), batch_size)]
        return np.concatenate([np.asarray(out).reshape(-1) for out in outputs]).astype(np.float64)


class ScoreCache:
    """Face scores per video on disk, keyed by model file hash and face settings: resume, never rescore.

    Aggregation is not part of the key: changing score settings re-aggregates cached face
    scores. A video file replaced under the same name (size or mtime changed) is rescored.
    """

    def __init__(self, cache_dir: Path, crops_dir: Optional[Path] = None, work_dir: Optional[Path] = None):
        self.cache_dir = Path(cache_dir)
        self.crops_dir = crops_dir
        self.work_dir = work_dir

    @classmethod
    def for_model(cls, root: Path, model_path: Path, faces_cfg: FacesConfig, **kwargs: Any) -> "ScoreCache":
        """The cache folder of one model file and face settings under `root`."""
        return cls(Path(root) / f"{file_digest(model_path)[:16]}-{settings_digest(faces_cfg)[:8]}", **kwargs)

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
        from dfhelpers import faces

        folder = Path(self.crops_dir) / Path(scored.video).stem
        crop_paths = []
        for frame_index, face_index, crop in zip(scored.faces["frame"], scored.faces["face"], scored.crops):
            # for display only (timeline plots): the model saw the in-memory crop
            target = files.write_bytes(faces.encode_jpeg(crop, 95), folder / f"{frame_index:05d}_{face_index}.jpg")
            crop_paths.append(target.relative_to(self.work_dir).as_posix() if self.work_dir else str(target))
        return dataclasses.replace(scored, faces=scored.faces.assign(crop=crop_paths))


def score_paths(paths: list[str | Path], scorer: VideoScorer, cache: Optional[ScoreCache] = None,
                progress: bool = True) -> Iterator[ScoredVideo]:
    """Score videos in order (from the cache when it holds them), with a progress bar on stderr.

    `score.threads` videos are decoded and detected at once in threads (PyAV, OpenCV and torch
    release the GIL), while the model scores finished ones here. One bad video never stops
    the run: it gets a status. Raises only ModelLoadError, before the first uncached video.
    """
    bar = tqdm(total=len(paths), unit="video", desc="scoring", disable=not progress, file=sys.stderr)
    in_flight: collections.deque = collections.deque()
    n_threads = max(1, scorer.score_cfg.threads)
    with concurrent.futures.ThreadPoolExecutor(max_workers=n_threads) as pool:
        for path in paths:
            cached = cache.load(path) if cache is not None else None
            in_flight.append(cached if cached is not None else pool.submit(scorer.load().extract, path))
            while len(in_flight) > n_threads:
                yield _finish(in_flight.popleft(), scorer, cache, bar)
        while in_flight:
            yield _finish(in_flight.popleft(), scorer, cache, bar)
    bar.close()


def score_videos(cfg: Config, videos: pd.DataFrame, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the videos of a table (video, path, label) with cfg.model_path: (predictions, faces).

    Resumes: face scores are cached under reports/score_cache/<model hash>-<face settings>/,
    so a re-run (or a run after an interruption) scores only the videos not done yet and
    does not even load the model when every video is done.

    Raises:
        ModelLoadError: cfg.model_path is missing or corrupt (checked before any work).
    """
    if not Path(cfg.model_path).is_file():
        raise ModelLoadError(f"{cfg.model_path}: model file not found; run notebooks/04_train.ipynb first")
    crops_dir = cfg.test_faces_dir if cfg.score.save_crops else None
    cache = ScoreCache.for_model(score_cache_root(cfg), cfg.model_path, cfg.faces, crops_dir=crops_dir,
                                 work_dir=cfg.work_dir)
    scorer = VideoScorer(cfg.model_path, cfg.faces, cfg.score)
    scored = list(score_paths(videos["path"].tolist(), scorer, cache, progress=progress))
    tables = [s.faces.assign(video=name) for s, name in zip(scored, videos["video"]) if len(s.faces)]
    faces = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=FACE_COLUMNS)
    statuses = {name: s.status for s, name in zip(scored, videos["video"])}
    return predictions_from_faces(videos, faces, statuses, cfg.score), faces[FACE_COLUMNS]


def score_cache_root(cfg: Config) -> Path:
    """Where cached face scores live (one folder per model file and face settings)."""
    return cfg.reports_dir / "score_cache"


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the model's identity for the cache)."""
    return files.sha256(path)


def settings_digest(faces_cfg: FacesConfig) -> str:
    """SHA-256 of the face settings that change which crops a video gives (not the speed ones)."""
    from dfhelpers.faces import OUTPUT_SETTINGS

    settings = {name: getattr(faces_cfg, name) for name in OUTPUT_SETTINGS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()


# --- labels and metrics ------------------------------------------------------------------


def read_labels(sources: list[str | Path]) -> pd.Series:
    """Labels (REAL/FAKE) by video file name from one or many metadata.json parts or labels CSVs.

    Raises:
        MetadataError: a source is malformed, or two sources give one video different labels.
    """
    parts = [metadata.read_labels(Path(source)) for source in sources]
    labels = pd.concat(parts) if parts else pd.Series(dtype=object, name="label")
    conflicting = labels.groupby(level=0).nunique()
    if (conflicting > 1).any():
        video = conflicting[conflicting > 1].index[0]
        raise MetadataError(f"{video!r} has different labels in {', '.join(map(str, sources))}; fix one source")
    return labels[~labels.index.duplicated()].rename("label")


def attach_labels(predictions: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """Fill `label` from a video -> label Series; videos it does not name keep their label."""
    looked_up = predictions["video"].map(labels)
    merged = looked_up.where(looked_up.isin(LABELS), predictions["label"])
    return predictions.assign(label=[label if label in LABELS else None for label in merged])


def evaluate(predictions: pd.DataFrame, threshold: float = 0.5) -> dict[str, Any]:
    """Video-level metrics over the labelled rows: AUC, log loss (the DFDC metric), accuracy.

    Unlabelled videos are counted, not scored. With one class only, AUC is NaN and `notes`
    says why; with no labelled video every metric is NaN.
    """
    labelled = predictions[predictions["label"].isin(LABELS)]
    is_fake = (labelled["label"] == "FAKE").to_numpy().astype(int)
    scores = labelled["score"].to_numpy(dtype=np.float64)
    metrics: dict[str, Any] = {"auc": math.nan, "log_loss": math.nan, "accuracy": math.nan,
                               "n_videos": int(len(predictions)), "n_labelled": int(len(labelled)),
                               **status_counts(predictions), "threshold": float(threshold),
                               "label_counts": label_counts(predictions), "notes": []}
    if len(labelled) == 0:
        metrics["notes"].append("no labelled videos: metrics need labels (metadata.json or a labels CSV)")
        return dict(metrics, confusion=confusion(predictions, threshold))
    metrics.update(_threshold_free_metrics(is_fake, scores, metrics["notes"]))
    metrics["accuracy"] = float(np.mean((scores >= threshold).astype(int) == is_fake))
    return dict(metrics, confusion=confusion(predictions, threshold))


def confusion(predictions: pd.DataFrame, threshold: float = 0.5) -> dict[str, Any]:
    """Confusion matrix of the labelled videos: rows true REAL/FAKE, columns predicted REAL/FAKE."""
    from sklearn.metrics import confusion_matrix

    labelled = predictions[predictions["label"].isin(LABELS)]
    if labelled.empty:  # scikit-learn refuses empty inputs
        return {"labels": list(LABELS), "matrix": [[0, 0], [0, 0]]}
    predicted = np.where(labelled["score"].to_numpy(dtype=np.float64) >= threshold, "FAKE", "REAL")
    matrix = confusion_matrix(labelled["label"].astype(str), predicted, labels=list(LABELS))
    return {"labels": list(LABELS), "matrix": matrix.astype(int).tolist()}


def label_counts(predictions: pd.DataFrame) -> dict[str, int]:
    """Videos per true label, with the unlabelled ones counted apart."""
    counts = {label: int((predictions["label"] == label).sum()) for label in LABELS}
    return dict(counts, unlabelled=int((~predictions["label"].isin(LABELS)).sum()))


def status_counts(predictions: pd.DataFrame) -> dict[str, int]:
    """How many videos got the prior, by reason: no face, too few faces, unreadable."""
    kinds = predictions["status"].astype(str).str.split(":").str[0]
    return {"n_no_face": int((kinds == "no_face").sum()), "n_few_faces": int((kinds == "few_faces").sum()),
            "n_unreadable": int((kinds == "unreadable").sum())}


def confidently_wrong(predictions: pd.DataFrame, n: int, threshold: float = 0.5) -> pd.DataFrame:
    """The n labelled, scored videos whose score is furthest on the wrong side of the threshold."""
    labelled = predictions[predictions["label"].isin(LABELS) & (predictions["status"] == STATUS_OK)]
    is_fake = labelled["label"] == "FAKE"
    predicted_fake = labelled["score"] >= threshold
    wrong = labelled[is_fake != predicted_fake]
    error = (wrong["score"] - np.where(wrong["label"] == "FAKE", 1.0, 0.0)).abs()
    return wrong.assign(error=error).sort_values("error", ascending=False).head(n).reset_index(drop=True)


def timeline_crops(faces: pd.DataFrame, videos: pd.DataFrame, work_dir: Path,
                   per_video: int = 6) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Up to `per_video` saved crops per video, evenly spread over its deciding track, for plots.

    `videos` has video and track (-1: all faces); crops are read from `crop` paths under work_dir.
    Videos whose crops were not kept (score.save_crops off) get an empty list.
    """
    import matplotlib.image

    crops: dict[str, list[tuple[int, np.ndarray]]] = {}
    for row in videos.itertuples():
        video_faces = faces[(faces["video"] == row.video) & (faces["crop"].fillna("") != "")]
        if row.track >= 0:
            video_faces = video_faces[video_faces["track"] == row.track]
        video_faces = video_faces.sort_values("frame")
        picks = np.unique(np.linspace(0, len(video_faces) - 1, per_video).round().astype(int)) if len(video_faces) else []
        crops[row.video] = [(int(video_faces["frame"].iloc[i]),
                             matplotlib.image.imread(Path(work_dir) / video_faces["crop"].iloc[i])) for i in picks]
    return crops


# --- report files ----------------------------------------------------------------------


def submission(predictions: pd.DataFrame) -> pd.DataFrame:
    """The DFDC (Kaggle) submission: filename,label with label = P(FAKE), one row per video."""
    return pd.DataFrame({"filename": predictions["video"].astype(str),
                         "label": predictions["score"].astype(float)})


def frame_scores_csv(cfg: Config) -> Path:
    """Where the per-face scores of the scored videos go (for the timeline plots)."""
    return cfg.reports_dir / "frame_scores.csv"


def write_reports(predictions: pd.DataFrame, faces: pd.DataFrame, metrics: dict[str, Any],
                  cfg: Config) -> dict[str, Path]:
    """Write predictions.csv, frame_scores.csv, metrics.json and submission.csv atomically.

    NaN metrics (AUC of a single-class set) are written as JSON null, which every reader parses.
    """
    return {"predictions": files.write_csv(predictions, cfg.predictions_csv),
            "frame_scores": files.write_csv(faces, frame_scores_csv(cfg)),
            "metrics": files.write_json(_json_safe(metrics), cfg.metrics_json),
            "submission": files.write_csv(submission(predictions), cfg.submission_csv)}


def save_figures(figures: dict[str, Any], folder: Path) -> list[Path]:
    """Save matplotlib figures as <folder>/<name>.png, each atomically."""
    saved = []
    for name, figure in figures.items():
        with files.atomic_path(Path(folder) / f"{name}.png") as tmp:
            figure.savefig(tmp, dpi=110, bbox_inches="tight")
        saved.append(Path(folder) / f"{name}.png")
    return saved


# --- private helpers -------------------------------------------------------------------


def _threshold_free_metrics(is_fake: np.ndarray, scores: np.ndarray, notes: list[str]) -> dict[str, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    metrics = {"log_loss": float(log_loss(is_fake, scores, labels=[0, 1]))}
    if len(np.unique(is_fake)) < 2:
        only = LABELS[int(is_fake[0])]
        notes.append(f"AUC undefined: every labelled video is {only}; it needs both REAL and FAKE videos")
        return dict(metrics, auc=math.nan)
    return dict(metrics, auc=float(roc_auc_score(is_fake, scores)))


def _check_input_size(detector: Any, model_path: Path, crop_size: int) -> Any:
    """The model, if it follows the model contract for crop_size crops; else a ModelLoadError."""
    expected = tuple(detector.input_shape[1:])
    if expected[:2] != (crop_size, crop_size) and expected[:2] != (None, None):
        raise ModelLoadError(f"{model_path}: the model takes {expected[0]}x{expected[1]} crops but faces.crop_size is "
                             f"{crop_size}; score with the config the model was trained with")
    if tuple(detector.output_shape[1:]) != (1,):
        raise ModelLoadError(f"{model_path}: the model outputs {detector.output_shape}, not (N, 1) P(FAKE); "
                             "save a detector built by dfhelpers.model")
    return detector


def _finish(pending: "ScoredVideo | concurrent.futures.Future", scorer: VideoScorer,
            cache: Optional[ScoreCache], bar: Any) -> ScoredVideo:
    """A cached result as it is; an extraction run through the model and stored in the cache."""
    if isinstance(pending, ScoredVideo):
        scored = pending
    else:
        scored = scorer.finish(pending.result())
        scored = cache.store(scored) if cache is not None else scored
    bar.update(1)
    bar.set_postfix_str(f"{scored.video}: {scored.status.split(':')[0]}")
    return scored


def _failed(path: Path, status: str) -> ScoredVideo:
    return ScoredVideo(path.name, str(path), status, 0, pd.DataFrame(columns=FACE_COLUMNS),
                       np.zeros((0, 0, 0, 3), dtype=np.uint8), 0.0)


def _final_status(extraction_status: str, scoring_status: str) -> str:
    """The status a prediction reports: the face stage's reason first, then the scorer's."""
    kind = extraction_status.split(":")[0]
    if kind in ("unreadable", "error"):
        return extraction_status
    if kind == "no_face" or scoring_status.startswith("no_face"):
        return "no_face: no face found in the sampled frames; scored with the prior"
    if kind == "partial":
        return extraction_status if scoring_status == STATUS_OK else f"{scoring_status} ({extraction_status})"
    return scoring_status


def _labels_of(videos: pd.DataFrame) -> list[Any]:
    if "label" not in videos.columns:
        return [None] * len(videos)
    return [label if label in LABELS else None for label in videos["label"]]


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
