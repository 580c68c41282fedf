"""Measuring folders of test videos, each on its own with the engine; their report files, figures and the
videos worth showing (the most confidently wrong or right); notebook 05 and cli both use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from dfhelpers import engine, files, metadata, metrics, runfolder
from dfhelpers.config import Config, FacesConfig, ScoreConfig
from dfhelpers.errors import ConfigError, MetadataError, ModelLoadError
from dfhelpers.runfolder import LABELS
from dfhelpers.scoring import STATUS_OK


def evaluate_folders(cfg: Config, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Score and measure every test folder of a config, each on its own (cross-dataset runs).

    Returns {folder name: {"predictions", "faces", "metrics", "reports_dir"}} (see evaluate_each);
    each folder's report files go to reports/ for the first (test_dir), reports/<name>/ after.

    Raises:
        ConfigError: the config names no test_dir. ModelLoadError: cfg.model_path is missing.
    """
    if not cfg.test_dirs:
        raise ConfigError(f"{cfg.source or 'the config'}: no test_dir, so there is nothing to score: "
                          "set test_dir to a folder of videos (with a metadata.json to measure them)")
    _check_trained(cfg)
    return dict(evaluate_each(cfg.test_dirs, cfg.model_path, cfg.faces, cfg.score, cfg.reports_dir,
                              first_in_out_dir=True, crops_dir=_crops_dir(cfg), work_dir=cfg.work_dir,
                              progress=progress))


