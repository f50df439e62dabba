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
import os
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Measurement", "measure", "peak_memory_mb", "format_mb", "format_seconds", "memory_budget",
           "chunk_size_for", "BUDGET_ENV", "DEVICE_FRACTION", "HOST_FRACTION"]


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
    hwm = _read_kb("/proc/self/status", "VmHWM")
    if hwm is not None:
        return hwm / 2**20
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


# --------------------------------------------------------------------------- memory budget
#: Environment variable that sets the memory budget in GB (GiB, 2**30 bytes) on any device.
BUDGET_ENV = "IU_MEMORY_BUDGET_GB"
#: Fraction of the free GPU memory (``torch.cuda.mem_get_info``) a chunked pass may use: the rest
#: is left for what the estimate does not count (the caching allocator's fragmentation, cuBLAS
#: workspaces, the vmapped backward's temporaries).
DEVICE_FRACTION = 0.5
#: Fraction of the host memory available to this process (the least of ``MemAvailable``, a cgroup
#: limit and the process's RLIMIT_DATA / RLIMIT_AS headroom) a chunked pass may use on the CPU.
HOST_FRACTION = 0.5
_HOST_FALLBACK = 4 * 2**30  # bytes, where the available memory cannot be read


def _read_kb(path: str, key: str) -> int | None:
    """The ``key:  N kB`` line of a ``/proc`` file, in bytes (``None`` if unreadable)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) reads as None


def _available_host_bytes() -> int | None:
    """Bytes this process can still allocate: the least of what the host, its cgroup and its limits allow.

    The host's ``MemAvailable`` (``/proc/meminfo``); a cgroup v2 memory limit (a container:
    ``memory.max − memory.current``); the process's ``RLIMIT_DATA`` and ``RLIMIT_AS`` less what it
    already holds (``VmData``, ``VmSize`` of ``/proc/self/status``). ``None`` where none can be read.
    """
    room = [_read_kb("/proc/meminfo", "MemAvailable")]
    limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        room.append(limit - used)
    for which, key in ((resource.RLIMIT_DATA, "VmData"), (resource.RLIMIT_AS, "VmSize")):
        soft = resource.getrlimit(which)[0]
        held = _read_kb("/proc/self/status", key)
        if soft != resource.RLIM_INFINITY and held is not None:
            room.append(soft - held)
    known = [r for r in room if r is not None]
    return max(0, min(known)) if known else None


def memory_budget(device: Any = None) -> int:
    """Bytes a chunked pass may hold at once on ``device``.

    ``$IU_MEMORY_BUDGET_GB`` (a number of GB, e.g. ``"2"`` or ``"0.5"``) wins on any device. Else,
    on a CUDA device: :data:`DEVICE_FRACTION` of its free memory (``torch.cuda.mem_get_info``);
    on the CPU: :data:`HOST_FRACTION` of the host's available memory (4 GB where it cannot be
    read).

    Args:
        device: where the pass computes (e.g. ``obj.device`` or ``cfg.device``); ``None``: the CPU.

    Returns:
        A positive number of bytes.

    Raises:
        ValueError: for a ``$IU_MEMORY_BUDGET_GB`` that is not a positive number.
    """
    text = os.environ.get(BUDGET_ENV, "").strip()
    if text:
        try:
            gb = float(text)
        except ValueError:
            gb = float("nan")
        if not (math.isfinite(gb) and gb > 0):
            raise ValueError(f"{BUDGET_ENV}={text!r} is not a positive number of GB; set e.g. {BUDGET_ENV}=4 or unset it")
        return max(1, int(gb * 2**30))
    dev = torch.device("cpu") if device is None else torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return max(1, int(free * DEVICE_FRACTION))
    available = _available_host_bytes()
    return max(1, int((available if available is not None else _HOST_FALLBACK) * HOST_FRACTION))


def chunk_size_for(bytes_per_example: float, limit: int | None = None, *, device: Any = None,
                   budget: int | None = None, reserved: float = 0) -> int:
    """How many examples a chunked pass may hold at once: the budget over the bytes each costs.

    ``(budget − reserved) // bytes_per_example``, at least 1 (a pass cannot hold less than one
    example), and at most ``limit`` (the caller's own chunk size, so that a machine with room to
    spare computes exactly as before).

    Args:
        bytes_per_example: memory one example of the chunk costs (e.g. a per-example gradient,
            ``p`` numbers, times the copies the pass makes of it).
        limit: the largest chunk wanted; ``None`` or 0: no limit but the budget.
        device: where the pass computes (see :func:`memory_budget`).
        budget: bytes available; default :func:`memory_budget` of ``device``.
        reserved: bytes the pass holds whatever the chunk (e.g. the test gradients).

    Raises:
        ValueError: for a non-positive ``bytes_per_example`` or a negative ``limit``.
    """
    if not (math.isfinite(bytes_per_example) and bytes_per_example > 0):
        raise ValueError(f"bytes_per_example must be a positive number, got {bytes_per_example}")
    if limit is not None and (int(limit) != limit or limit < 0):
        raise ValueError(f"limit must be a non-negative integer (0 or None: no limit), got {limit!r}")
    room = (memory_budget(device) if budget is None else int(budget)) - reserved
    size = max(1, int(room // bytes_per_example))
    return min(size, int(limit)) if limit else size
