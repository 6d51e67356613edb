"""What every benchmark report carries, and how it is written.

A report is raw JSON: the machine (device name, CPU, core count), versions (python, torch, triton,
lewm_fast), the git commit, and every timing the benchmark took, written atomically under
bench/reports/ so a killed run never leaves half a report.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import subprocess
from pathlib import Path

REPORTS = Path(__file__).resolve().parent / "reports"


def git_commit() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPORTS.parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{sha}+dirty" if sha and dirty else sha
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Device and software facts for a report header."""
    import torch

    from lewm_fast.planning.allocator import opted_in

    info = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "git_commit": git_commit(),
        "cuda": torch.cuda.is_available(),
        "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_name(),
        # the CPU planner's opt-in allocator setting (lewm_fast/planning/allocator.py): it changes CPU timings
        "keep_freed_memory": opted_in(),
    }
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    try:
        import lewm_fast
        info["lewm_fast"] = lewm_fast.__version__
    except ImportError:
        info["lewm_fast"] = None
    return info


def device_tag() -> str:
    """A short file-name-safe name for the device: 'cpu' or the GPU's name."""
    import torch

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


def write_report(path: str | os.PathLike, payload: dict) -> Path:
    """Write payload as indented JSON, atomically (temp file + rename)."""
    from lewm_fast.checkpoint import atomic_write

    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2, default=str) + "\n"))
    return path
