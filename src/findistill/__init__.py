"""findistill: distil an LLM's financial-sentiment judgement into a small, fast classifier.

The Python API (names are imported on first use, so ``import findistill`` stays light)::

    from findistill import load_config, run, load_classifier
    config = load_config("configs/demo.yaml", {"train.epochs": 1})
    results = run(config, "runs/notebook")               # the stages of `findistill run`; the results document
    clf = load_classifier("runs/notebook/student")       # any saved or exported student
    clf.classify(["Shares of $XYZ plunge after the company cuts its outlook"])

Also: :class:`Run` (one run folder and its stages), :class:`Teacher` (texts -> ``[N, 3]`` class logits),
:func:`build_teacher`, :func:`distillation_loss` and :class:`DistillationTrainer`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "load_config": "findistill.config", "RunConfig": "findistill.config", "LABELS": "findistill.config",
    "run": "findistill.pipeline", "Run": "findistill.pipeline",
    "Teacher": "findistill.teachers", "build_teacher": "findistill.teachers",
    "distillation_loss": "findistill.training.losses", "DistillationTrainer": "findistill.training.trainer",
    "load_classifier": "findistill.deploy.runtime",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'findistill' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
