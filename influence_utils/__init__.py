"""influence_utils: influence functions in PyTorch, and the tools of the book
*What Influence Functions Do*.

Sign convention, stated once: every score ``scores[i, j]`` (query dimension first) estimates
``loss(test_i; θ without train_j) − loss(test_i; θ)``, i.e. ``(1/n) ∇ℓ(test_i)ᵀ H⁻¹ ∇ℓ(train_j)``
for classical influence. Positive: train_j helps test_i.

Quick start::

    import influence_utils as iu
    obj = iu.Objective(model, iu.per_example_cross_entropy, weight_decay=1e-3)
    theta = obj.theta()
    solver = iu.ArnoldiSolver(rank=50, iterations=200).fit(obj, theta, train)
    scores = iu.influence(obj, theta, solver, train=train, test=test)   # [n_test, n_train]
"""

from . import (
    batching,
    cache,
    checkpoints,
    config,
    correction,
    curvature,
    data,
    diagnostics,
    divergence,
    estimates,
    explore,
    fading,
    models,
    objective,
    perturbation,
    plotting,
    resources,
    runs,
    scores,
    solver_study,
    solvers,
    standin,
    stats,
    training,
    trunk,
    utils,
)
from .cache import CacheMismatchError, cached
from .config import Config, FullProfileOnCPUWarning, get_config
from .curvature import SpectrumSummary, plot_spectrum, spectrum_summary, with_damping
from .data import load_dataset
from .diagnostics import Diagnosis, diagnose
from .divergence import (
    GrowthFit,
    GrowthModels,
    LinearResponse,
    PerturbedRuns,
    curvature_growth_rate,
    divergence_curve,
    fit_growth_models,
    fit_growth_rate,
    fixed_curvature_response,
    linear_response,
    perturbed_runs,
    tracin_vs_steps,
)
from .fading import FadingStudy, fading_study, log_steps
from .objective import (
    Objective,
    per_example_cross_entropy,
    per_example_squared_error,
    predict_labels,
)
from .perturbation import (
    Sweep,
    epsilon_sweep,
    group_removal,
    group_scores,
    linearized_removal,
    weighted_runs,
)
from .runs import SGD
from .scores import (
    gradient_cosine,
    gradient_dot,
    influence,
    self_influence,
    time_bounded_coefficients,
    time_bounded_influence,
    tracin,
)
from .solvers import (
    ArnoldiSolver,
    CGSolver,
    ConvergenceWarning,
    ExactSolver,
    FewerEigenpairsWarning,
    LissaDivergenceError,
    LissaSolver,
)
from .training import (
    Trajectory,
    loss_changes,
    minimize_newton,
    paired_runs,
    retrain_without,
    train,
)
from .utils import pearson, seed_everything, spearman

# Everything imported above: the names a reader uses every day, and every module as iu.<module>.
__all__ = sorted(name for name in dir() if not name.startswith("_"))

__version__ = "0.1.0"
