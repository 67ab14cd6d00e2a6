"""Teachers: texts -> ``[N, 3]`` float32 class logits in the canonical order ``config.LABELS``.

Tasks (:mod:`~findistill.teachers.prompted` over an engine in :mod:`~findistill.teachers.backends`,
:mod:`~findistill.teachers.classifier`, :mod:`~findistill.teachers.ensemble`) share one interface,
:class:`~findistill.teachers.base.Teacher`; :class:`~findistill.teachers.cache.CachedTeacher` serves the same signal
from disk. The teacher fine-tune trains, so it lives in :mod:`findistill.training.teacher_finetune`; teachers never
import training.
"""

from __future__ import annotations

from findistill.teachers.base import Teacher
from findistill.teachers.classifier import ClassifierTeacher
from findistill.teachers.ensemble import EnsembleTeacher
from findistill.teachers.factory import build_teacher, tuned_teacher_config
from findistill.teachers.prompted import PromptedLMTeacher

__all__ = ["ClassifierTeacher", "EnsembleTeacher", "PromptedLMTeacher", "Teacher", "build_teacher", "tuned_teacher_config"]
