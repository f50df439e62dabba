"""Measure wall time and peak memory of a block of code, for a chapter's status cell.

::

    with iu.resources.measure("MiniLM") as m:
        ...
    print(m)            # "MiniLM: 812 MB peak, 41.2 s"

Peak memory is the peak resident set size of the process (what the operating system had to
provide, tensors included; Python's ``tracemalloc`` does not see tensor storage). On Linux the
peak is reset at the start of the block (``/proc/self/clear_refs``), so it is the peak *within*
the block; where that is not possible it is the peak since the process started, and
``Measurement.since_start`` says so. When the block computes on a GPU (``device="cuda"``, or by
default whenever CUDA is initialised) the peak of the GPU memory PyTorch allocated within the block
(``torch.cuda.max_memory_allocated``, reset at the start) is reported too, as ``gpu_peak_mb``. Times and sizes are formatted as strings with a unit,
so that printed outputs stay comparable between runs.
"""

from __future__ import annotations

import contextlib
import math
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Measurement", "measure", "peak_memory_mb", "format_mb", "format_seconds"]


def format_mb(mb: float) -> str:
    """``"123 MB"`` (or ``"1.2 GB"`` from 10 GB up)."""
    return f"{mb / 1024:.1f} GB" if mb >= 10240 else f"{mb:.0f} MB"


def format_seconds(seconds: float) -> str:
    """A duration as a string with a unit: ``"4.2 ms"``, ``"0.81 s"``, ``"12.3 s"``, ``"2.1 min"``.

    Raises:
        ValueError: for a negative or non-finite duration.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds must be a finite non-negative number, got {seconds}")
    if seconds < 0.1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb() -> float:
    """Peak resident set size of this process in MB (since the last reset on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB elsewhere


@dataclass
class Measurement:
    """Wall time and peak memory of one measured block.

    Attributes:
        label: what was measured.
        seconds: wall-clock duration.
        peak_mb: peak resident memory in MB during the block (see ``since_start``).
        since_start: True when the peak could not be reset and covers the whole process.
        gpu_peak_mb: peak GPU memory PyTorch allocated during the block, in MB (``None`` when the
            block did not run on a GPU).
    """

    label: str = ""
    seconds: float = 0.0
    peak_mb: float = 0.0
    since_start: bool = False
    gpu_peak_mb: float | None = None

    @property
    def time(self) -> str:
        """The duration as a string with a unit, e.g. ``"4.2 s"``."""
        return format_seconds(self.seconds)

    @property
    def memory(self) -> str:
        """The peak memory as a string with a unit, e.g. ``"812 MB"``."""
        return format_mb(self.peak_mb)

    @property
    def gpu_memory(self) -> str | None:
        """The GPU peak as a string with a unit, e.g. ``"3.1 GB"`` (``None`` off the GPU)."""
        return None if self.gpu_peak_mb is None else format_mb(self.gpu_peak_mb)

    def __str__(self) -> str:
        peak = "peak since start" if self.since_start else "peak"
        head = f"{self.label}: " if self.label else ""
        gpu = "" if self.gpu_peak_mb is None else f" (host), {self.gpu_memory} GPU peak"
        return f"{head}{self.memory} {peak}{gpu}, {self.time}"


def _cuda_device(device: Any) -> torch.device | None:
    """The CUDA device a block runs on, or ``None`` (CPU, or CUDA never initialised)."""
    if device is None:
        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            return None
        return torch.device("cuda", torch.cuda.current_device())
    device = torch.device(device)
    return device if device.type == "cuda" else None


@contextlib.contextmanager
def measure(label: str = "", device: Any = None) -> Iterator[Measurement]:
    """Measure the wall time and peak memory (host, and GPU when on one) of the ``with`` block.

    Args:
        label: what is measured (printed first).
        device: where the block computes, e.g. ``cfg.device``. On a CUDA device the peak of
            ``torch.cuda.max_memory_allocated`` within the block is recorded too (its counter is
            reset at the start). ``None``: the current CUDA device if CUDA is initialised, else
            the host only.

    Yields:
        A :class:`Measurement`, filled in when the block ends.
    """
    cuda = _cuda_device(device)
    m = Measurement(label=label, since_start=not _reset_peak())
    if cuda is not None:
        torch.cuda.synchronize(cuda)
        torch.cuda.reset_peak_memory_stats(cuda)
    start = time.perf_counter()
    try:
        yield m
    finally:
        if cuda is not None:
            torch.cuda.synchronize(cuda)  # the block's kernels are done: its time and its peak
        m.seconds = time.perf_counter() - start
        m.peak_mb = peak_memory_mb()
        if cuda is not None:
            m.gpu_peak_mb = torch.cuda.max_memory_allocated(cuda) / 2**20
