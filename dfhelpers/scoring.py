"""Face scores to one video score (the original trimmed mean and alternatives); predictions, statuses, verdicts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from dfhelpers import imagesets
from dfhelpers.config import ScoreConfig
from dfhelpers.errors import VideoReadError
from dfhelpers.runfolder import LABELS

# rank_score: the score before score.clip, which AUC, AP and EER rank by (the clip would tie confident videos)
PREDICTION_COLUMNS = ["video", "status", "n_faces", "faces_used", "track", "score", "rank_score", "verdict", "label",
                      "path"]
FACE_COLUMNS = ["video", "frame", "face", "track", "x1", "y1", "x2", "y2", "prob", "score", "crop"]  # box: full-res px
STATUS_OK = "ok"
PRIOR_STATUSES = ("no_face", "few_faces", "unreadable", "error")  # status kinds scored with the prior


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
    """One video score from its face scores with the configured rule, then clipped."""
    return clip_score(unclipped_score(face_scores, score_cfg), score_cfg)


def unclipped_score(face_scores: np.ndarray, score_cfg: ScoreConfig) -> float:
    """The video score before score.clip: the configured rule's, or the prior for fewer than
    `min_faces` faces (or too few to trim), as the original did. Videos rank by it."""
    n_faces = len(face_scores)
    too_few_to_trim = score_cfg.aggregation == "trimmed_mean" and n_faces <= 2 * score_cfg.trim
    if n_faces == 0 or n_faces < score_cfg.min_faces or too_few_to_trim:
        return float(score_cfg.prior)
    return float(AGGREGATIONS[score_cfg.aggregation](face_scores, score_cfg))


def clip_score(score: float, score_cfg: ScoreConfig) -> float:
    """Bound a video score away from 0 and 1, where one wrong video costs an unbounded log loss.

    With `clip_exact_only` (the original) only exact 0 and 1 move to the bounds.
    """
    low, high = score_cfg.clip
    if score_cfg.clip_exact_only:
        return low if score == 0.0 else high if score == 1.0 else float(score)
    return float(min(max(score, low), high))


def video_score(faces: pd.DataFrame, score_cfg: ScoreConfig) -> dict[str, Any]:
    """Score one video from its faces (columns track, score): score, rank_score (unclipped), status,
    faces_used, track.

    With per_track "max" each track with at least `min_faces` faces is scored on its own
    and the most suspicious one decides (a swap may touch one of several people); when no
    track is long enough (tracking broke up), all faces are pooled as in the original.
    """
    n_faces = len(faces)
    if per_track_decides(faces, score_cfg):
        by_track = {track: unclipped_score(group["score"].to_numpy(), score_cfg)
                    for track, group in faces.groupby("track") if len(group) >= score_cfg.min_faces}
        track = max(by_track, key=lambda t: by_track[t])
        return {"score": clip_score(by_track[track], score_cfg), "rank_score": by_track[track], "status": STATUS_OK,
                "faces_used": int((faces["track"] == track).sum()), "track": int(track)}
    status = STATUS_OK if n_faces >= score_cfg.min_faces else (
        f"few_faces: {n_faces} faces < min_faces {score_cfg.min_faces}; scored with the prior")
    if n_faces == 0:
        status = "no_face: no face found in the sampled frames; scored with the prior"
    unclipped = unclipped_score(faces["score"].to_numpy(), score_cfg)
    return {"score": clip_score(unclipped, score_cfg), "rank_score": unclipped, "status": status,
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
    Unreadable and failed videos and videos without faces get the prior, keep their reason
    and the verdict "not judged (...)". Metadata columns of `videos` (part, method, source,
    any extra metadata.json key) follow PREDICTION_COLUMNS, for the breakdown.
    """
    rows = []
    faces_by_video = dict(tuple(faces.groupby("video", sort=False))) if len(faces) else {}
    empty = pd.DataFrame({"track": pd.Series(dtype=int), "score": pd.Series(dtype=float)})
    for video, path, label in zip(videos["video"], videos["path"], _labels_of(videos)):
        video_faces = faces_by_video.get(video, empty)
        scored = video_score(video_faces, item_rule(path, score_cfg))
        status = _final_status(str(statuses.get(video, STATUS_OK)), scored["status"])
        if status.split(":")[0] in PRIOR_STATUSES:
            scored["score"], scored["rank_score"] = clip_score(score_cfg.prior, score_cfg), float(score_cfg.prior)
        rows.append({**scored, "video": video, "status": status, "n_faces": len(video_faces),
                     "label": label, "path": str(path),
                     "verdict": verdict(scored["score"], status, score_cfg.threshold)})
    predictions = pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
    extra = [c for c in videos.columns if c not in PREDICTION_COLUMNS and c not in ("original", "group", "person")]
    return pd.concat([predictions, videos[extra].reset_index(drop=True)], axis=1) if extra else predictions


def item_rule(path: str | Path, score_cfg: ScoreConfig) -> ScoreConfig:
    """The score settings one item is judged by.

    A video's sampled frames can give `min_faces` faces, and a shorter track than that does not
    decide it. A face-image item has one frame per image, so one with fewer images than
    `min_faces` needs a face in each image instead (a single image: its one face), trimming only
    while one is left. One config thus scores a face set's images and a folder of videos alike.
    """
    if not imagesets.is_image_item(path):
        return score_cfg
    try:
        offered = imagesets.n_frames(path)
    except VideoReadError:  # a missing image or empty folder: its status gives it the prior
        return score_cfg
    if offered >= score_cfg.min_faces:
        return score_cfg
    return dataclasses.replace(score_cfg, min_faces=offered, trim=min(score_cfg.trim, (offered - 1) // 2))


def is_failed(status: str) -> bool:
    """True for a video that could not be scored at all (unreadable file, unexpected error)."""
    return str(status).split(":")[0] in ("unreadable", "error")


def status_counts(predictions: pd.DataFrame) -> dict[str, int]:
    """How many videos got the prior, by reason: no face, too few faces, unreadable (and all of them)."""
    kinds = predictions["status"].astype(str).str.split(":").str[0]
    return {"n_no_face": int((kinds == "no_face").sum()), "n_few_faces": int((kinds == "few_faces").sum()),
            "n_unreadable": int((kinds == "unreadable").sum()), "n_prior": int(kinds.isin(PRIOR_STATUSES).sum())}


def verdict(score: float, status: str, threshold: float) -> str:
    """FAKE or REAL at the threshold; "not judged (<reason>)" for a video scored with the prior.

    Such a video's score is the prior, a guess for the submission file, not the model's verdict.
    """
    kind = str(status).split(":")[0]
    if kind in PRIOR_STATUSES:
        return f"not judged ({kind})"
    return "FAKE" if score >= threshold else "REAL"


# --- private helpers -------------------------------------------------------------------


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
