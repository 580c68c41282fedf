"""dfhelpers.plots: figures whose layout a reader depends on."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from dfhelpers import plots  # noqa: E402


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
