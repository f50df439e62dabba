"""Interactive explorers that degrade to a static figure.

A chapter draws a figure from a few parameters (a damping, a step, an example index). In
Jupyter or Colab, :func:`explorer` turns those parameters into ipywidgets sliders and redraws
on change. Where no one can move a slider (the rendered book, tests, ``make book``), it draws
the figure once at the default values and stores it for a ``{glue:figure}`` directive, so the
book shows a captioned static figure of exactly what the sliders would show.

Static mode is chosen when any of these holds:

* the environment variable ``IU_STATIC`` is set to ``1`` (the Makefile sets it for every
  notebook execution, so committed outputs are static and nbval reproduces them);
* ipywidgets is not installed;
* the code is not running inside an IPython kernel (e.g. a plain script).

Example::

    def draw(damping, depth):
        fig, ax = iu.plotting.new_figure()
        ...                                  # plot for these values
        return fig

    iu.explore.explorer(
        draw,
        {"damping": [1e-3, 1e-2, 1e-1], "depth": [10, 100, 1000]},
        defaults={"damping": 1e-2},
        name="ch3-lissa-explorer",          # glued static figure
    )
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt

from . import plotting

__all__ = ["explorer", "is_static"]


def is_static() -> bool:
    """Whether explorers draw a static figure instead of widgets (see the module docstring)."""
    if os.environ.get("IU_STATIC", "").strip() not in ("", "0"):
        return True
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    return shell is None or not hasattr(shell, "kernel")


def _check(controls: Mapping[str, Sequence[Any]], defaults: Mapping[str, Any]) -> dict[str, Any]:
    if not controls:
        raise ValueError("explorer needs at least one control: {'name': [value, value, ...]}")
    values = {}
    for key, options in controls.items():
        if isinstance(options, (str, bytes)) or not isinstance(options, Sequence) or len(options) == 0:
            raise ValueError(
                f"control {key!r} must be a non-empty list of the values its slider offers, got {options!r}"
            )
        values[key] = defaults.get(key, options[0])
        if values[key] not in list(options):
            raise ValueError(f"default {values[key]!r} for control {key!r} is not one of its values {list(options)}")
    extra = set(defaults) - set(controls)
    if extra:
        raise ValueError(f"defaults given for unknown controls {sorted(extra)}; controls are {list(controls)}")
    return values


def explorer(
    draw: Callable[..., Any],
    controls: Mapping[str, Sequence[Any]],
    *,
    defaults: Mapping[str, Any] | None = None,
    name: str | None = None,
    static: bool | None = None,
):
    """Sliders over ``draw``'s keyword arguments, or one static figure.

    Args:
        draw: ``draw(**values) -> matplotlib Figure``; called with one value per control. It
            must create and return a new figure (e.g. with :func:`influence_utils.plotting.new_figure`).
        controls: control name -> the values its slider offers, in slider order (numbers,
            strings, anything with a readable ``str``).
        defaults: the starting value per control (default: each control's first value); the
            static figure is drawn at these values.
        name: glue name of the static figure, referenced by a ``{glue:figure}`` directive that
            carries the caption. None: the static figure is simply shown.
        static: force static (True) or interactive (False) mode; None decides with
            :func:`is_static`.

    Returns:
        The ipywidgets ``interactive`` object in interactive mode, else None.

    Raises:
        ValueError: for an empty control, a default that is not one of a control's values,
            or a default for a control that does not exist.
        TypeError: when ``draw`` does not return a matplotlib figure.
    """
    values = _check(controls, dict(defaults or {}))
    static = is_static() if static is None else static
    if static:
        fig = draw(**values)
        if not isinstance(fig, plt.Figure):
            raise TypeError(f"draw must return a matplotlib Figure, got {type(fig).__name__}")
        if name is None:
            plt.show()
        else:
            plotting.glue_figure(name, fig)
        return None

    import ipywidgets as widgets
    from IPython.display import display

    sliders = {
        key: widgets.SelectionSlider(
            options=[(str(v), v) for v in options],
            value=values[key],
            description=key,
            continuous_update=False,
            style={"description_width": "initial"},
        )
        for key, options in controls.items()
    }

    def show(**kwargs):
        draw(**kwargs)
        plt.show()

    ui = widgets.interactive(show, **sliders)
    display(ui)
    return ui
