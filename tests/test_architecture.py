"""The package's shape: import layers, no private names across modules, and ``__all__`` lists that
match what the modules define (see STYLE.md). Static checks on the source (``ast``); nothing runs."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import influence_utils as iu

PACKAGE = Path(iu.__file__).resolve().parent

#: Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS = {
    # the kit: no influence logic; data, models, plots, statistics, measurement
    "kit": {"utils", "stats", "plotting", "explore", "data", "models", "standin", "trunk", "resources"},
    # the core: the objective, its curvature solvers and the scores
    "core": {"batching", "objective", "solvers", "scores"},
    # ground truth: training runs, retraining and perturbed runs
    "ground truth": {"runs", "training", "perturbation", "divergence"},
    # studies: what the chapters measure with the core and the ground truth
    "studies": {"fading", "correction", "solver_study", "diagnostics", "curvature"},
    # the book: profiles, caching, chapter checkpoints and estimates
    "book": {"config", "cache", "checkpoints", "estimates"},
}
RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{module}.py").read_text(), filename=f"{module}.py")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _relative_imports(module: str):
    """``(imported module, [names], line)`` for every ``from . import x`` / ``from .x import y``,
    at the top of the module or inside a function."""
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:  # from . import x, y: modules (or the package's own names)
                for alias in node.names:
                    yield alias.name, [], node.lineno
            else:
                yield node.module.split(".")[0], [a.name for a in node.names], node.lineno


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if m not in RANK]
    assert not missing, f"assign {missing} to a layer in LAYERS (and STYLE.md)"
    assert not set(RANK) - set(MODULES), f"LAYERS names modules that do not exist: {set(RANK) - set(MODULES)}"


@pytest.mark.parametrize("module", MODULES)
def test_no_module_imports_a_layer_above_it(module):
    above = [(target, line) for target, _, line in _relative_imports(module)
             if target in RANK and RANK[target] > RANK[module]]
    layer = next(k for k, v in LAYERS.items() if module in v)
    assert not above, f"{module} ({layer}) imports a higher layer: " + ", ".join(
        f"{t} ({next(k for k, v in LAYERS.items() if t in v)}, line {line})" for t, line in above)


@pytest.mark.parametrize("module", MODULES)
def test_no_private_name_crosses_a_module(module):
    """Neither ``from .x import _y`` nor ``x._y`` / ``obj._y`` on anything but ``self`` and ``cls``:
    what another module uses is public (listed in ``__all__`` or not)."""
    imported = [f"{target}.{name} (line {line})" for target, names, line in _relative_imports(module)
                for name in names if _private(name)]
    reached = [f"{node.value.id}.{node.attr} (line {node.lineno})" for node in ast.walk(_tree(module))
               if isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
               and node.value.id not in ("self", "cls")]
    assert not imported + reached, f"{module} uses private names of other modules: {imported + reached}"


@pytest.mark.parametrize("module", MODULES)
def test_every_module_lists_its_public_api(module):
    mod = importlib.import_module(f"influence_utils.{module}")
    names = getattr(mod, "__all__", None)
    assert isinstance(names, list) and names, f"influence_utils.{module} has no __all__"
    assert len(names) == len(set(names)), f"{module}.__all__ repeats a name"
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ lists names it does not define: {missing}"
    assert not [n for n in names if _private(n)], f"{module}.__all__ lists private names"


def test_the_package_exports_only_what_its_modules_list():
    """Every name of ``iu.__all__`` is a module or the same object as a name in one module's
    ``__all__``; every module is reachable as ``iu.<module>``."""
    listed = {}
    for module in MODULES:
        mod = importlib.import_module(f"influence_utils.{module}")
        for name in mod.__all__:
            listed.setdefault(name, getattr(mod, name))
    assert len(iu.__all__) == len(set(iu.__all__))
    stray = [n for n in iu.__all__ if n not in MODULES and (n not in listed or getattr(iu, n) is not listed[n])]
    assert not stray, f"iu.__all__ exports names no module lists in its __all__: {stray}"
    unlisted_modules = [m for m in MODULES if m not in iu.__all__]
    assert not unlisted_modules, f"modules missing from iu.__all__: {unlisted_modules}"
