"""The run: stages with content keys (:mod:`~findistill.pipeline.stages`), the :class:`~findistill.pipeline.runner.Run`
that executes them, adoption of folders written before stage keys (:mod:`~findistill.pipeline.legacy`), the analyze
stage and the candidate tables. The top layer: nothing else in the package imports it."""

from __future__ import annotations

from findistill.pipeline.runner import Run, cache_folder, run

__all__ = ["Run", "cache_folder", "run"]
