"""Explorers: static figure when no one can move a slider, widgets otherwise."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

import influence_utils as iu


def _draw_factory(calls):
    def draw(a, b):
        calls.append((a, b))
        fig, ax = iu.plotting.new_figure()
        ax.plot([0, 1], [a, b])
        return fig

    return draw


def test_static_draws_once_at_defaults(monkeypatch):
    monkeypatch.setenv("IU_STATIC", "1")
    assert iu.explore.is_static()
    calls = []
    out = iu.explore.explorer(_draw_factory(calls), {"a": [1, 2, 3], "b": ["x", "y"]}, defaults={"a": 2})
    assert out is None and calls == [(2, "x")]
    plt.close("all")


def test_no_kernel_means_static(monkeypatch):
    monkeypatch.delenv("IU_STATIC", raising=False)
    assert iu.explore.is_static()  # pytest is not an IPython kernel


def test_interactive_builds_one_slider_per_control():
    pytest.importorskip("ipywidgets")
    calls = []
    ui = iu.explore.explorer(_draw_factory(calls), {"a": [1, 2, 3], "b": [0.5, 1.5]}, defaults={"b": 1.5}, static=False)
    labels = [w.description for w in ui.children if hasattr(w, "options")]
    assert labels == ["a", "b"]
    assert calls[-1] == (1, 1.5)  # drawn once at the defaults
    ui.children[0].value = 3
    assert calls[-1] == (3, 1.5)  # redrawn when a slider moves
    plt.close("all")


def test_bad_controls_are_explained():
    draw = _draw_factory([])
    with pytest.raises(ValueError, match="non-empty list"):
        iu.explore.explorer(draw, {"a": []}, static=True)
    with pytest.raises(ValueError, match="not one of its values"):
        iu.explore.explorer(draw, {"a": [1, 2], "b": [1]}, defaults={"a": 5}, static=True)
    with pytest.raises(ValueError, match="unknown controls"):
        iu.explore.explorer(draw, {"a": [1], "b": [1]}, defaults={"c": 1}, static=True)
    with pytest.raises(TypeError, match="matplotlib Figure"):
        iu.explore.explorer(lambda a: None, {"a": [1]}, static=True)
