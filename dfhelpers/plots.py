"""Every figure the notebooks show; takes DataFrames and arrays, imports no stage."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dfhelpers.runfolder import LABELS, label_index

LABEL_COLORS = {"REAL": "tab:blue", "FAKE": "tab:red"}


# --- 01 data ------------------------------------------------------------------------------


def videos_per_part(counts: pd.DataFrame) -> plt.Figure:
    """Grouped bars of REAL and FAKE videos per part (the table from metadata.videos_per_part)."""
    per_part = counts.drop(index="total", errors="ignore")[list(LABELS)]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(per_part) + 2), 3.2))
    per_part.plot.bar(ax=ax, color=[LABEL_COLORS[label] for label in LABELS], rot=0)
    ax.set_xlabel("")
    ax.set_ylabel("videos")
    ax.set_title("Videos per part and label")
    for container in ax.containers:
        ax.bar_label(container, fontsize=8)
    fig.tight_layout()
    return fig


# --- 02 faces -----------------------------------------------------------------------------


def crop_grid(crops: pd.DataFrame, root, per_label: int = 8, columns: int = 4, seed: int = 0) -> plt.Figure:
    """Sample face crops, REAL on the left and FAKE on the right, each titled video:frame.

    Args:
        crops: one row per crop with `path` (relative to root), `label`, `video`, `frame`.
        root: the folder crop paths are relative to (cfg.work_dir).
        per_label: crops drawn per label (seeded, without replacement).
    """
    rng = np.random.default_rng(seed)
    n_rows = max(1, -(-per_label // columns))
    fig = plt.figure(figsize=(2 * columns * 1.5 + 0.5, n_rows * 1.7 + 0.5))
    for panel, label in zip(fig.subfigures(1, 2, wspace=0.04), LABELS):
        labelled = crops[crops["label"] == label]
        chosen = labelled.iloc[np.sort(rng.choice(len(labelled), min(per_label, len(labelled)), replace=False))]
        panel.suptitle(f"{label} ({len(labelled)} crops)", color=LABEL_COLORS[label])
        axes = np.atleast_1d(panel.subplots(n_rows, columns)).ravel()
        for ax in axes:
            ax.axis("off")
        for ax, crop in zip(axes, chosen.itertuples()):
            ax.imshow(plt.imread(f"{root}/{crop.path}"))
            ax.set_title(f"{str(crop.video).rsplit('.', 1)[0][:12]}:{crop.frame}", fontsize=7)
        if chosen.empty:
            axes[0].text(0.5, 0.5, "no crops", ha="center", va="center", transform=axes[0].transAxes)
    return fig


# --- 03 split -----------------------------------------------------------------------------


def split_counts(summary: pd.DataFrame) -> plt.Figure:
    """Groups, videos and crops per split, REAL and FAKE side by side (the table from splitting.summary).

    `summary` is indexed by (split, label) with columns groups, videos, crops; "all" rows are ignored.
    """
    per_label = summary.drop(index="all", level="label", errors="ignore")
    splits = list(dict.fromkeys(per_label.index.get_level_values("split")))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, column in zip(axes, ["groups", "videos", "crops"]):
        table = per_label[column].unstack("label").reindex(index=splits, columns=list(LABELS), fill_value=0)
        table.plot.bar(ax=ax, color=[LABEL_COLORS[label] for label in LABELS], rot=0, legend=column == "crops")
        ax.set_title(f"{column.capitalize()} per split")
        ax.set_xlabel("")
        for container in ax.containers:
            ax.bar_label(container, fontsize=8)
    fig.tight_layout()
    return fig


# --- 04 train -----------------------------------------------------------------------------


def training_curves(history: pd.DataFrame, best_epoch: int | None = None) -> plt.Figure:
    """Loss, accuracy and ROC AUC per epoch, train and val (the original's loss/acc plots plus AUC).

    `history` has an `epoch` column (1 = first) and Keras log columns such as loss, val_loss.
    """
    panels = [(name, title) for name, title in [("loss", "Loss"), ("acc", "Accuracy"), ("auc", "ROC AUC")]
              if name in history.columns]
    if not panels:  # train.epochs 0: a calibrated train.init, no epoch to show
        fig, ax = plt.subplots(figsize=(4.2, 1.0))
        ax.axis("off")
        ax.text(0.5, 0.5, "no epochs trained", ha="center", va="center")
        return fig
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (name, title) in zip(axes[0], panels):
        ax.plot(history["epoch"], history[name], marker=".", label=name)
        if f"val_{name}" in history.columns:
            ax.plot(history["epoch"], history[f"val_{name}"], marker=".", label=f"val_{name}")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --- 05 inference ---------------------------------------------------------------------------


def video_roc(predictions: pd.DataFrame) -> plt.Figure:
    """ROC curve of the labelled videos (columns label, score), AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labelled = predictions[predictions["label"].isin(LABELS)]
    is_fake = label_index(labelled["label"])
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="chance")
    if len(np.unique(is_fake)) == 2:
        false_pos, true_pos, _ = roc_curve(is_fake, labelled["score"])
        auc = roc_auc_score(is_fake, labelled["score"])
        ax.plot(false_pos, true_pos, color=LABEL_COLORS["FAKE"], label=f"videos (AUC {auc:.3f})")
    else:
        ax.text(0.5, 0.5, "AUC undefined:\nneeds REAL and FAKE videos", ha="center", va="center")
    ax.set(xlabel="false positive rate (REAL called FAKE)", ylabel="true positive rate",
           title=f"ROC, {len(labelled)} labelled videos", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def video_confusion(confusion: dict) -> plt.Figure:
    """Confusion matrix ({"labels": [...], "matrix": rows true, columns predicted}) with counts."""
    labels, matrix = confusion["labels"], np.asarray(confusion["matrix"])
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, matrix.max()))
    for (row, col), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(col, row, str(count), ha="center", va="center", color=color, fontsize=12)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title="Videos")
    fig.tight_layout()
    return fig


