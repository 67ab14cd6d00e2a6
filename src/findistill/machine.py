"""What a result records about the machine that made it: CPU, cores, GPU, threads and library versions (one
function, used by ``findistill export`` and every benchmark)."""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "platform": platform.platform(),
    }
    for package in ("torch", "transformers", "peft", "onnxruntime"):
        try:
            info[package] = importlib.import_module(package).__version__
        except ImportError:
            info[package] = None
    return info
