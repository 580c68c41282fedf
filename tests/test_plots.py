"""dfhelpers.plots: figures whose layout a reader depends on."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dfhelpers import evaluation, metadata, metrics, plots, splitting  # noqa: E402


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


def test_an_empty_explanation_says_so_and_shows_nothing_else():
    fig = plots.explanation_strips([])
    assert len(fig.subfigs) == 1 and len(fig.axes) == 2  # one placeholder block: two rows of one column
    assert [text.get_text() for ax in fig.axes for text in ax.texts] == ["no videos to explain"]
    assert [image for ax in fig.axes for image in ax.images] == [] and not any(ax.axison for ax in fig.axes)
    assert fig.subfigs[0]._suptitle is None  # no video title over the placeholder


def test_explanation_strips_show_each_crop_above_itself_under_its_heatmap():
    explained = _explained(2, n_crops=3)
    explained[1] = {**explained[1], "crops": explained[1]["crops"][::-1].copy(), "frames": [4, 9, 14],
                    "scores": [0.1, 0.65, 0.999]}
    fig = plots.explanation_strips(explained, method="occlusion")
    assert fig._suptitle.get_text().startswith("where the model saw FAKE (occlusion")
    for subfig, item in zip(fig.subfigs, explained):
        assert subfig._suptitle.get_text() == item["title"]
        top, bottom = subfig.axes[:3], subfig.axes[3:]  # subplots(2, 3): the first row, then the second
        for column, (crop, heatmap, frame, score) in enumerate(
                zip(item["crops"], item["heatmaps"], item["frames"], item["scores"])):
            (shown,) = top[column].images
            np.testing.assert_array_equal(shown.get_array(), crop)
            assert top[column].get_title() == f"frame {frame}\nP(FAKE) {score:.2f}"
            under, over = bottom[column].images
            np.testing.assert_array_equal(under.get_array(), crop)
            np.testing.assert_allclose(over.get_array(), heatmap)
            assert over.get_cmap().name == "jet" and over.get_clim() == (0, 1) and over.get_alpha() == 0.45


def test_videos_per_part_draws_one_bar_per_part_and_label_with_its_count():
    videos = pd.DataFrame({"part": ["p0"] * 5 + ["p1"] * 2, "label": ["REAL", "FAKE", "FAKE", "FAKE", "FAKE",
                                                                     "REAL", "REAL"]})
    ax = plots.videos_per_part(metadata.videos_per_part(videos)).axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["p0", "p1"]  # the total row is not a bar
    real, fake = ax.containers
    assert [bar.get_height() for bar in real] == [1, 2] and [bar.get_height() for bar in fake] == [4, 0]
    assert [text.get_text() for text in ax.texts] == ["1", "2", "4", "0"]
    assert ax.get_legend_handles_labels()[1] == ["REAL", "FAKE"] and ax.get_ylabel() == "videos"
    assert matplotlib.colors.same_color(real[0].get_facecolor(), plots.LABEL_COLORS["REAL"])


def test_split_counts_draw_groups_videos_and_crops_per_split_and_label():
    split = pd.DataFrame({"split": ["train"] * 6 + ["val"] * 2 + ["test"] * 3,
                          "label": ["REAL", "REAL", "FAKE", "FAKE", "FAKE", "FAKE", "REAL", "FAKE", "REAL", "REAL",
                                    "FAKE"],
                          "group": ["g1", "g1", "g1", "g2", "g2", "g2", "g3", "g3", "g4", "g4", "g4"],
                          "video": ["r1", "r1", "f1", "f2", "f2", "f3", "r3", "f4", "r4", "r4", "f5"],
                          "path": [f"c{index}.jpg" for index in range(11)]})
    figure = plots.split_counts(splitting.summary(split))
    expected = {"groups": ([1, 1, 1], [2, 1, 1]), "videos": ([1, 1, 1], [3, 1, 1]), "crops": ([2, 1, 2], [4, 1, 1])}
    assert [ax.get_title() for ax in figure.axes] == ["Groups per split", "Videos per split", "Crops per split"]
    for ax, (column, (real_heights, fake_heights)) in zip(figure.axes, expected.items()):
        assert [tick.get_text() for tick in ax.get_xticklabels()] == ["train", "val", "test"]
        real, fake = ax.containers
        assert [bar.get_height() for bar in real] == real_heights, column
        assert [bar.get_height() for bar in fake] == fake_heights, column
    assert figure.axes[2].get_legend() is not None and figure.axes[0].get_legend() is None


def test_roc_figure_draws_scikit_learns_curve_and_the_auc(predictions):
    from sklearn.metrics import roc_curve

    labelled = predictions[predictions["label"].notna()]
    figure = plots.video_roc(predictions)
    curve = figure.axes[0].lines[1]
    fpr, tpr, _ = roc_curve((labelled["label"] == "FAKE").astype(int), labelled["score"])
    assert np.allclose(curve.get_xdata(), fpr) and np.allclose(curve.get_ydata(), tpr)
    assert curve.get_label() == f"videos (AUC {metrics.evaluate(predictions, 0.5)['auc']:.3f})"
    single = plots.video_roc(predictions[predictions["label"] == "FAKE"])
    assert len(single.axes[0].lines) == 1 and "AUC undefined" in single.axes[0].texts[0].get_text()


def test_confusion_and_timeline_figures_show_the_counts_and_every_track(predictions, tmp_path):
    confusion = plots.video_confusion(metrics.evaluate(predictions, 0.5)["confusion"])
    assert [text.get_text() for text in confusion.axes[0].texts] == ["1", "1", "0", "3"]
    faces = pd.DataFrame({"video": "d.mp4", "frame": list(range(12)) * 2, "track": [0] * 12 + [1] * 12,
                          "score": np.r_[np.linspace(0.6, 0.8, 12), np.full(12, 0.2)]})
    wrong = evaluation.confidently_wrong(predictions, n=2, threshold=0.5).assign(track=0)
    crops = {"d.mp4": [(0, np.zeros((160, 160, 3), dtype=np.uint8)), (11, np.full((160, 160, 3), 255, np.uint8))]}
    timelines = plots.frame_score_timelines(wrong, faces, crops, threshold=0.5)
    track_lines = [line for line in timelines.axes[0].lines if line.get_label().startswith("track")]
    assert [line.get_label() for line in track_lines] == ["track 0", "track 1"]
    assert timelines.axes[1].images[0].get_array().shape == (160, 320, 3)  # two crops side by side
    saved = evaluation.save_figures({"timelines": timelines}, tmp_path / "figures")
    import matplotlib.image

    assert matplotlib.image.imread(saved[0]).shape[1] > 600


def test_training_curves_draw_a_panel_per_metric_and_say_when_no_epoch_was_trained():
    history = pd.DataFrame({"epoch": [1, 2], "loss": [0.7, 0.5], "val_loss": [0.8, 0.6], "auc": [0.6, 0.8]})
    assert len(plots.training_curves(history, best_epoch=2).axes) == 2
    calibrated_only = plots.training_curves(pd.DataFrame(columns=["epoch"]), best_epoch=0)  # train.epochs 0
    assert [text.get_text() for text in calibrated_only.axes[0].texts] == ["no epochs trained"]