def video_score_histogram(predictions: pd.DataFrame, threshold: float) -> plt.Figure:
    """Histogram of video scores by true label (unlabelled in grey), threshold marked."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    bins = np.linspace(0, 1, 21)
    labels = predictions["label"].where(predictions["label"].isin(LABELS), "unlabelled")
    for label, color in [*LABEL_COLORS.items(), ("unlabelled", "0.6")]:
        scores = predictions.loc[labels == label, "score"]
        if len(scores):
            ax.hist(scores, bins=bins, alpha=0.6, color=color, label=f"{label} ({len(scores)})")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set(xlabel="video score, P(FAKE)", ylabel="videos", title="Video scores by label", xlim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def frame_score_timelines(videos: pd.DataFrame, faces: pd.DataFrame, crops: dict[str, list],
                          threshold: float) -> plt.Figure:
    """Per video (rows of `videos`: video, label, score), face scores over frames and some crops.

    `faces` holds video, frame, track, score; `crops` maps a video to [(frame, HxWx3 uint8)].
    """
    n_rows = max(1, len(videos))
    fig, axes = plt.subplots(n_rows, 2, figsize=(11, 2.4 * n_rows), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 4]})
    if videos.empty:
        axes[0, 0].text(0.5, 0.5, "no confidently wrong videos", ha="center", va="center")
        axes[0, 0].axis("off")
        axes[0, 1].axis("off")
    for (ax_line, ax_crops), row in zip(axes, videos.itertuples()):
        _frame_score_line(ax_line, faces[faces["video"] == row.video], row, threshold)
        _crop_strip(ax_crops, crops.get(row.video, []))
    fig.tight_layout()
    return fig


def _frame_score_line(ax: plt.Axes, video_faces: pd.DataFrame, row, threshold: float) -> None:
    for track, track_faces in video_faces.sort_values("frame").groupby("track"):
        ax.plot(track_faces["frame"], track_faces["score"], marker=".", label=f"track {track}")
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1)
    ax.axhline(row.score, color=LABEL_COLORS.get(row.label, "0.5"), linewidth=1.5, alpha=0.7,
               label=f"video {row.score:.2f}")
    ax.set(ylim=(-0.02, 1.02), xlabel="frame", ylabel="P(FAKE)", title=f"{row.video} (true {row.label})")
    ax.legend(fontsize=7, loc="best")


def _crop_strip(ax: plt.Axes, frame_crops: list) -> None:
    ax.axis("off")
    if not frame_crops:
        ax.text(0.5, 0.5, "crops not kept (score.save_crops)", ha="center", va="center")
        return
    size = frame_crops[0][1].shape[0]
    strip = np.concatenate([np.asarray(crop)[:size, :size] for _, crop in frame_crops], axis=1)
    ax.imshow(strip)
    ax.set_title("frames " + ", ".join(str(frame) for frame, _ in frame_crops), fontsize=8)


# --- 05 explanations ------------------------------------------------------------------------


def explanation_strips(explained: list[dict], method: str = "gradcam") -> plt.Figure:
    """One row per video: its crops, the same crops under their heatmaps, each titled with the face score.

    `explained` holds dicts with title, crops (k, h, w, 3) uint8, heatmaps (k, h, w) in [0, 1],
    frames (k,) and scores (k,) P(FAKE); `method` names how the heatmaps were made.
    """
    n_columns = max([len(item["crops"]) for item in explained] + [1])
    n_videos = max(1, len(explained))
    # one sub-figure per video: its title sits above its own two rows, never on the row before
    fig = plt.figure(figsize=(1.9 * n_columns, 4.4 * n_videos + 0.3), layout="constrained")
    fig.suptitle(f"where the model saw FAKE ({method}; red = strongest)", fontsize=9)
    for subfig, item in zip(np.atleast_1d(fig.subfigures(n_videos, 1)), explained or [None]):
        axes = subfig.subplots(2, n_columns, squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        if item is None:
            axes[0, 0].text(0.5, 0.5, "no videos to explain", ha="center", va="center")
            continue
        subfig.suptitle(item["title"], fontsize=9, fontweight="bold", x=0.02, ha="left")
        for column, (crop, heatmap, frame, score) in enumerate(
                zip(item["crops"], item["heatmaps"], item["frames"], item["scores"])):
            axes[0, column].imshow(crop)
            axes[0, column].set_title(f"frame {frame}\nP(FAKE) {score:.2f}", fontsize=7)
            axes[1, column].imshow(crop)
            axes[1, column].imshow(heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    return fig
