"""One plotting style for the whole book, and the figures chapters share.

Chapters draw through these functions and hand the figure to :func:`glue_figure`; the Markdown
cell that follows places it with a caption::

    ```{glue:figure} fig-if-vs-loo
    :name: fig-if-vs-loo

    Predicted vs actual change in test loss ...
    ```

:func:`glue` stores numbers for the prose (``{glue:text}`name:.3f```). Both fall back to a plain
display when ``myst_nb`` is not installed (e.g. on Colab), so notebooks run anywhere.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from .utils import as_numpy, pearson, spearman

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "use_style", "new_figure", "scatter_predicted_actual", "band", "pointrange", "glue", "glue_many", "glue_figure",
    "COLORS",
]

COLORS = {
    "if": "#1f5fa8",  # classical influence
    "tbif": "#2a9d8f",  # time-bounded influence
    "tracin": "#e07a1f",  # TracIn
    "truth": "#333333",  # retraining ground truth
    "accent": "#c0392b",
}

_STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "figure.figsize": (5.0, 3.6),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "svg.hashsalt": "influence-utils",  # stable SVG ids
}


def use_style() -> None:
    """Apply the book's matplotlib style (idempotent)."""
    matplotlib.rcParams.update(_STYLE)


def new_figure(ncols: int = 1, nrows: int = 1, width: float | None = None, height: float | None = None):
    """A figure with the book style: ``(fig, axes)`` like ``plt.subplots``."""
    use_style()
    w = width or 4.6 * ncols
    h = height or 3.5 * nrows
    return plt.subplots(nrows, ncols, figsize=(w, h), squeeze=ncols * nrows == 1, layout="constrained")


def scatter_predicted_actual(
    predicted: Any,
    actual: Any,
    *,
    ax=None,
    label: str = "influence",
    color: str | None = None,
    xlabel: str = "predicted change in test loss",
    ylabel: str = "actual change in test loss",
    title: str | None = None,
):
    """Scatter of predicted vs actual effects with the diagonal y = x and the correlations.

    Returns:
        The matplotlib figure.
    """
    x, y = as_numpy(predicted), as_numpy(actual)
    fig, ax = new_figure() if ax is None else (ax.figure, ax)
    r, rho = pearson(x, y), spearman(x, y)
    ax.scatter(x, y, s=8, alpha=0.6, color=color or COLORS["if"], linewidths=0,
               label=f"{label}: Pearson {r:.3f}, Spearman {rho:.3f}")
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color=COLORS["truth"], lw=0.8, ls="--", label="y = x")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.ticklabel_format(style="sci", scilimits=(-2, 3))
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left")
    return fig


def _interval_arrays(**arrays: Any) -> dict[str, np.ndarray]:
    out = {name: as_numpy(a) for name, a in arrays.items()}
    lengths = {name: a.size for name, a in out.items()}
    if len(set(lengths.values())) != 1 or not next(iter(lengths.values())):
        raise ValueError(f"need non-empty arrays of one length, got lengths {lengths}")
    return out


def band(ax, x: Any, estimate: Any, low: Any, high: Any, *, label: str | None = None,
         color: str | None = None, marker: str | None = "o", **kw):
    """A line of point estimates with their confidence interval as a shaded band.

    Seaborn draws the line (``seaborn.lineplot`` of the estimates, one point per x, no
    aggregation); ``ax.fill_between`` shades ``[low, high]`` in the line's colour. Intervals come
    from :mod:`influence_utils.stats` (e.g. ``[iv.low for iv in intervals]``), not from seaborn.

    Args:
        ax: matplotlib axes to draw on.
        x: ``[n]`` positions (e.g. the horizon T), one per estimate.
        estimate: ``[n]`` point estimates.
        low: ``[n]`` lower ends of the intervals.
        high: ``[n]`` upper ends.
        label: legend label of the line.
        color: line and band colour; the next colour of the axes' cycle by default.
        marker: marker of the points (``None`` for a plain line).
        **kw: further arguments of ``seaborn.lineplot`` (e.g. ``linestyle``, ``linewidth``).

    Returns:
        ``ax``.
    """
    import pandas as pd
    import seaborn as sns

    data = _interval_arrays(x=x, estimate=estimate, low=low, high=high)
    if (data["low"] > data["high"]).any():
        raise ValueError("every interval needs low <= high; were low and high swapped?")
    order = np.argsort(data["x"], kind="stable")
    frame = pd.DataFrame({name: values[order] for name, values in data.items()})
    before = len(ax.lines)
    sns.lineplot(data=frame, x="x", y="estimate", ax=ax, label=label, color=color, marker=marker,
                 estimator=None, errorbar=None, **kw)
    line_color = ax.lines[before].get_color() if len(ax.lines) > before else color
    ax.fill_between(frame["x"], frame["low"], frame["high"], color=line_color, alpha=0.2, linewidth=0)
    return ax


