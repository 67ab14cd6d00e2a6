"""The teacher a config describes."""

from __future__ import annotations

from typing import Sequence


from findistill.config import TeacherConfig
from findistill.errors import DataError, ModelError
from findistill.teachers.prompts import select_few_shot

from findistill.teachers.base import Teacher
from findistill.teachers.classifier import ClassifierTeacher
from findistill.teachers.ensemble import EnsembleTeacher
from findistill.teachers.prompted import PromptedLMTeacher


# --------------------------------------------------------------------------------------------- factory


def build_teacher(
    cfg: TeacherConfig,
    train_texts: Sequence[str] | None = None,
    train_labels: Sequence[int] | None = None,
    seed: int = 0,
) -> Teacher:
    """The teacher described by ``cfg``; few-shot examples (``cfg.few_shot > 0``) are drawn from train.

    ``cfg.finetune`` is not applied here (the teacher fine-tune stage saves a model that ``cfg.model`` names).
    """
    if cfg.kind == "prompted_lm":
        few_shot: list[tuple[str, int]] = []
        if cfg.few_shot > 0:
            if not train_texts or train_labels is None:
                raise DataError(f"teacher.few_shot is {cfg.few_shot} but no labelled training texts were given")
            few_shot = select_few_shot(train_texts, train_labels, cfg.few_shot, seed)
        return PromptedLMTeacher(cfg, few_shot=few_shot)
    elif cfg.kind == "classifier":
        return ClassifierTeacher(cfg)
    elif cfg.kind == "ensemble":
        members = [build_teacher(m, train_texts, train_labels, seed) for m in cfg.members]
        return EnsembleTeacher(members, name=cfg.name)
    raise ModelError(f"unknown teacher kind {cfg.kind!r}")
