"""dfhelpers.plots: figures whose layout a reader depends on."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dfhelpers import evaluation, metrics, plots  # noqa: E402


def _explained(n_videos: int, n_crops: int = 4) -> list[dict]:
    crops = np.random.default_rng(0).integers(0, 255, (n_crops, 32, 32, 3), dtype=np.uint8)
    return [{"title": f"video {index}", "crops": crops, "heatmaps": crops[..., 0] / 255, "frames": range(n_crops),
             "scores": [0.5] * n_crops} for index in range(n_videos)]


def test_each_explanation_title_sits_between_its_own_rows_and_the_previous_video():
    fig = plots.explanation_strips(_explained(3))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    previous_bottom = None
    assert len(fig.subfigs) == 3  # one block per video, each with its own title
    for subfig in fig.subfigs:
        title = subfig._suptitle.get_window_extent(renderer)
        axes = [ax.get_window_extent(renderer) for ax in subfig.axes]
        assert title.y0 >= max(box.y1 for box in axes) - 1  # above its crops (display y grows upwards)
        if previous_bottom is not None:
            assert title.y1 <= previous_bottom + 1  # below the previous video's heatmaps
        previous_bottom = min(box.y0 for box in axes)


def test_an_empty_explanation_says_so():
    fig = plots.explanation_strips([])
    assert any("no videos to explain" in text.get_text() for ax in fig.axes for text in ax.texts)


def test_roc_figure_draws_scikit_learns_curve_and_the_auc(predictions):
    from sklearn.metrics import roc_curve

    labelled = predictions[predictions["label"].notna()]
    figure = plots.video_roc(predictions)
    curve = figure.axes[0].lines[1]
    fpr, tpr, _ = roc_curve((labelled["label"] == "FAKE").astype(int), labelled["score"])
    assert np.allclose(curve.get_xdata(), fpr) and np.allclose(curve.get_ydata(), tpr)
    assert curve.get_label() == f"videos (AUC {metrics.evaluate(predictions)['auc']:.3f})"
    single = plots.video_roc(predictions[predictions["label"] == "FAKE"])
    assert len(single.axes[0].lines) == 1 and "AUC undefined" in single.axes[0].texts[0].get_text()


def test_confusion_and_timeline_figures_show_the_counts_and_every_track(predictions, tmp_path):
    confusion = plots.video_confusion(metrics.evaluate(predictions)["confusion"])
    assert [text.get_text() for text in confusion.axes[0].texts] == ["1", "1", "0", "3"]
    faces = pd.DataFrame({"video": "d.mp4", "frame": list(range(12)) * 2, "track": [0] * 12 + [1] * 12,
                          "score": np.r_[np.linspace(0.6, 0.8, 12), np.full(12, 0.2)]})
    wrong = evaluation.confidently_wrong(predictions, n=2).assign(track=0)
    crops = {"d.mp4": [(0, np.zeros((160, 160, 3), dtype=np.uint8)), (11, np.full((160, 160, 3), 255, np.uint8))]}
    timelines = plots.frame_score_timelines(wrong, faces, crops)
    track_lines = [line for line in timelines.axes[0].lines if line.get_label().startswith("track")]
    assert [line.get_label() for line in track_lines] == ["track 0", "track 1"]
    assert timelines.axes[1].images[0].get_array().shape == (160, 320, 3)  # two crops side by side
    saved = evaluation.save_figures({"timelines": timelines}, tmp_path / "figures")
    import matplotlib.image

    assert matplotlib.image.imread(saved[0]).shape[1] > 600
