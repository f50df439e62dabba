"""Each chapter's full-profile peak memory and wall time, estimated from its config.

::

    print(iu.estimates.estimate_peak_memory(iu.get_config("full"), 8))   # device and host bytes
    print(iu.estimates.estimate_time(8))                                # T4-class GPU and 2 CPU cores

Models, not measurements: the memory model sums the tensors each chapter holds and the largest
pass it runs; the time model adds the FLOPs the full profile's config implies to the measured
quick-profile time. The status page and the full profile's CPU warning read them until a real full
run is recorded. Measuring a block of code is :mod:`influence_utils.resources`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .resources import format_mb, format_seconds

__all__ = ["MemoryEstimate", "estimate_peak_memory", "HOST_BASELINE", "TimeEstimate", "estimate_time",
           "QUICK_SECONDS", "CPU_FLOPS", "T4_FLOPS", "T4_SPEEDUP", "runs_on_device"]


#: Host memory of the Python process before any chapter tensor (the interpreter with PyTorch,
#: transformers, pandas and matplotlib imported, about 1 GB measured on the CPU, plus a CUDA
#: context's host side).
HOST_BASELINE = 2 * 2**30
#: Input features, classes and image side of the data sets the chapters use.
_DATA = {"digits": (64, 10, 8), "mnist5k": (784, 10, 28), "cifar10": (3072, 10, 32),
         "rotten_tomatoes": (0, 2, 0), "sst2": (0, 2, 0)}


@dataclass(frozen=True)
class MemoryEstimate:
    """A chapter's estimated peak memory (see :func:`estimate_peak_memory`).

    Attributes:
        chapter: ``"ch1"`` … ``"ch9"``.
        device_bytes: peak bytes of the tensors on the compute device (the GPU in the full profile).
        host_bytes: peak bytes of the process on the host (:data:`HOST_BASELINE` included).
        dominant: the largest term, by name.
        terms: every term, name -> (device bytes, host bytes).
    """

    chapter: str
    device_bytes: int
    host_bytes: int
    dominant: str
    terms: dict

    def __str__(self) -> str:
        return (f"{self.chapter}: {format_mb(self.device_bytes / 2**20)} device, "
                f"{format_mb(self.host_bytes / 2**20)} host (largest term: {self.dominant})")


def _mlp_p(d: int, hidden: int, classes: int) -> int:
    out = 1 if classes == 2 else classes
    return d * hidden + hidden + hidden * out + out if hidden else d * out + out


def _resnet_p(depth: int, width: int, channels: int, classes: int) -> int:
    from .models import ResNet, count_parameters

    with torch.device("meta"):
        return count_parameters(ResNet(depth=depth, in_channels=channels, n_classes=classes, width=width),
                                trainable_only=False)


def _task_sizes(task: Any) -> dict:
    """θ's size p, forward FLOPs and activation floats per example of a top-layer task, and its trunk features."""
    from .checkpoints import parameter_counts

    d, classes, side = _DATA[task.dataset]
    p, total = parameter_counts(task, classes)
    if task.model in ("minilm", "bert-base"):
        hidden = 384 if task.model == "minilm" else 768
        L = task.max_length
        layer_flops = 2 * p * L + 4 * L * L * hidden  # dense layers, then attention scores and mixing
        act = L * 14 * hidden + 2 * 12 * L * L  # saved activations of one encoder layer
        return {"p": p, "flops": layer_flops, "act": act, "features": L * hidden + L,
                "whole_flops": 2 * total * L}
    spatial = max(1, (side // 8) ** 2)  # the top block runs at the last stage's resolution
    whole = 2 * total * (side * side) // 6  # the whole network: its stages at falling resolution
    return {"p": p, "flops": 2 * p * spatial, "act": 6 * 8 * task.width * spatial,
            "features": 8 * task.width * spatial, "whole_flops": whole}


def _terms(cfg: Any, chapter: str) -> tuple[dict, dict]:
    """Memory terms ``name -> (device, host)`` bytes, and work ``name -> FLOPs`` of one chapter."""
    mem: dict[str, tuple[float, float]] = {}
    work: dict[str, float] = {}
    if chapter in ("ch7", "ch8"):
        for name, task in (("text", cfg.ch7.bert), ("image", cfg.ch7.resnet)):
            _checkpoint_terms(cfg, chapter, name, task, mem, work)
    else:
        _small_model_terms(getattr(cfg, chapter), chapter, mem, work)
    return mem, work


_F32, _F64 = 4, 8


def _small_model_terms(c: Any, chapter: str, mem: dict, work: dict) -> None:
    """Chapters 1–6 and 9: float64 MLPs (or logistic regression) with exact Hessians; chapter 3's ResNet."""
    task = getattr(c, "mlp", c)  # chapters 4-6 hold an MLPTask; the others their own sizes
    d, classes, side = _DATA[task.dataset]
    binary = getattr(c, "classes", None) is not None and chapter in ("ch1", "ch9")
    k = 2 if binary else classes
    hidden = 0 if chapter == "ch1" else c.mlp_hidden if chapter == "ch9" else getattr(task, "hidden", 0)
    p = _mlp_p(d, hidden, k)
    n = task.n_train
    mem["data"] = (n * d * _F64 * 2, n * d * _F64 * 2)
    mem["exact Hessian and its eigendecomposition (3 p²)"] = (3 * p * p * _F64, 0)
    mem["per-example gradients n × p"] = (n * p * _F64, 0)
    work["exact Hessian (n p² + p³)"] = n * p * p * 2 + 4 * p**3
    schedule = getattr(task, "train", getattr(c, "mlp_train", None))  # chapter 1: no SGD training
    steps = (schedule.steps if schedule else 0) + (getattr(c, "steps", 0) if task is not c else 0)  # ch5: + paired runs
    batch = (schedule.batch_size if schedule else None) or n
    runs = 1 + getattr(c, "n_removed", 0) + getattr(c, "n_perturbed", 0) * len(getattr(c, "eps_multiples", (1,)))
    runs *= 1 + 2 * getattr(c, "n_seeds", 0) + getattr(c, "n_orders", 0)
    work["training runs (vectorised)"] = runs * steps * batch * 6 * p
    mem["vectorised runs (θ, gradient, update per run; chunks of 64)"] = (min(runs, 64) * 3 * p * _F64, 0)
    if chapter in ("ch1", "ch6"):
        q = d + 1  # Newton runs are on logistic regression (chapter 6: its convex exercise)
        runs_newton = c.n_removed if chapter == "ch1" else len(c.eps_multiples)
        work["Newton leave-one-out / ε runs (10 iterations)"] = runs_newton * 10 * (n * q * q * 2 + q**3)
        mem["Newton runs (a Hessian per run; chunks of 64)"] = (min(runs_newton, 64) * q * q * _F64, 0)
    if chapter == "ch2":
        work["proximal responses (Newton, one factorisation per damping)"] = len(c.dampings) * (
            p**3 + c.newton_iters * n * 6 * p)
    if chapter == "ch3":
        work["LiSSA grid"] = (len(c.lissa_scale_factors) * len(c.lissa_damping_factors) * sum(c.lissa_depths)
                              * c.n_rhs * n * 12 * p)
        work["ABIF rank sweep and Arnoldi"] = (c.n_seeds * sum(c.abif_ranks) * c.abif_iterations_factor
                                               + c.arnoldi_iterations) * n * 12 * p
        _chapter3_resnet_terms(c, mem, work)


def _chapter3_resnet_terms(c: Any, mem: dict, work: dict) -> None:
    rp = _resnet_p(c.resnet_depth, c.resnet_width, 1, 10)
    pix = c.resnet_image_size**2
    rflops = 2 * rp * pix // 6
    ract = 4 * c.resnet_depth * c.resnet_width * pix  # saved maps of one example, first stage dominates
    mem["ResNet per-example gradients n × p (g_train)"] = (c.resnet_n_train * rp * _F32, 0)
    mem["ResNet per-example gradient chunk (512 examples' activations, ×2)"] = (512 * ract * _F32 * 2, 0)
    mem["ResNet Arnoldi basis"] = (c.resnet_arnoldi_iterations * rp * _F32, 0)
    work["ResNet training"] = c.resnet_train.steps * c.resnet_train.batch_size * 3 * rflops
    work["ResNet HVPs (Arnoldi, CG, LiSSA)"] = (c.resnet_arnoldi_iterations + 2 * c.resnet_n_test * (
        c.resnet_cg_iter + c.resnet_lissa_depth)) * c.resnet_hvp_examples * 6 * rflops
    work["ResNet per-example gradients"] = (c.resnet_n_train + c.resnet_n_test) * 3 * rflops


def _checkpoint_terms(cfg: Any, chapter: str, name: str, task: Any, mem: dict, work: dict) -> None:
    """Chapters 7 and 8, one of their two top-layer checkpoints (``name`` "text" or "image")."""
    c7, c8 = cfg.ch7, cfg.ch8
    c = c7 if chapter == "ch7" else c8
    s = _task_sizes(task)
    p, F, act = s["p"], s["flops"], s["act"]
    n_all = task.n_train + (task.n_test if chapter == "ch7" else c8.n_pool_text if name == "text" else c8.n_pool_image)
    feats = n_all * s["features"] * _F32
    mem[f"{name}: trunk features"] = (feats, feats)
    mem[f"{name}: θ, its gradient and optimizer state"] = (4 * p * _F32, p * _F32)
    mem[f"{name}: Arnoldi basis"] = (c.arnoldi_iterations * p * _F32, 0)
    mem[f"{name}: eigenvectors kept"] = (c.arnoldi_rank * p * _F32, 0)
    work[f"{name}: checkpoint (pretraining, trunk, top-layer steps)"] = (
        task.pretrain_epochs * task.n_train * 3 * s["whole_flops"] + n_all * s["whole_flops"]
        + task.steps * task.batch_size * 3 * F)
    work[f"{name}: Arnoldi HVPs"] = c.arnoldi_iterations * c.hessian_examples * 6 * F
    mem[f"{name}: per-example gradient chunk"] = (c7.grad_chunk * (p * _F32 * 3 + act * _F32 * 2), 0)
    if chapter == "ch7":
        runs = c7.n_z + 1
        steps = int(c7.horizon_epochs * task.n_train / task.batch_size)
        mem[f"{name}: paired runs (θ, gradient, update per run)"] = (runs * 3 * p * _F32 + runs * task.batch_size * act * _F32 * 2, 0)
        mem[f"{name}: query gradients n_queries × p"] = (c7.n_queries * p * _F32, 0)
        work[f"{name}: paired and control runs"] = (runs + c7.control_seeds) * steps * task.batch_size * 3 * F
        work[f"{name}: per-example gradients (estimators)"] = (c7.n_z + c7.n_queries) * (2 + c7.record_points) * 3 * F
        if name == "text":
            sweep_steps = int(c7.sweep_epochs * task.n_train / task.batch_size)
            work["text: step-size sweep"] = len(c7.sweep_eta_lambda) * (c7.sweep_n_z + 1) * sweep_steps * task.batch_size * 3 * F
        return
    n_runs = (len(c8.methods) + c8.random_draws + 1) * len(c8.ks) * c8.n_wrong
    s_max = max(c8.steps)
    mem[f"{name}: mis-predicted examples' gradients n_wrong × p"] = (c8.n_wrong * p * _F32, 0)
    mem[f"{name}: correction runs (16 vectorised, held-out evaluated 256 at a time)"] = (
        16 * (3 * p * _F32 + max(c8.ks) * act * _F32 * 2 + 256 * act // 7 * _F32), 0)
    mem[f"{name}: scores n_wrong × n_train per method"] = (0, len(c8.methods) * c8.n_wrong * task.n_train * _F32)
    work[f"{name}: scoring pass over the training set"] = task.n_train * 3 * F
    work[f"{name}: correction runs"] = n_runs * (s_max * sum(c8.ks) / len(c8.ks) * 3 * F
                                                + len(c8.steps) * c8.n_heldout * F)
    epoch = max(1, int(c8.removal_epochs * task.n_train / task.batch_size))
    work[f"{name}: remove-and-retrain runs"] = (len(c8.ks) * c8.n_wrong + 1) * (
        sum(c8.steps) + epoch) * task.batch_size * 3 * F
    work[f"{name}: horizon study"] = c8.n_wrong * max(c8.horizon_steps) * c8.horizon_k * 3 * F


def _chapter(chapter: str) -> str:
    key = str(chapter).lower().removeprefix("ch").lstrip("0")
    if key not in {str(i) for i in range(1, 10)}:
        raise ValueError(f"unknown chapter {chapter!r}; pass 'ch1' … 'ch9' (or 1 … 9)")
    return f"ch{key}"


def estimate_peak_memory(cfg: Any, chapter: Any) -> MemoryEstimate:
    """A chapter's peak device and host memory, estimated from its config with no computation.

    What it counts: the tensors whose size the config sets — data and trunk features, θ with its
    gradient and optimizer state, exact Hessians (3 p² for the eigendecomposition's workspace),
    stored per-example-gradient matrices, one chunk of per-example gradients (p numbers ×
    :data:`~influence_utils.scores.GRADIENT_COPIES` and the saved activations), Arnoldi bases,
    vectorised runs (θ, gradient and update per run, with the activations of their batches).
    The terms that live for the whole chapter are summed; of the passes that come and go, the
    largest is added. θ's size p comes from
    :func:`~influence_utils.checkpoints.parameter_counts` for chapters 7 and 8 (no download).
    What it does not count: PyTorch's caching-allocator slack, library workspaces, temporaries
    inside a kernel, and Python objects beyond :data:`HOST_BASELINE`. It is a model to catch a
    design that cannot fit (an ``n × p`` matrix of ResNet-18's θ: 189 GB), not a measurement;
    :func:`~influence_utils.resources.measure` measures.

    Args:
        cfg: a :class:`~influence_utils.config.Config` (e.g. ``get_config("full")``).
        chapter: ``"ch1"`` … ``"ch9"`` or 1 … 9.

    Returns:
        A :class:`MemoryEstimate`.
    """
    ch = _chapter(chapter)
    mem, _ = _terms(cfg, ch)
    return _combine(ch, mem)


def _combine(ch: str, mem: dict) -> MemoryEstimate:
    resident = {k: v for k, v in mem.items() if any(w in k for w in ("data", "features", "θ, its", "scores", "kept"))}
    passes = {k: v for k, v in mem.items() if k not in resident}
    dev = sum(v[0] for v in resident.values()) + max([v[0] for v in passes.values()], default=0)
    host = HOST_BASELINE + sum(v[1] for v in resident.values()) + max([v[1] for v in passes.values()], default=0)
    dominant = max(mem, key=lambda k: max(mem[k]))
    return MemoryEstimate(ch, int(dev), int(host), dominant, {k: (int(a), int(b)) for k, (a, b) in mem.items()})


#: Wall-clock seconds of each chapter's last recorded quick-profile run (``make notebooks``) on the
#: reference machine, 2 cores of an AMD EPYC without a GPU (the execution records in the notebooks'
#: metadata; ``tests/test_memory.py`` checks this table against them).
QUICK_SECONDS = {"ch1": 16.9, "ch2": 44.9, "ch3": 35.9, "ch4": 17.9, "ch5": 45.7, "ch6": 21.5, "ch7": 218.9,
                 "ch8": 297.0, "ch9": 17.8}
#: Sustained FLOP/s of the reference CPU on this work. A 2048 × 2048 float32 matmul measured 37
#: GFLOP/s on its 2 cores (``torch.randn(2048, 2048) @ torch.randn(2048, 2048)``, shared machine),
#: halved for the smaller kernels of the chapters.
CPU_FLOPS = 20e9
#: Sustained FLOP/s assumed for a T4-class GPU, a quarter of the T4's float32 peak of 8.1 TFLOP/s
#: (NVIDIA's T4 datasheet). An assumption, not a measurement, until a full run is recorded.
T4_FLOPS = 2e12
#: The T4's assumed advantage over the reference CPU on FLOP-bound work (:data:`T4_FLOPS` /
#: :data:`CPU_FLOPS`).
T4_SPEEDUP = T4_FLOPS / CPU_FLOPS


@dataclass(frozen=True)
class TimeEstimate:
    """A chapter's estimated full-profile wall time (see :func:`estimate_time`).

    Attributes:
        chapter: ``"ch1"`` … ``"ch9"``.
        cpu_seconds: on the reference CPU (2 cores).
        gpu_seconds: on a T4-class GPU.
        flops: the floating-point operations counted from the config.
        dominant: the term with the most FLOPs in the full profile.
    """

    chapter: str
    cpu_seconds: float
    gpu_seconds: float
    flops: float
    dominant: str

    def __str__(self) -> str:
        return (f"{self.chapter}: ~{format_seconds(self.gpu_seconds)} on a T4-class GPU, "
                f"~{format_seconds(self.cpu_seconds)} on 2 CPU cores (most work: {self.dominant})")


def estimate_time(chapter: Any, cfg: Any = None) -> TimeEstimate:
    """A chapter's full-profile time: its measured quick-profile time plus the FLOPs the full profile adds.

    ``QUICK_SECONDS + FLOPs(cfg) / rate``, with rate :data:`CPU_FLOPS` on the reference CPU and
    :data:`T4_FLOPS` on a T4-class GPU for the work that runs on the device
    (:func:`runs_on_device`; the rest of a GPU runtime's work is counted at the CPU rate). The quick run's measured time stands for the per-call
    overhead (Python, kernel launches, plots), which a larger profile does not shrink; the FLOPs
    are counted from the config by the model of :func:`estimate_peak_memory` (training steps,
    HVPs, per-example gradients, exact Hessians, vectorised runs, checkpoints for chapters 7 and
    8). A rough model: expect a factor of two either way.

    Args:
        chapter: ``"ch1"`` … ``"ch9"`` or 1 … 9.
        cfg: the profile to estimate (default: ``get_config("full")``).
    """
    from .config import get_config

    ch = _chapter(chapter)
    cfg = get_config("full") if cfg is None else cfg
    work = _terms(cfg, ch)[1]
    flops = sum(work.values())
    on_gpu = sum(f for term, f in work.items() if runs_on_device(ch, term))
    return TimeEstimate(ch, QUICK_SECONDS[ch] + flops / CPU_FLOPS,
                        QUICK_SECONDS[ch] + on_gpu / T4_FLOPS + (flops - on_gpu) / CPU_FLOPS,
                        flops, max(work, key=work.get))


def runs_on_device(chapter: Any, term: str = "") -> bool:
    """Whether a chapter's work (or one term of :func:`estimate_time`'s model) runs on ``cfg.device``.

    Chapters 7 and 8 (BERT and ResNet-18 checkpoints) and chapter 3's ResNet put their models and
    tensors on ``cfg.device``, the GPU when there is one; the other chapters' models are small
    float64 networks with exact Hessians (p of at most about 13,000), which run on the CPU in both
    profiles, so on a GPU runtime their time is the CPU's.
    """
    ch = _chapter(chapter)
    return ch in ("ch7", "ch8") or (ch == "ch3" and term.startswith("ResNet"))
