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
from typing import Any

import matplotlib
import matplotlib.pyplot as plt

from .utils import _as_numpy, pearson, spearman

__all__ = ["use_style", "new_figure", "scatter_predicted_actual", "glue", "glue_figure", "COLORS"]

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
    x, y = _as_numpy(predicted), _as_numpy(actual)
    if ax is None:
        fig, ax = new_figure()
    else:
        fig = ax.figure
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


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the prose (myst-nb ``glue``); prints it without myst-nb."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # e.g. on Colab without the book extras
        if display:
            print(f"{name} = {value}")
        return
    _glue(name, value, display=display)


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

