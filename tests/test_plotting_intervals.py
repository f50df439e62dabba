"""The interval plots of influence_utils.plotting: what they draw, and where."""

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from influence_utils import plotting as pl  # noqa: E402


def test_importing_the_package_does_not_import_seaborn():
    code = ("import sys, influence_utils, influence_utils.plotting, influence_utils.stats; "
            "print('seaborn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_band_draws_line_and_interval():
    fig, ax = plt.subplots()
    x, est = np.array([4.0, 1.0, 2.0, 8.0]), np.array([0.5, 0.2, 0.4, 0.6])
    low, high = est - np.array([0.1, 0.3, 0.05, 0.2]), est + 0.15
    assert pl.band(ax, x, est, low, high, label="Pearson") is ax
    assert len(ax.lines) == 1 and len(ax.collections) == 1
    np.testing.assert_array_equal(ax.lines[0].get_xydata(), np.c_[np.sort(x), est[np.argsort(x)]])
    ylow, yhigh = ax.get_ylim()
    assert ylow <= low.min() and yhigh >= high.max()
    band_box = ax.collections[0].get_paths()[0].get_extents()
    assert (band_box.y0, band_box.y1) == pytest.approx((low.min(), high.max()))
    assert ax.get_legend_handles_labels()[1] == ["Pearson"]
    with pytest.raises(ValueError, match="one length"):
        pl.band(ax, x, est, low[:2], high)
    plt.close(fig)


@pytest.mark.parametrize("horizontal", [False, True])
def test_pointrange_whiskers_sit_on_the_points(horizontal):
    frame = pd.DataFrame({
        "method": ["abif", "tracin", "random"] * 2,
        "k": [1, 1, 1, 5, 5, 5],
        "rate": [0.6, 0.4, 0.1, 0.8, 0.5, 0.2],
    })
    frame["low"], frame["high"] = frame["rate"] - 0.1, frame["rate"] + 0.05
    fig, ax = plt.subplots()
    out = pl.pointrange(ax, frame, x="method", y="rate", low="low", high="high", hue="k",
                        dodge=0.3, horizontal=horizontal)
    assert out is ax
    points = [line for line in ax.lines if len(line.get_xydata())]
    assert len(points) == 2 and len(ax.collections) == 2  # one marker line and one whisker set per k
    for line, whiskers, k in zip(points, ax.collections, (1, 5)):
        rows = frame[frame["k"] == k]
        xy = line.get_xydata()
        pos, val = (xy[:, 1], xy[:, 0]) if horizontal else (xy[:, 0], xy[:, 1])
        np.testing.assert_allclose(val, rows["rate"])
        np.testing.assert_allclose(pos, np.arange(3) + (-0.15 if k == 1 else 0.15))
        segments = np.array(whiskers.get_segments())  # [3, 2 ends, (x, y)]
        axis = 1 if horizontal else 0
        np.testing.assert_allclose(segments[:, 0, axis], pos)
        np.testing.assert_allclose(segments[:, :, 1 - axis], rows[["low", "high"]].to_numpy())
        np.testing.assert_allclose(whiskers.get_colors()[0][:3], matplotlib.colors.to_rgb(line.get_color()))
    plt.close(fig)


def test_pointrange_without_hue_and_errors():
    frame = pd.DataFrame({"T": [10, 100, 1000], "r": [0.3, 0.5, 0.7], "lo": [0.2, 0.4, 0.65], "hi": [0.4, 0.6, 0.8]})
    fig, ax = plt.subplots()
    pl.pointrange(ax, frame, x="T", y="r", low="lo", high="hi")
    assert len(ax.collections) == 1
    np.testing.assert_allclose(np.array(ax.collections[0].get_segments())[:, 0, 0], [0, 1, 2])
    with pytest.raises(ValueError, match="no column"):
        pl.pointrange(ax, frame, x="T", y="r", low="lo", high="upper")
    with pytest.raises(ValueError, match="one row per"):
        pl.pointrange(ax, pd.concat([frame, frame]), x="T", y="r", low="lo", high="hi")
    plt.close(fig)
