"""The teacher a config describes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
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


def tuned_teacher_config(cfg: TeacherConfig, folder: str | Path) -> TeacherConfig:
    """How a teacher fine-tuned from ``cfg`` (``teacher.finetune``) and saved in ``folder`` is read: method ``head``
    saved a sequence classifier (canonical id2label), ``verbalizer`` a causal LM read with the prompt it was tuned
    with, without demonstrations (few_shot 0, which its fingerprint records)."""
    kind = "classifier" if cfg.finetune.method == "head" else cfg.kind
    return dataclasses.replace(cfg, kind=kind, model=str(folder), revision=None, label_map={}, few_shot=0,
                               name=f"{cfg.display_name} (fine-tuned)")