def _levels(values: pd.Series, given: Sequence | None) -> list:
    """Category levels as seaborn orders them: as given, else sorted if numeric, else by appearance."""
    if given is not None:
        return list(given)
    import pandas as pd

    unique = pd.unique(values.dropna())
    if pd.api.types.is_numeric_dtype(values):
        return sorted(unique)
    return list(unique)


def pointrange(ax, frame, *, x: str, y: str, low: str, high: str, hue: str | None = None,
               order: Sequence | None = None, hue_order: Sequence | None = None, palette: Any = None,
               dodge: float = 0.3, horizontal: bool = False):
    """Point estimates with interval whiskers from a tidy DataFrame, one row per (x, hue).

    Seaborn draws the points (``seaborn.pointplot`` with ``errorbar=None``, no connecting lines),
    dodged by ``hue``; the whiskers are the given ``[low, high]`` columns (computed intervals,
    e.g. Wilson or bootstrap, **not** seaborn's own bootstrap), drawn with ``ax.vlines``
    (``ax.hlines`` when horizontal) at the same positions.

    Args:
        ax: matplotlib axes to draw on.
        frame: tidy ``pandas.DataFrame`` with one row per (x, hue) combination.
        x: column of the categories (e.g. method or k).
        y: column of the point estimates.
        low: column of the lower interval ends.
        high: column of the upper interval ends.
        hue: optional column splitting each category into dodged points of different colours.
        order: category order (default: sorted if numeric, else by appearance).
        hue_order: hue level order (same default).
        palette: seaborn palette name, list of colours, or dict level -> colour.
        dodge: total horizontal spread of the hue levels within a category, in category widths.
        horizontal: categories on the y axis, estimates along x.

    Returns:
        ``ax``.
    """
    import seaborn as sns

    missing = [c for c in (x, y, low, high, hue) if c is not None and c not in frame.columns]
    if missing:
        raise ValueError(f"frame has no column(s) {missing}; its columns are {list(frame.columns)}")
    keys = [x] if hue is None else [x, hue]
    if frame.duplicated(keys).any():
        raise ValueError(f"frame must have one row per {tuple(keys)}; aggregate it (with its intervals) first")
    if (frame[low] > frame[high]).any():
        raise ValueError(f"every interval needs {low} <= {high}; were the columns swapped?")
    order = _levels(frame[x], order)
    kwargs: dict[str, Any] = dict(errorbar=None, order=order, ax=ax, linestyle="none")  # seaborn >= 0.13 (the package's pin)
    if hue is None:
        levels, offsets = [None], [0.0]
        colors = [sns.color_palette(None if isinstance(palette, dict) else palette)[0]]  # None: the default
        kwargs.update(color=colors[0])
    else:
        levels = _levels(frame[hue], hue_order)
        n = len(levels)
        offsets = list(np.linspace(-dodge / 2, dodge / 2, n)) if n > 1 and dodge else [0.0] * n
        if isinstance(palette, dict):
            colors = [palette[level] for level in levels]
        else:
            colors = sns.color_palette(palette, n_colors=n)
        kwargs.update(hue=hue, hue_order=levels, palette=dict(zip(levels, colors)), dodge=dodge if n > 1 else False)
    if horizontal:
        sns.pointplot(data=frame, x=y, y=x, orient="h", **kwargs)
    else:
        sns.pointplot(data=frame, x=x, y=y, **kwargs)
    whiskers = ax.hlines if horizontal else ax.vlines
    for level, offset, color in zip(levels, offsets, colors):
        rows = frame if level is None else frame[frame[hue] == level]
        rows = rows[rows[x].isin(order)]
        if rows.empty:
            continue
        position = np.array([order.index(v) for v in rows[x]], dtype=float) + offset
        whiskers(position, rows[low].to_numpy(float), rows[high].to_numpy(float), colors=[color],
                 linewidth=1.4, zorder=1.5)
    return ax


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the prose (myst-nb ``glue``); prints it without myst-nb."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # e.g. on Colab without the book extras
        if display:
            print(f"{name} = {value}")
        return
    _glue(name, value, display=display)


def glue_many(prefix: str, **values: Any) -> None:
    """:func:`glue` each value as ``{prefix}-{key}``, in order, the key's underscores written as hyphens.

    ``glue_many("ch2", warm_steps=100, lr=0.3)`` stores ``ch2-warm-steps`` and ``ch2-lr``.
    """
    for key, value in values.items():
        glue(f"{prefix}-{key.replace('_', '-')}", value)


def glue_figure(name: str, fig) -> None:
    """Store a figure for a ``{glue:figure}`` directive (with caption) and close it.

    The figure is stored as a PNG rendered here, so it reaches the notebook whatever the
    matplotlib backend (with ``MPLBACKEND=Agg`` IPython has no image formatter for figures and
    would store only their text repr). Without myst-nb the figure is simply shown.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        plt.show()
        return
    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    _glue(name, Image(data=buffer.getvalue(), format="png"), display=False)
    plt.close(fig)

