"""Engines that run a prompted LM teacher; ``BACKENDS`` maps ``teacher.backend`` to one."""

from __future__ import annotations

from findistill.teachers.backends.base import LMBackend
from findistill.teachers.backends.hf import HFBackend
from findistill.teachers.backends.vllm import VLLMBackend

BACKENDS: dict[str, type[LMBackend]] = {"hf": HFBackend, "vllm": VLLMBackend}

__all__ = ["BACKENDS", "HFBackend", "LMBackend", "VLLMBackend"]