def evaluate_each(folders: Sequence[str | Path], model_path: str | Path, faces_cfg: FacesConfig,
                  score_cfg: ScoreConfig, out_dir: Path, *, labelled: bool = False,
                  first_in_out_dir: bool = False, crops_dir: Optional[Path] = None,
                  work_dir: Optional[Path] = None, progress: bool = True,
                  before_scoring: Optional[Callable[[engine.VideoScorer], None]] = None,
                  also: Sequence[tuple[engine.VideoScorer, engine.ScoreCache]] = (),
                  labels_csv: Optional[Path] = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Score and measure each folder of videos on its own, writing its report files before yielding it.

    Every folder is listed before any is scored, so a bad one stops the run at once: with `labelled`
    each needs labels, its own labels file (metadata.json, metadata.csv, labels.csv) or
    `labels_csv` (video,label[,method]); files without a label are scored and reported unlabelled
    (metadata.list_videos). One scorer serves every folder; face scores are cached in
    out_dir/score_cache/ (the scored crops saved in crops_dir, relative to work_dir, when given).
    A folder's reports (write_evaluation) go to out_dir/<name>/, or to out_dir itself for
    the first when `first_in_out_dir`; folders of one name are reported as name, name-2, ...
    `before_scoring(scorer)` runs before a folder with videos not in the cache is scored;
    `also` (other scorers and their caches) get the same crops, as engine.score_paths says.

    Yields:
        (name, {"predictions", "faces", "metrics", "reports_dir"}) per folder, in the given order.
    Raises:
        MetadataError: a folder is missing, or (`labelled`) has no labels, or malformed ones.
    """
    tables = [(Path(folder).name, _videos_of(Path(folder), labelled, labels_csv)) for folder in folders]
    scorer = engine.VideoScorer(model_path, faces_cfg, score_cfg)  # loads only when a video is not cached
    cache = engine.ScoreCache.for_scorer(Path(out_dir) / runfolder.SCORE_CACHE_DIR, scorer,
                                         crops_dir=crops_dir, work_dir=work_dir)
    reports_dirs: dict[str, Path] = {}
    for folder_name, videos in tables:
        if before_scoring is not None and any(cache.load(path) is None for path in videos["path"]):
            before_scoring(scorer)
        predictions, faces = engine.score_table(videos, scorer, cache, progress=progress, also=also)
        folder_metrics = metrics.evaluate(predictions, score_cfg.threshold, faces, n_bootstrap=score_cfg.bootstrap,
                                          seed=score_cfg.bootstrap_seed, confidence=score_cfg.confidence)
        name = _unique_name(folder_name, reports_dirs)
        reports_dir = Path(out_dir) if first_in_out_dir and not reports_dirs else Path(out_dir) / name
        reports_dirs[name] = reports_dir
        write_evaluation(predictions, faces, folder_metrics, reports_dir)
        yield name, {"predictions": predictions, "faces": faces, "metrics": folder_metrics,
                     "reports_dir": reports_dir}


def evaluation_figures(predictions: pd.DataFrame, metrics: dict[str, Any], threshold: float) -> dict[str, Any]:
    """An evaluated folder's figures by file name: ROC, confusion matrix, video scores by true label."""
    from dfhelpers import plots  # matplotlib: imported when figures are drawn, not to score

    return {"roc": plots.video_roc(predictions), "confusion": plots.video_confusion(metrics["confusion"]),
            "score_histogram": plots.video_score_histogram(predictions, threshold)}


def explanation_figure(explained: list[dict[str, Any]]) -> Any:
    """Heatmap strips of explained videos (explain.explain_video's dicts), named by the first one's method."""
    from dfhelpers import plots

    return plots.explanation_strips(explained, explained[0]["method"] if explained else "gradcam")


# --- report files ----------------------------------------------------------------------


def submission(predictions: pd.DataFrame) -> pd.DataFrame:
    """The DFDC (Kaggle) submission: filename,label with label = P(FAKE), one row per video."""
    return pd.DataFrame({"filename": predictions["video"].astype(str),
                         "label": predictions["score"].astype(float)})


def write_evaluation(predictions: pd.DataFrame, faces: pd.DataFrame, metrics: dict[str, Any],
                     folder: Path) -> dict[str, Path]:
    """Write predictions.csv, frame_scores.csv, metrics.json and submission.csv into `folder` atomically.

    NaN metrics (AUC of a single-class set) are written as JSON null, which every reader parses.
    A video not judged keeps its prior in submission.csv: the DFDC format needs a number per video.
    """
    folder = Path(folder)
    return {"predictions": files.write_csv(predictions, folder / runfolder.PREDICTIONS_CSV),
            "frame_scores": files.write_csv(faces, folder / runfolder.FRAME_SCORES_CSV),
            "metrics": files.write_json(metrics, folder / runfolder.METRICS_JSON),
            "submission": files.write_csv(submission(predictions), folder / runfolder.SUBMISSION_CSV)}


def save_figures(figures: dict[str, Any], folder: Path) -> list[Path]:
    """Save matplotlib figures as <folder>/<name>.png, each atomically."""
    saved = []
    for name, figure in figures.items():
        with files.atomic_path(Path(folder) / f"{name}.png") as tmp:
            figure.savefig(tmp, dpi=110, bbox_inches="tight")
        saved.append(Path(folder) / f"{name}.png")
    return saved


# --- videos to show --------------------------------------------------------------------


def confidently_wrong(predictions: pd.DataFrame, n: int, threshold: float) -> pd.DataFrame:
    """The n labelled, scored videos whose score is furthest on the wrong side of the threshold."""
    labelled = predictions[predictions["label"].isin(LABELS) & (predictions["status"] == STATUS_OK)]
    truth = runfolder.label_index(labelled["label"])
    is_wrong = (labelled["score"].to_numpy() >= threshold) != (truth == 1)
    wrong = labelled[is_wrong]
    error = (wrong["score"] - truth[is_wrong]).abs()
    return wrong.assign(error=error).sort_values("error", ascending=False).head(n).reset_index(drop=True)


def confidently_right(predictions: pd.DataFrame, n: int, threshold: float) -> pd.DataFrame:
    """The n labelled, scored videos whose score is furthest on the right side of the threshold."""
    labelled = predictions[predictions["label"].isin(LABELS) & (predictions["status"] == STATUS_OK)]
    truth = runfolder.label_index(labelled["label"])
    is_right = (labelled["score"].to_numpy() >= threshold) == (truth == 1)
    right = labelled[is_right]
    error = (right["score"] - truth[is_right]).abs()
    return right.assign(error=error).sort_values("error").head(n).reset_index(drop=True)


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


# --- private helpers -------------------------------------------------------------------


def _check_trained(cfg: Config) -> None:
    if not Path(cfg.model_path).is_file():
        raise ModelLoadError(f"{cfg.model_path}: model file not found; run notebooks/04_train.ipynb first")


def _videos_of(folder: Path, labelled: bool, labels_csv: Optional[Path]) -> pd.DataFrame:
    """A folder's videos to measure; `labelled` refuses a folder that nothing labels."""
    has_labels = labels_csv is not None or any((folder / name).is_file() for name in metadata.SOURCES)
    if labelled and folder.is_dir() and not has_labels:
        raise MetadataError(f"{folder}: no labels; add a metadata.json or labels.csv, or pass --labels LABELS.csv "
                            "(columns video,label)")
    return metadata.list_videos(folder, labels_csv)


def _crops_dir(cfg: Config) -> Optional[Path]:
    """Where a config's scored crops are saved (for the timeline plots), or None when they are not."""
    return cfg.test_faces_dir if cfg.score.save_crops else None


def _unique_name(name: str, taken: dict[str, Any]) -> str:
    """`name`, or name-2, name-3 ... when two test folders share a name."""
    candidate, suffix = name, 2
    while candidate in taken:
        candidate, suffix = f"{name}-{suffix}", suffix + 1
    return candidate

