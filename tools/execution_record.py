"""Record how long a chapter notebook took to execute, in which profile and on what machine.

``make notebooks`` calls this after executing each notebook in place::

    python tools/execution_record.py book/01_influence_from_scratch.ipynb --start <epoch seconds>

It stores a small record in the notebook's own metadata, under ``influence_utils.execution``,
so the record is committed together with the outputs it describes. The record names the
notebook and carries a fingerprint of its code cells and outputs, so the status page can tell a
record that still describes the stored outputs from a stale or copied one.
The book's status page (``book/status.md``, rendered by ``book/_ext/execution_status.py``)
reads these records. nbval compares outputs only, never metadata, so the record does not make
the notebook tests depend on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
from execution_status import fingerprint  # noqa: E402  (one definition, shared with the book)

KEY = "influence_utils"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def machine() -> dict:
    """The machine class: CPU cores and model, memory, and the GPU the notebook could see."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
        torch_version = torch.__version__
    except Exception:  # pragma: no cover - torch is a dependency
        torch_version = None
    mem = _memory_gib()
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "memory_gib": round(mem, 1) if mem else None,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch_version,
    }


def record(path: Path, seconds: float, profile: str) -> dict:
    """Write the execution record into the notebook at ``path`` and return it."""
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    entry = {
        "notebook": path.name,
        "fingerprint": fingerprint(nb),
        "profile": profile,
        "seconds": round(seconds, 1),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine(),
    }
    nb.setdefault("metadata", {}).setdefault(KEY, {})["execution"] = entry
    # The same layout nbformat (and so nbconvert --inplace) writes.
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--start", type=float, required=True, help="epoch seconds when execution started")
    parser.add_argument("--profile", default=os.environ.get("IU_PROFILE", "quick"))
    args = parser.parse_args(argv)
    entry = record(args.notebook, time.time() - args.start, args.profile)
    print(f"{args.notebook}: executed in {entry['seconds']:.1f} s (profile {entry['profile']})")


if __name__ == "__main__":
    main()
